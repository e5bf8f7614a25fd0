"""MoCo continuation of the SSL4EO-S12 ResNet18/50 (contrastive, two views of a window).

* v2 (default, what SSL4EO-S12 used): query = ``fc(avgpool(encoder(view 1)))`` with
  ``fc = Linear(C, hidden), ReLU, Linear(hidden, dim)``; key = the same through a momentum
  copy of encoder and head (EMA ``moco.momentum``) on view 2; InfoNCE over the positive key and
  a queue of ``moco.queue`` earlier keys (temperature ``moco.temperature``); SGD, momentum 0.9.
* v3: a predictor MLP on the query, both views as queries (symmetric loss), negatives = the
  other keys of the batch (no queue), loss x 2T as MoCo v3; AdamW.

The file written (:meth:`MocoTask.published`) is the original SSL4EO-S12 MoCo layout that the
zoo reads (``ssl4eo-moco``)::

    {"epoch": E, "arch": "resnet18", "state_dict": {"module.encoder_q.<torchvision key>": ...,
     "module.encoder_q.fc.0.weight": ..., "module.encoder_k.<...>": ..., "module.queue": (dim, K),
     "module.queue_ptr": (1,)}, "sandwatch_pretrain": {...}}

so ``sandwatch train --set model.weights=FILE`` (frozen encoder, feature cache) takes it as it
takes the published file. Started from such a file, the head, the momentum encoder and the
queue continue too when their shapes fit (else they start afresh: head random, key encoder a
copy of the query encoder, queue random).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from sandwatch.models.resnet_unet import MOCO_KEY as _K
from sandwatch.models.resnet_unet import MOCO_QUERY as _Q
from sandwatch.models.resnet_unet import moco_file
from sandwatch.pretrain.module import PretrainTask


class ProjectedEncoder(nn.Module):
    """An encoder (list of feature maps, last = deepest) + global average pool + MLP head ``fc``."""

    def __init__(self, encoder: nn.Module, channels: int, hidden: int, dim: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x)[-1].mean(dim=(2, 3)))

    def published_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Keys as the original MoCo file names them (``encoder.`` folded into ``prefix``)."""
        out = {}
        for k, v in self.state_dict().items():
            out[prefix + (k[len("encoder."):] if k.startswith("encoder.") else k)] = v.detach().cpu().clone()
        return out


class MocoTask(PretrainTask):
    def __init__(self, encoder: nn.Module, *, version: str = "v2", dim: int = 128, hidden: int = 2048,
                 queue: int = 65536, momentum: float = 0.999, temperature: float = 0.2, **kw):
        super().__init__(**kw)
        self.version, self.momentum, self.temperature = version, float(momentum), float(temperature)
        self.optimizer_name = "sgd" if version == "v2" else "adamw"
        channels = int(encoder.channels[-1])
        self.query = ProjectedEncoder(encoder, channels, hidden, dim)
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.predictor = (nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, dim)) if version == "v3" else None)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # ---- starting from a published file ---------------------------------------------------
    def continue_from(self, obj: dict) -> list[str]:
        """Load head, momentum encoder and queue of a loaded MoCo file (``obj``) when they fit;
        returns what was continued. The query encoder itself is loaded by the zoo beforehand."""
        sd = obj.get("state_dict") if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            return []
        done = []
        head = {k[len(_Q) + 3:]: v for k, v in sd.items() if k.startswith(_Q + "fc.")}
        if _fits(self.query.fc, head):
            self.query.fc.load_state_dict(head)
            done.append("projection head")
        key = {k[len(_K):]: v for k, v in sd.items() if k.startswith(_K)}
        key = {("fc." + k[3:] if k.startswith("fc.") else "encoder." + k): v for k, v in key.items()}
        if _fits(self.key, key):
            self.key.load_state_dict(key)
            done.append("momentum encoder")
        else:
            self.key.load_state_dict(self.query.state_dict())
        q = sd.get("module.queue", sd.get("queue"))
        if isinstance(q, torch.Tensor) and q.shape == self.queue.shape:
            self.queue.copy_(F.normalize(q.float(), dim=0))
            done.append("queue")
        return done

    # ---- training ---------------------------------------------------------------------------
    @torch.no_grad()
    def _momentum_update(self):
        for pq, pk in zip(self.query.parameters(), self.key.parameters()):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor):
        if self._trainer is not None and self._trainer.world_size > 1:
            keys = self.all_gather(keys).flatten(0, 1)
        n, size = keys.shape[0], self.queue.shape[1]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % size

    def _contrast(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v3 loss of queries against in-batch keys, and top-1 accuracy."""
        q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        logits = q @ k.T / self.temperature
        labels = torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, labels) * 2 * self.temperature, (logits.argmax(1) == labels).float().mean()

    def loss(self, batch):
        x1, x2 = batch["image"], batch["image2"]
        if self.version == "v3":
            q1, q2 = self.predictor(self.query(x1)), self.predictor(self.query(x2))
            with torch.no_grad():
                self._momentum_update()
                k1, k2 = self.key(x1), self.key(x2)
            (l1, a1), (l2, a2) = self._contrast(q1, k2), self._contrast(q2, k1)
            return l1 + l2, {"train_acc": (a1 + a2) / 2}
        q = F.normalize(self.query(x1).float(), dim=1)
        with torch.no_grad():
            self._momentum_update()
            k = F.normalize(self.key(x2).float(), dim=1)
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ self.queue.clone().detach().float()
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == 0).float().mean()
        self._enqueue(k)
        return loss, {"train_acc": acc}

    # ---- the published file -----------------------------------------------------------------
    def published(self) -> dict:
        sd = {**self.query.published_state(_Q), **self.key.published_state(_K),
              "module.queue": self.queue.detach().cpu().clone(), "module.queue_ptr": self.queue_ptr.detach().cpu().clone()}
        return moco_file(self.arch, self.current_epoch, sd)


def _fits(module: nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return bool(sd) and set(sd) == set(own) and all(tuple(own[k].shape) == tuple(v.shape) for k, v in sd.items())


def build_moco(model, cfg, start: dict | None, **kw) -> MocoTask:
    """The MoCo task for a zoo model (its encoder continues), as ``cfg.moco`` says."""
    m = cfg.moco
    task = MocoTask(model.encoder, version=m.version, dim=m.dim, hidden=m.hidden, queue=m.queue,
                    momentum=m.momentum, temperature=m.temperature, **kw)
    if start is not None:
        done = task.continue_from(start)
        if not done:
            warnings.warn("the start file has no MoCo head, momentum encoder or queue that fits: they start afresh "
                          "(the encoder itself continues)", stacklevel=2)
    return task
