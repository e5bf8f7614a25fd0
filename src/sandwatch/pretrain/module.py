"""What both pre-training methods share: the Lightning module's optimiser, schedule, seeding and
resume hooks, and the callback that writes the published-layout file after every epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from sandwatch.io import atomic_output
from sandwatch.train.module import lr_factor

#: key of the Lightning checkpoint that says it was written by `sandwatch pretrain`
PRETRAIN_KEY = "sandwatch_pretrain"


class PretrainTask(L.LightningModule):
    """Base of :class:`~sandwatch.pretrain.moco.MocoTask` and :class:`~sandwatch.pretrain.mae.MaeTask`.

    Subclasses define ``loss(batch) -> (loss, extra metrics)`` and ``published() -> dict`` (the
    file in the published layout)."""

    optimizer_name = "adamw"

    def __init__(self, *, arch: str, bands, window: int, lr: float, weight_decay: float, total_steps: int,
                 warmup: float = 0.0, seed: int = 0, metadata: dict | None = None):
        super().__init__()
        self.arch, self.bands, self.window = arch, list(bands), int(window)
        self.lr, self.weight_decay, self.seed = float(lr), float(weight_decay), int(seed)
        self.total_steps, self.warmup = max(1, int(total_steps)), float(warmup)
        self.metadata = dict(metadata or {})
        self.epoch_losses: list[float] = []   # this epoch's step losses (the export callback averages them)
        self.epoch_extras: dict[str, list[float]] = {}   # this epoch's other step metrics (MoCo: train_acc)

    def trainable(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(self.trainable(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(self.trainable(), lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_factor("cosine", self.total_steps, round(self.warmup * self.total_steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_epoch_start(self):
        # anything stochastic in the model draws from a seed of (seed, epoch); masks draw from
        # :meth:`step_generator`, which no other consumer of the global generator can shift
        torch.manual_seed(self.seed * 100_003 + self.current_epoch)
        self.epoch_losses, self.epoch_extras = [], {}

    def step_generator(self) -> torch.Generator:
        """A CPU generator seeded by (seed, optimiser step): the masks of a step are the same in
        a run resumed after a kill as in one without (the global generator is also drawn by the
        data loader and by Lightning, at moments that differ between the two)."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + int(self.global_step)) & 0x7FFF_FFFF_FFFF_FFFF)

    def training_step(self, batch, batch_idx):
        loss, extra = self.loss(batch)
        n = batch["image"].shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.epoch_losses.append(float(loss.detach()))
        for k, v in extra.items():
            self.log(k, v, on_step=False, on_epoch=True, batch_size=n)
            self.epoch_extras.setdefault(k, []).append(float(v.detach()))
        return loss

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def published(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain facts about the run, kept in both the Lightning and the published file."""
        return {"arch": self.arch, "bands": self.bands, "window": self.window, "epoch": int(self.current_epoch),
                "global_step": int(self.global_step), **self.metadata}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[PRETRAIN_KEY] = json.loads(json.dumps(self.describe()))


class ExportPublished(Callback):
    """After every epoch: RUN/checkpoints/pretrained.pth (the published layout, written to a
    temporary name and renamed) and RUN/metrics.json (mean loss and other step metrics per epoch)."""

    def __init__(self, run_dir: Path, throughput=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "checkpoints" / "pretrained.pth"
        self.history: list[dict] = []
        self.throughput = throughput

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        rec = {"epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step)}
        losses = pl_module.epoch_losses
        rec["loss"] = sum(losses) / len(losses) if losses else float("nan")
        rec.update({k: sum(v) / len(v) for k, v in pl_module.epoch_extras.items() if v})
        self.history.append(rec)
        obj = pl_module.published()
        obj[PRETRAIN_KEY] = json.loads(json.dumps({**pl_module.describe(), "epoch": rec["epoch"] + 1}))
        with atomic_output(self.path, verify=False) as tmp:
            torch.save(obj, tmp)
        with atomic_output(self.run_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps({"epochs": self.history,
                                       "throughput": self.throughput.history if self.throughput else []}, indent=1))
