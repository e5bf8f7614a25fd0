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

Registry entries (``SPECS``): ``satmae-base`` and ``satmae-large``: exactly the 10 bands above,
``[mean - 2 std, mean + 2 std]`` of the L2A statistics (the published "ChannelWise"
normalisation), windows a multiple of 8, encoder frozen by default when pretrained weights
are loaded, published learning rate 1e-3 and batch size 64. Weight layout ``satmae``: the
Spectral SatMAE checkpoint (``pretrain-vit-large-e199.pth``), ``ckpt["model"]`` with the
group-channel ViT keys (or that state dict bare); pretraining extras ``decoder_*``,
``mask_token`` (and a fine-tuning ``head``/``fc_norm``) are set aside. The file's ``args`` is an
``argparse.Namespace`` (allow-listed by :func:`sandwatch.models.weights.safe_load`). Size,
channel embedding, patch and pretraining grid follow from the tensors' shapes; a
``pos_embed`` for another grid is resampled to the model's on loading.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sandwatch.models.base import SegmentationModel
from sandwatch.models.spec import (
    FileFacts,
    ModelSpec,
    WeightLayout,
    channelwise_normalization,
    is_tensor_dict,
)

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

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens with their position and group embeddings added, ``(N, G, L, D)``, and
        the CLS token with its position, ``(N, 1, D)`` (the hook masked pre-training uses)."""
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
        tokens = tokens + torch.cat([pos_patch, chan], dim=-1)
        cls_pos = torch.cat([pos[:, :1], torch.zeros_like(self.channel_embed[:, :1])], dim=-1)
        return tokens, (self.cls_token + cls_pos).expand(n, -1, -1)

    def encode(self, t: torch.Tensor) -> torch.Tensor:
        """The transformer blocks and the final norm over a token sequence ``(N, 1 + T, D)``."""
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        tokens, cls = self.embed(x)
        groups, length, dim = tokens.shape[1:]
        t = self.encode(torch.cat([cls, tokens.reshape(n, groups * length, dim)], dim=1))[:, 1:]   # drop CLS
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


def build_satmae(size: str, n_bands: int, embed_dim: int | None = None, depth: int | None = None,
                 num_heads: int | None = None, patch_size: int = 8, img_size: int = 96, channel_embed: int = 256,
                 decoder_channels: int = 256) -> SatMAESegmenter:
    d = SATMAE_SIZES[size]
    return SatMAESegmenter(embed_dim=int(embed_dim or d["embed_dim"]), depth=int(depth or d["depth"]),
                           num_heads=int(num_heads or d["num_heads"]), patch_size=int(patch_size),
                           img_size=int(img_size), channel_embed=int(channel_embed),
                           decoder_channels=int(decoder_channels))


def satmae_facts(sd: dict[str, torch.Tensor]) -> FileFacts:
    """Size, bands and the options that differ from the standard sizes, from the tensors' shapes."""
    embeds = sorted(k for k in sd if re.fullmatch(r"patch_embed\.\d+\.proj\.weight", k))
    if not embeds:
        return FileFacts()
    n = sum(int(sd[k].shape[1]) for k in embeds)
    dim, _, patch, _ = sd[embeds[0]].shape
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    size_name = "large" if dim >= 1024 else "base"
    size = SATMAE_SIZES[size_name]
    options = {}
    if (dim, depth) != (size["embed_dim"], size["depth"]):  # a non-standard size: say so in options
        heads = next(h for h in (size["num_heads"], 16, 12, 8, 4, 2, 1) if dim % h == 0)
        options.update(embed_dim=int(dim), depth=int(depth), num_heads=int(heads))
    if "channel_embed" in sd and sd["channel_embed"].shape[-1] != 256:
        options["channel_embed"] = int(sd["channel_embed"].shape[-1])
    if patch != 8:
        options["patch_size"] = int(patch)
    if "pos_embed" in sd:  # keep the file's grid: the model interpolates at run time
        grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
        if grid * int(patch) != 96:
            options["img_size"] = grid * int(patch)
    return FileFacts(f"satmae-{size_name}", n or None, SATMAE_BANDS if n == len(SATMAE_BANDS) else None, options)


def _recognise(obj: dict) -> bool:
    if is_tensor_dict(obj.get("model")) and any(k.startswith("patch_embed.") for k in obj["model"]):
        return True
    return is_tensor_dict(obj) and any(k.startswith("patch_embed.") for k in obj) and "channel_embed" in obj


def _info(obj: dict) -> dict:
    info = {"epoch": obj["epoch"]} if "epoch" in obj else {}
    if isinstance(obj.get("args"), argparse.Namespace):
        args = vars(obj["args"])
        info["args"] = {k: args[k] for k in ("model", "input_size", "patch_size", "grouped_bands") if k in args}
    return info


def fit_pos_embed(target: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``pos_embed`` for another grid is resampled to the model's stored grid."""
    own = getattr(target, "pos_embed", None)
    pe = sd.get("pos_embed")
    if own is None or pe is None or pe.ndim != 3 or own.shape == pe.shape or own.shape[-1] != pe.shape[-1]:
        return sd
    from timm.layers import resample_abs_pos_embed

    old = int(round((pe.shape[1] - 1) ** 0.5))
    new = int(round((own.shape[1] - 1) ** 0.5))
    if old * old + 1 != pe.shape[1] or new * new + 1 != own.shape[1]:
        return sd
    out = dict(sd)
    out["pos_embed"] = resample_abs_pos_embed(pe.float(), [new, new], [old, old], num_prefix_tokens=1)
    return out


LAYOUT = WeightLayout(
    "satmae", "Spectral SatMAE checkpoint (model, args)", recognise=_recognise,
    tensors=lambda obj: obj.get("model", obj), ignore=r"^(decoder_|mask_token|head\.|fc_norm\.)",
    facts=satmae_facts, info=_info, fit=fit_pos_embed)

_OPTIONS = {"embed_dim": None, "depth": None, "num_heads": None, "channel_embed": 256, "patch_size": 8,
            "img_size": 96, "decoder_channels": 256}
SPECS = tuple(
    ModelSpec(f"satmae-{size}", f"Spectral SatMAE ViT-{size} (patch 8, 3 band groups) + progressive-upsampling decoder",
              SATMAE_BANDS, channelwise_normalization, partial(build_satmae, size), dict(_OPTIONS),
              window_multiple=8, fixed_bands=True, freeze_encoder=True, lr=1e-3, batch_size=64, layouts=(LAYOUT,),
              paper="Cong et al. 2022")
    for size in SATMAE_SIZES
)
