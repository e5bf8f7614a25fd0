"""Masked image modelling for the SSL4EO-S12 ResNets (SimMIM, Xie et al. 2022, on a ConvNet).

Contrastive pre-training teaches invariance to what differs between two views (colour, scale,
date); for sand mining those are the cues that matter, and on our benchmarks a MoCo encoder
trained for minutes gave the frozen-encoder probe *less* than a random one. Reconstruction
keeps the pixels' information and adds context:

* each window is cut into ``mim.patch`` x ``mim.patch`` squares; ``mim.mask_ratio`` of them
  (0.6, SimMIM) are replaced by a learned value per band (SimMIM's mask token, at the input of
  a ConvNet);
* the encoder (the zoo's ResNet, all five feature maps) and a light U-Net decoder
  (``mim.decoder_channels``, a 1x1 conv to the bands) reconstruct the window; the loss is the
  mean absolute error on the masked pixels only (SimMIM), in the normalised units the later
  training uses;
* BatchNorm: the masked windows are not what the encoder sees later, so the running
  statistics are updated by the unmasked windows only (one extra forward without gradient,
  the masked forward leaves them as they are); a frozen encoder is then normalised for real
  scenes.

The file written is the SSL4EO-S12 MoCo layout with the query encoder only
(``{"epoch", "arch", "state_dict": {"module.encoder_q.<torchvision key>": ...}}``): the zoo
reads it as a published SSL4EO file, so ``train`` with ``freeze_encoder`` / the feature cache
takes it unchanged. The reconstruction decoder is not kept (the segmentation decoder is new).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from sandwatch.models.resnet_unet import MOCO_QUERY, moco_file
from sandwatch.models.unet import UNetDecoder
from sandwatch.pretrain.module import PretrainTask


@contextmanager
def frozen_running_stats(module: nn.Module):
    """BatchNorm layers of ``module`` normalise by the batch but leave their running statistics
    unchanged (momentum 0) inside the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom


class MimTask(PretrainTask):
    optimizer_name = "adamw"

    def __init__(self, encoder: nn.Module, n_bands: int, *, patch: int = 16, mask_ratio: float = 0.6,
                 decoder_channels: Sequence[int] = (32, 64, 128, 256), **kw):
        super().__init__(**kw)
        self.encoder = encoder
        self.patch, self.mask_ratio = int(patch), float(mask_ratio)
        self.decoder = UNetDecoder(encoder.channels, list(decoder_channels))
        self.decoder.head = nn.Conv2d(int(decoder_channels[0]), int(n_bands), kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, int(n_bands), 1, 1))

    def mask(self, n: int, h: int, w: int, device) -> torch.Tensor:
        """(N, 1, H, W) float, 1 on the masked squares: exactly round(ratio x squares) of each window."""
        gh, gw = -(-h // self.patch), -(-w // self.patch)
        squares = gh * gw
        k = min(squares, max(1, int(round(squares * self.mask_ratio))))
        order = torch.rand(n, squares, generator=self.step_generator()).to(device).argsort(dim=1)
        m = torch.zeros(n, squares, device=device)
        m.scatter_(1, order[:, :k], 1.0)
        m = m.reshape(n, 1, gh, gw).repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)
        return m[..., :h, :w]

    def loss(self, batch):
        x = batch["image"]
        n, _, h, w = x.shape
        m = self.mask(n, h, w, x.device).to(x.dtype)
        with torch.no_grad():                      # running statistics from real (unmasked) windows
            self.encoder(x)
        with frozen_running_stats(self.encoder):
            features = self.encoder(x * (1 - m) + self.mask_token.to(x.dtype) * m)
        pred = self.decoder(features, (h, w))
        err = (pred.float() - x.float()).abs() * m.float()
        return err.sum() / (m.float().sum() * x.shape[1]).clamp_min(1.0), {}

    def published(self) -> dict:
        sd = {MOCO_QUERY + k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return moco_file(self.arch, self.current_epoch, sd)


def build_mim(model, cfg, start: dict | None, **kw) -> MimTask:
    """The SimMIM task for an SSL4EO ResNet of the zoo (its encoder continues; a start file's
    MoCo head / key encoder / queue have no use here and are left)."""
    m = cfg.mim
    return MimTask(model.encoder, len(model.band_spec.bands), patch=m.patch, mask_ratio=m.mask_ratio,
                   decoder_channels=m.decoder_channels, **kw)
