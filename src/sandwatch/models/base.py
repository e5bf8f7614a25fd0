"""What every sandwatch segmentation model has in common.

A model maps normalised float input ``(N, C, H, W)`` to logits ``(N, 1, H, W)`` at the input
size. It is split in two halves so that training can freeze and cache the encoder:

* ``model.encoder(x) -> list[Tensor]``: the encoder features (what they are depends on the
  architecture and is documented on each class: the U-Net skips, the ResNet skips, the ViT
  token grid);
* ``model.decoder_forward(features, input_size) -> Tensor``: logits ``(N, 1, *input_size)``
  from those features; ``model.decoder`` holds all decoder parameters.

``forward(x) == decoder_forward(encoder(x), x.shape[-2:])``.

Freezing (:func:`set_trainable`): with ``frozen=True`` (linear probing) the encoder's parameters
get ``requires_grad=False`` and the encoder stays in eval mode even when ``model.train()`` is
called, so batch-norm running statistics do not move either: a frozen encoder comes out of
training bit-identical. ``frozen=False`` (fine-tuning) trains everything. The same boolean is
``build_model(..., freeze_encoder=)``, :attr:`ModelSpec.freeze_encoder` (the default when
pretrained weights are loaded) and the training config's ``model.freeze_encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sandwatch.errors import SandwatchError


class SegmentationModel(nn.Module):
    """Base class: ``encoder`` + ``decoder`` with a frozen-encoder switch."""

    #: set by :func:`sandwatch.models.build_model`
    arch: str = ""
    options: dict[str, Any]
    band_spec: Any = None

    def __init__(self):
        super().__init__()
        self.encoder_frozen = False
        self.options = {}

    # -- the two halves -------------------------------------------------------------------
    def decoder_forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_forward(self.encoder(x), tuple(x.shape[-2:]))

    # -- freezing -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


def set_trainable(model: SegmentationModel, frozen: bool) -> SegmentationModel:
    """Freeze the encoder (``frozen=True``: linear probing, only the decoder trains) or train
    everything (``frozen=False``: fine-tuning). Returns the model for chaining."""
    if not isinstance(frozen, bool):
        raise SandwatchError.about(
            "frozen", f"is {frozen!r}, not True or False",
            "pass True to freeze the encoder (the former mode 'linear_probe') or False to train everything "
            "(the former 'finetune')")
    model.encoder_frozen = frozen
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    for p in model.decoder.parameters():
        p.requires_grad_(True)
    model.train(model.training)  # re-apply eval() to a frozen encoder
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (works on models built on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
