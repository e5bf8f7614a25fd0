"""Spectral SatMAE: the group-channel ViT encoder and the progressive-upsampling decoder.

Encoder (Cong et al. 2022, "SatMAE", spectral variant), parameter names as in the published
checkpoints so ``ckpt["model"]`` loads into ``model.encoder``:

* 10 bands (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, in that order) in three groups
  ``(B02 B03 B04 B08) (B05 B06 B07 B8A) (B11 B12)``; one patch embedding per group
  (``patch_embed.<g>.proj``, patch 8);
* every token gets ``pos_embed`` (width ``D - 256``, a 2-D grid, the same for all groups)
  concatenated with ``channel_embed`` (256 wide, one per group); the CLS token gets the
  first ``pos_embed`` row and zeros;
* timm ViT blocks (``blocks.<i>``), final ``norm``.
* ``pos_embed`` is stored for the pretraining grid (96 px / 8 = 12 x 12) and interpolated
  (bicubic, timm's ``resample_abs_pos_embed``) to ``(H / 8, W / 8)`` at each forward, so any
  window that is a multiple of 8 works.

``encoder(x)`` returns ``[tokens]``: the token grid without the CLS token, shape
``(N, 3 * D, H / 8, W / 8)``, the three group tokens of each patch concatenated group-major
(2304 channels for base, 3072 for large).

Decoder (the published "double upsampling" head): 1x1 conv to 256, BatchNorm, ReLU, bilinear
x4, 1x1 conv to 1, bilinear to the input size: under 1 M parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sandwatch.models.base import SegmentationModel

SATMAE_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
SATMAE_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
SATMAE_SIZES = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}


class GroupChannelViT(nn.Module):
    """The Spectral SatMAE encoder (see the module docstring)."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, patch_size: int = 8,
                 img_size: int = 96, channel_embed: int = 256, mlp_ratio: float = 4.0,
                 channel_groups: Sequence[Sequence[int]] = SATMAE_GROUPS):
        super().__init__()
        # timm (and the torchvision it pulls in) is imported here, not at module level, so that
        # predicting with a U-Net does not pay ~190 MB of resident memory for it.
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        if embed_dim <= channel_embed:
            raise ValueError("embed_dim must be larger than channel_embed")
        self.channel_groups = tuple(tuple(g) for g in channel_groups)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = img_size // patch_size
        self.patch_embed = nn.ModuleList(
            PatchEmbed(img_size, patch_size, len(g), embed_dim, strict_img_size=False) for g in self.channel_groups)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2 + 1, embed_dim - channel_embed))
        self.channel_embed = nn.Parameter(torch.zeros(1, len(self.channel_groups), channel_embed))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth))
        self.norm = norm(embed_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.channel_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, c, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"SatMAE needs windows that are a multiple of {p} pixels, got {h}x{w}")
        gh, gw = h // p, w // p
        tokens = torch.stack([emb(x[:, list(g)]) for emb, g in zip(self.patch_embed, self.channel_groups)], dim=1)
        groups, length, dim = tokens.shape[1:]
        pos = self.pos_embed
        if (gh, gw) != (self.grid_size, self.grid_size):
            from timm.layers import resample_abs_pos_embed

            pos = resample_abs_pos_embed(pos, [gh, gw], [self.grid_size, self.grid_size], num_prefix_tokens=1)
        pos_patch = pos[:, 1:].unsqueeze(1).expand(-1, groups, -1, -1)              # (1, G, L, D - cD)
        chan = self.channel_embed.unsqueeze(2).expand(-1, -1, length, -1)            # (1, G, L, cD)
        tokens = (tokens + torch.cat([pos_patch, chan], dim=-1)).reshape(n, groups * length, dim)
        cls_pos = torch.cat([pos[:, :1], torch.zeros_like(self.channel_embed[:, :1])], dim=-1)
        t = torch.cat([(self.cls_token + cls_pos).expand(n, -1, -1), tokens], dim=1)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)[:, 1:]                                                       # drop CLS
        # (N, G*L, D) -> (N, L, G*D) -> (N, G*D, gh, gw)
        t = t.reshape(n, groups, length, dim).permute(0, 2, 1, 3).reshape(n, length, groups * dim)
        return [t.transpose(1, 2).reshape(n, groups * dim, gh, gw)]


class ProgressiveUpsamplingDecoder(nn.Module):
    """1x1 conv to ``hidden``, BatchNorm, ReLU, bilinear x4, 1x1 conv to 1, bilinear to input."""

    def __init__(self, in_channels: int, hidden: int = 256):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.norm = nn.BatchNorm2d(hidden)
        self.conv1 = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        x = F.relu(self.norm(self.conv0(features[-1])))
        x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        x = self.conv1(x)
        return F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)


class SatMAESegmenter(SegmentationModel):
    """Spectral SatMAE encoder + progressive-upsampling decoder."""

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, patch_size: int = 8,
                 img_size: int = 96, channel_embed: int = 256, decoder_channels: int = 256):
        super().__init__()
        self.encoder = GroupChannelViT(embed_dim, depth, num_heads, patch_size, img_size, channel_embed)
        self.decoder = ProgressiveUpsamplingDecoder(len(SATMAE_GROUPS) * embed_dim, decoder_channels)

    def decoder_forward(self, features, input_size):
        return self.decoder(features, input_size)
