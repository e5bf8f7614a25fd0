"""The training loss: BCE with logits (published pos_weight 6), per-pixel weights, optional Dice.

Per-pixel weights carry the annotation confidence (High 1, Low configurable, 0 ignores) and the
nodata mask (weight 0). The BCE is the weighted mean over pixels: ``sum(w * l) / sum(w)``, so a
batch whose pixels all weigh 0 contributes 0 (and no NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                 pos_weight: float = 6.0) -> torch.Tensor:
    """Weighted mean of ``BCEWithLogits(pos_weight)`` over pixels."""
    pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per_px = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pw, reduction="none")
    if weight is None:
        return per_px.mean()
    weight = weight.to(logits.dtype)
    return (per_px * weight).sum() / weight.sum().clamp_min(1e-6)


def soft_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
              eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the mine class, pixels weighted by ``weight``."""
    p = torch.sigmoid(logits)
    t = target.to(p.dtype)
    w = torch.ones_like(p) if weight is None else weight.to(p.dtype)
    inter = (w * p * t).sum()
    return 1 - (2 * inter + eps) / ((w * p).sum() + (w * t).sum() + eps)


class SegmentationLoss(torch.nn.Module):
    """``BCE(pos_weight) + dice_weight * Dice``; call with (logits, target, weight)."""

    def __init__(self, pos_weight: float = 6.0, dice_weight: float = 0.0):
        super().__init__()
        self.pos_weight = float(pos_weight)
        self.dice_weight = float(dice_weight)

    def forward(self, logits, target, weight=None):
        loss = weighted_bce(logits, target, weight, self.pos_weight)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * soft_dice(logits, target, weight)
        return loss
