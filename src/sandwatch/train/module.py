"""The Lightning module: loss, optimiser, validation metrics, checkpoint export, feature cache."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from sandwatch.bands import BandSpec
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.published import WINDOW_PX
from sandwatch.train.cache import FeatureCache
from sandwatch.train.loss import SegmentationLoss
from sandwatch.train.metrics import BinnedPR


class SegmentationTask(L.LightningModule):
    """Binary segmentation of mining with a sandwatch model (``encoder`` / ``decoder_forward``).

    Validation metrics come from binned score histograms (:class:`BinnedPR`, a torchmetrics
    ``Metric``) so their memory does not grow with the number of pixels: average precision,
    F1/precision/recall at 0.5, the PR curve.
    Every checkpoint Lightning writes carries the :class:`Checkpoint` dict under ``"sandwatch"``.
    """

    def __init__(self, model: torch.nn.Module, *, arch: str, band_spec: BandSpec, options: dict | None = None,
                 window: int = WINDOW_PX, lr: float = 5e-4, weight_decay: float = 0.01, pos_weight: float = 6.0,
                 dice_weight: float = 0.0, seed: int = 0, cache: FeatureCache | None = None,
                 bins: int = 1000, overlays: int = 4, plots_dir: str | None = None,
                 metadata: dict | None = None, schedule: str = "constant", total_steps: int = 1,
                 warmup: float = 0.0, focal_gamma: float = 0.0, lovasz_weight: float = 0.0,
                 calibrate: bool = False, fit_temperature: bool = True, min_calibration_positives: int = 50):
        super().__init__()
        self.model = model
        self.arch, self.band_spec, self.options = arch, band_spec, dict(options or {})
        self.window, self.lr, self.weight_decay, self.seed = int(window), float(lr), float(weight_decay), int(seed)
        self.schedule, self.total_steps, self.warmup = schedule, max(1, int(total_steps)), float(warmup)
        self.loss_fn = SegmentationLoss(pos_weight, dice_weight, focal_gamma, lovasz_weight)
        self.calibrate, self.fit_temperature = bool(calibrate), bool(fit_temperature)
        self.min_calibration_positives = int(min_calibration_positives)
        #: threshold and temperature the exported checkpoint carries (fitted on validation when
        #: ``calibrate``; the published 0.5 and 1 otherwise)
        self.calibration: dict[str, float] = {"threshold": 0.5, "temperature": 1.0}
        self.cache = cache
        self.pool_dataset = None  # set by the runner when the cache is on (re-reads evicted keys)
        self.val_pr = BinnedPR(bins)
        self.n_overlays = int(overlays)
        self.plots_dir = Path(plots_dir) if plots_dir else None
        self.metadata = dict(metadata or {})
        self.last_val: dict[str, float] = {}
        self._overlays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._t_step = None

    # ---- model ----------------------------------------------------------------------------
    def forward(self, x):
        return self.model(x)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "constant" and self.warmup <= 0:
            return optimizer
        # per optimiser step: linear warm-up, then constant or cosine decay to zero at the last
        # step of the run; the scheduler's state is in every checkpoint (exact resume)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(self.schedule, self.total_steps, round(self.warmup * self.total_steps)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self):
        # anything stochastic in the model (dropout) draws from a seed of (seed, epoch): exact resume
        torch.manual_seed(self.seed * 100_003 + self.current_epoch)
        if self.cache is not None and self.pool_dataset is not None:
            self.pool_dataset.cached_keys = self.cache.keys()

    # ---- training -------------------------------------------------------------------------
    def _cached_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder on cached encoder features: ``(logits, target, weight)`` of the batch.

        Misses carry their image, target and weight: the encoder runs on them and all three go
        into the cache. Hits carry only their key: everything comes from the cache.
        """
        keys = [tuple(int(v) for v in k) for k in batch["key"].tolist()]
        miss = batch["miss"].tolist()
        items: list[list[torch.Tensor] | None] = [None] * len(keys)
        if batch["image"] is not None:
            with torch.no_grad():
                feats = self.model.encoder(batch["image"])
            rows = [i for i, m in enumerate(miss) if m]
            for r, i in enumerate(rows):
                # what the decoder sees is what the cache stores (same rounding in every epoch)
                items[i] = self.cache.put(keys[i], [f[r] for f in feats],
                                          exact=_labels(batch["target"][r], batch["weight"][r]))
        for i, m in enumerate(miss):
            if items[i] is None:
                got = self.cache.get(keys[i])
                if got is None:  # evicted since the epoch started: read and encode again
                    s, j, d = keys[i]
                    ds = self.pool_dataset
                    raw = ds.read_item(s, ds.pool_window(s, j), d)
                    x = torch.from_numpy(raw["image"])[None].to(self.device)
                    with torch.no_grad():
                        f = self.model.encoder(x)
                    got = self.cache.put(keys[i], [t[0] for t in f], exact=_labels(
                        torch.from_numpy(raw["target"]), torch.from_numpy(raw["weight"])))
                items[i] = got
        n_feats = len(items[0]) - 2
        feats = [torch.stack([it[lv] for it in items]).to(self.device, torch.float32) for lv in range(n_feats)]
        target = torch.stack([it[-2] for it in items]).to(self.device, torch.float32)
        weight = torch.stack([it[-1] for it in items]).to(self.device, torch.float32)
        return self.model.decoder_forward(feats, tuple(target.shape[-2:])), target, weight

    def training_step(self, batch, batch_idx):
        if "miss" in batch:
            logits, target, weight = self._cached_logits(batch)
        else:
            logits, target, weight = self.model(batch["image"]), batch["target"], batch["weight"]
        loss = self.loss_fn(logits, target, weight)
        n = target.shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        now = time.perf_counter()
        if self._t_step is not None and now > self._t_step:
            self.log("win_s", n / (now - self._t_step), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self._t_step = now
        return loss

    def on_train_epoch_end(self):
        self._t_step = None
        if self.cache is not None:
            for k, v in self.cache.stats().items():
                self.log(k, float(v), on_epoch=True, sync_dist=False)

    # ---- validation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        sel = batch["eval"].bool()
        loss = self.loss_fn(logits, batch["target"], batch["weight"] * sel)
        self.log("val_loss", loss, on_epoch=True, batch_size=logits.shape[0], sync_dist=True)
        probs = torch.sigmoid(logits.float())
        p, t = probs[sel], batch["target"][sel].int()
        if p.numel():
            self.val_pr.update(p, t)
        if len(self._overlays) < self.n_overlays:
            i = int(sel.flatten(1).sum(1).argmax())
            self._overlays.append((batch["image"][i].float().cpu().numpy(), probs[i, 0].cpu().numpy(),
                                   batch["target"][i, 0].cpu().numpy()))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        res = self.val_pr.compute()
        curve = self.val_pr.curve() if res["positives"] > 0 else None
        vals = {"val_ap": res["ap"], "val_f1": res["f1"], "val_precision": res["precision"],
                "val_recall": res["recall"], "val_best_f1": res["best_f1"],
                "val_best_threshold": res["best_threshold"], "val_positives": res["positives"]}
        if self.calibrate and res["positives"] >= self.min_calibration_positives:
            thr = res["best_threshold"]
            temp = fit_temperature(self.val_pr.pos, self.val_pr.neg) if self.fit_temperature else 1.0
            self.calibration = {"threshold": apply_temperature(thr, temp), "temperature": temp}
            vals.update({"val_calibrated_threshold": self.calibration["threshold"], "val_temperature": temp,
                         "val_f1_at_threshold": self.val_pr.at(thr)["f1"]})
        # what selects the best checkpoint: validation AP when validation has mining, else the
        # step (the last checkpoint is the best one: AP 0 of mine-free scenes chooses nothing)
        vals["val_select"] = res["ap"] if res["positives"] > 0 else float(self.global_step)
        self.val_pr.reset()
        for k, v in vals.items():
            self.log(k, v, prog_bar=k in ("val_ap", "val_f1"), sync_dist=False)
        self.last_val = vals
        if self.trainer.is_global_zero:
            from sandwatch.train.tracking import log_validation_plots

            log_validation_plots(self, curve, self._overlays, vals)
        self._overlays = []

    # ---- export ---------------------------------------------------------------------------
    def export(self, extra: dict | None = None) -> Checkpoint:
        """The current weights as a :class:`Checkpoint` (what ``predict`` loads)."""
        meta = dict(self.metadata)
        meta.update({"epoch": int(self.current_epoch), "global_step": int(self.global_step)})
        meta.update({k: float(v) for k, v in self.last_val.items()})
        meta.update(extra or {})
        return Checkpoint(arch=self.arch, band_spec=self.band_spec, state_dict=self.model.state_dict(),
                          options=self.options, window=self.window, threshold=self.calibration["threshold"],
                          temperature=self.calibration["temperature"], metadata=meta)

    # ---- resume -----------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sw = checkpoint.get("sandwatch") or {}
        self.calibration = {"threshold": float(sw.get("threshold", 0.5)),
                            "temperature": float(sw.get("temperature", 1.0))}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sandwatch"] = self.export().to_dict()


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0):
    """LR multiplier per optimiser step: linear warm-up over ``warmup_steps``, then 1
    (``constant``) or a cosine from 1 to 0 at ``total_steps`` (``cosine``)."""
    total, warm = max(1, int(total_steps)), max(0, int(warmup_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule != "cosine":
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return factor


def fit_temperature(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Temperature ``T`` minimising the log loss of ``sigmoid(logit(p) / T)`` on validation
    pixels given as histograms of their probability (``pos``: mine, ``neg``: not mine, equal
    bins on [0, 1]; bin centres stand for their pixels)."""
    from scipy.optimize import minimize_scalar

    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    bins = len(pos)
    centre = (np.arange(bins) + 0.5) / bins
    z = np.log(centre) - np.log1p(-centre)
    n = max(pos.sum() + neg.sum(), 1.0)

    def nll(log_t: float) -> float:
        u = z / math.exp(log_t)
        return float((pos * np.logaddexp(0, -u) + neg * np.logaddexp(0, u)).sum() / n)

    # bounded to [1/4, 4]: beyond that the probability maps saturate (or flatten) in their
    # 8-bit encoding, and such a fit says more about an under-trained model than about calibration
    return float(math.exp(minimize_scalar(nll, bounds=(-math.log(4), math.log(4)), method="bounded").x))


def apply_temperature(p: float, temperature: float) -> float:
    """The probability ``p`` of an uncalibrated model expressed after temperature scaling."""
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return float(1.0 / (1.0 + math.exp(-(math.log(p) - math.log1p(-p)) / temperature)))


def _labels(target: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    """A pool window's target (0/1, stored as uint8) and loss weight (float32, exact) for the cache."""
    return [target.detach().to(torch.uint8), weight.detach().float()]
