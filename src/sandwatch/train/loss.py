"""The training loss: BCE with logits (published pos_weight 6), per-pixel weights, and the
optional terms a recipe may add: focal modulation, soft Dice, Lovasz hinge.

Per-pixel weights carry the annotation confidence (High 1, Low configurable, 0 ignores) and the
nodata mask (weight 0). The BCE is the weighted mean over pixels: ``sum(w * l) / sum(w)``, so a
batch whose pixels all weigh 0 contributes 0 (and no NaN). Targets may be soft (Low-confidence
pixels at e.g. 0.7); Dice takes them as they are, Lovasz (a surrogate of IoU, which is defined
for hard labels) thresholds them at 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                 pos_weight: float = 6.0, focal_gamma: float = 0.0) -> torch.Tensor:
    """Weighted mean of ``BCEWithLogits(pos_weight)`` over pixels; ``focal_gamma > 0`` multiplies
    each pixel's loss by ``(1 - p_t) ** gamma`` (Lin et al. 2017), p_t the probability given to
    the pixel's target."""
    pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    target = target.to(logits.dtype)
    per_px = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    if focal_gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        per_px = per_px * (1 - p_t).clamp_min(0).pow(focal_gamma)
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


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Lovasz hinge (Berman et al. 2018) of the mine class, per image, averaged over the
    batch; pixels of weight 0 (nodata, ignored labels) are left out, targets >= 0.5 are mine."""
    losses = []
    for i in range(logits.shape[0]):
        z = logits[i].flatten().float()
        t = (target[i].flatten() >= 0.5).float()
        if weight is not None:
            keep = weight[i].flatten() > 0
            z, t = z[keep], t[keep]
        if z.numel() == 0:
            losses.append(logits.sum() * 0.0)
            continue
        errors = 1.0 - z * (2.0 * t - 1.0)
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(F.relu(errors_sorted), _lovasz_grad(t[perm])))
    return torch.stack(losses).mean()


class SegmentationLoss(torch.nn.Module):
    """``BCE(pos_weight, focal_gamma) + dice_weight * Dice + lovasz_weight * Lovasz``;
    call with (logits, target, weight)."""

    def __init__(self, pos_weight: float = 6.0, dice_weight: float = 0.0, focal_gamma: float = 0.0,
                 lovasz_weight: float = 0.0):
        super().__init__()
        self.pos_weight = float(pos_weight)
        self.dice_weight = float(dice_weight)
        self.focal_gamma = float(focal_gamma)
        self.lovasz_weight = float(lovasz_weight)

    def forward(self, logits, target, weight=None):
        loss = weighted_bce(logits, target, weight, self.pos_weight, self.focal_gamma)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * soft_dice(logits, target, weight)
        if self.lovasz_weight > 0:
            loss = loss + self.lovasz_weight * lovasz_hinge(logits, target, weight)
        return loss
