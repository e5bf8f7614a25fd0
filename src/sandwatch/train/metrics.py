"""Validation metrics from binned score histograms: constant memory, deterministic, DDP-summable.

torchmetrics' binned PR metrics fall back to an O(pixels x thresholds) memory path under
``torch.use_deterministic_algorithms(True)`` (13 GB for one small validation batch), so the
validation uses this small torchmetrics ``Metric`` instead: two histograms of the predicted
probability (``bins`` equal bins on [0, 1]) for mine and not-mine pixels. Every number below
is exact for thresholds on the bin edges ``k / bins``; the decision threshold 0.5 is an edge.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric


class BinnedPR(Metric):
    """Precision/recall at every ``k / bins``, average precision, and P/R/F1 at a threshold."""

    full_state_update = False

    def __init__(self, bins: int = 1000, **kwargs):
        super().__init__(**kwargs)
        if bins % 2:
            raise ValueError("bins must be even (0.5 must be a bin edge)")
        self.bins = int(bins)
        self.add_state("pos", default=torch.zeros(self.bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("neg", default=torch.zeros(self.bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        p = probs.detach().flatten().float().cpu()
        t = target.detach().flatten().cpu().bool()
        idx = torch.clamp((p * self.bins).floor().long(), 0, self.bins - 1)
        # CPU bincount is deterministic (allowed in deterministic mode)
        self.pos += torch.bincount(idx[t], minlength=self.bins).to(self.pos)
        self.neg += torch.bincount(idx[~t], minlength=self.bins).to(self.neg)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, thresholds), thresholds ascending ``k / bins``; a pixel is
        called mine when its probability >= the threshold."""
        pos, neg = self.pos.cpu().numpy(), self.neg.cpu().numpy()
        tp = np.cumsum(pos[::-1])[::-1]
        fp = np.cumsum(neg[::-1])[::-1]
        total_pos = pos.sum()
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
        recall = tp / total_pos if total_pos > 0 else np.zeros_like(tp)
        return precision, recall, np.arange(self.bins) / self.bins

    def at(self, threshold: float = 0.5) -> dict[str, float]:
        k = int(round(threshold * self.bins))
        pos, neg = self.pos.cpu().numpy(), self.neg.cpu().numpy()
        tp, fp = pos[k:].sum(), neg[k:].sum()
        fn = pos[:k].sum()
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return {"precision": float(prec), "recall": float(rec), "f1": float(f1)}

    def compute(self) -> dict[str, float]:
        precision, recall, thr = self.curve()
        if self.pos.sum() == 0:
            ap = 0.0
        else:
            # sklearn's definition: sum over thresholds (descending) of (R_n - R_{n-1}) P_n
            r = np.append(recall, 0.0)
            ap = float(np.sum((r[:-1] - r[1:]) * precision))
        f1_all = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1_all))
        out = {"ap": ap, "best_f1": float(f1_all[best]), "best_threshold": float(thr[best]),
               "pixels": float(self.pos.sum() + self.neg.sum()), "positives": float(self.pos.sum())}
        out.update(self.at(0.5))
        return out
