"""The model zoo: one registry entry per architecture and one function to build any of them.

::

    from sandwatch.models import build_model, MODELS, default_band_spec
    model = build_model("unet", bands=["R", "G", "B"], width=16)       # any band set
    model = build_model("ssl4eo-resnet50", weights="B13_rn50_moco_0099.pth")  # frozen encoder
    model = build_model("satmae-large", weights="pretrain-vit-large-e199.pth")
    spec = default_band_spec("satmae-base")   # bands + mean +- 2 std normalisation

Each :class:`ModelSpec` declares the input bands (by name), the default normalisation, the
window constraint, the default options and whether the encoder is frozen by default.

Normalisations (inputs are reflectance, as :meth:`Scene.read` returns them):

* ``unet``: ``[mean - 2 std, mean + 2 std]`` of the L2A statistics of the field guide
  (``L2A_MEAN`` / ``L2A_STD``, digital numbers, scale 1e-4) for Sentinel-2 bands; true-colour
  bands (R, G, B, already reflectance-like in [0, 1]) and B10 map ``[0, 1]``. Training may
  replace these with statistics measured on its own scenes.
* ``ssl4eo-*``: reflectance clipped to [0, 1] (SSL4EO-S12: DN / 10000, clipped).
* ``satmae-*``: ``[mean - 2 std, mean + 2 std]`` of the L2A statistics (the published
  "ChannelWise" normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sandwatch.bands import L1C_BANDS, BandSpec, Normalization, match_bands, parse_band_list
from sandwatch.errors import SandwatchError
from sandwatch.models.base import SegmentationModel, count_parameters, set_trainable
from sandwatch.models.satmae import SATMAE_BANDS, SATMAE_SIZES

#: L2A band means and standard deviations in digital numbers (field guide, section 3).
L2A_MEAN: dict[str, float] = dict(zip(
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    (1370.19, 1184.38, 1120.77, 1136.26, 1263.74, 1645.40, 1846.87, 1762.60, 1972.62, 582.73, 1732.16, 1247.92)))
L2A_STD: dict[str, float] = dict(zip(
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    (633.15, 650.28, 712.13, 965.23, 948.98, 1108.07, 1258.36, 1233.15, 1364.39, 472.38, 1310.37, 1087.60)))


def channelwise_normalization(bands: Sequence[str], k: float = 2.0) -> Normalization:
    """``[mean - k std, mean + k std]`` -> [0, 1] per band (L2A statistics, in reflectance);
    bands without statistics (R, G, B, B10) map [0, 1]."""
    low, high = [], []
    for b in bands:
        if b in L2A_MEAN:
            m, s = L2A_MEAN[b] * 1e-4, L2A_STD[b] * 1e-4
            low.append(m - k * s)
            high.append(m + k * s)
        else:
            low.append(0.0)
            high.append(1.0)
    return Normalization(tuple(low), tuple(high), clip=True)


def reflectance_01(bands: Sequence[str]) -> Normalization:
    """Reflectance clipped to [0, 1] (SSL4EO-S12)."""
    return Normalization.constant(len(bands), 0.0, 1.0, clip=True)


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the zoo."""

    name: str
    description: str
    family: str                                   # "unet" | "resnet-unet" | "satmae"
    default_bands: tuple[str, ...]
    normalization: Callable[[Sequence[str]], Normalization]
    builder: Callable[..., SegmentationModel]     # builder(n_bands, **options)
    default_options: dict[str, Any] = field(default_factory=dict)
    window_multiple: int = 1                      # windows must be a multiple of this
    default_window: int = 160
    fixed_bands: bool = False                     # True: exactly default_bands, in that order
    default_mode: str = "finetune"                # training mode ("linear_probe" freezes the encoder)
    weight_layouts: tuple[str, ...] = ()          # pretrained-weight layouts it loads
    paper: str = ""

    def band_spec(self, bands: Sequence[str] | None = None) -> BandSpec:
        return default_band_spec(self.name, bands)


def _build_unet(n_bands: int, width: int = 64) -> SegmentationModel:
    from sandwatch.models.unet import UNet

    return UNet(n_bands, width=int(width))


def _resnet_builder(depth: str):
    def build(n_bands: int, decoder_channels: Sequence[int] | None = None) -> SegmentationModel:
        from sandwatch.models.resnet_unet import ResNetUNet

        return ResNetUNet(depth, n_bands, decoder_channels=list(decoder_channels) if decoder_channels else None)
    return build


def _satmae_builder(size: str):
    def build(n_bands: int, embed_dim: int | None = None, depth: int | None = None, num_heads: int | None = None,
              patch_size: int = 8, img_size: int = 96, channel_embed: int = 256,
              decoder_channels: int = 256) -> SegmentationModel:
        from sandwatch.models.satmae import SatMAESegmenter

        d = SATMAE_SIZES[size]
        return SatMAESegmenter(embed_dim=int(embed_dim or d["embed_dim"]), depth=int(depth or d["depth"]),
                               num_heads=int(num_heads or d["num_heads"]), patch_size=int(patch_size),
                               img_size=int(img_size), channel_embed=int(channel_embed),
                               decoder_channels=int(decoder_channels))
    return build


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("unet", "original U-Net (64-128-256-512-1024), trained from scratch; any band set",
                  "unet", L1C_BANDS, channelwise_normalization, _build_unet, {"width": 64},
                  paper="Ronneberger et al. 2015"),
        ModelSpec("ssl4eo-resnet18", "SSL4EO-S12 MoCo ResNet18 encoder (13 L1C bands) + U-Net decoder",
                  "resnet-unet", L1C_BANDS, reflectance_01, _resnet_builder("resnet18"), {"decoder_channels": None},
                  default_mode="linear_probe", weight_layouts=("ssl4eo-moco", "timm"), paper="Wang et al. 2023"),
        ModelSpec("ssl4eo-resnet50", "SSL4EO-S12 MoCo ResNet50 encoder (13 L1C bands) + U-Net decoder",
                  "resnet-unet", L1C_BANDS, reflectance_01, _resnet_builder("resnet50"), {"decoder_channels": None},
                  default_mode="linear_probe", weight_layouts=("ssl4eo-moco", "timm"), paper="Wang et al. 2023"),
        ModelSpec("satmae-base", "Spectral SatMAE ViT-base (patch 8, 3 band groups) + progressive-upsampling decoder",
                  "satmae", SATMAE_BANDS, channelwise_normalization, _satmae_builder("base"),
                  {"embed_dim": None, "depth": None, "num_heads": None, "channel_embed": 256,
                   "patch_size": 8, "img_size": 96, "decoder_channels": 256}, window_multiple=8, fixed_bands=True,
                  default_mode="linear_probe", weight_layouts=("satmae",), paper="Cong et al. 2022"),
        ModelSpec("satmae-large", "Spectral SatMAE ViT-large (patch 8, 3 band groups) + progressive-upsampling decoder",
                  "satmae", SATMAE_BANDS, channelwise_normalization, _satmae_builder("large"),
                  {"embed_dim": None, "depth": None, "num_heads": None, "channel_embed": 256,
                   "patch_size": 8, "img_size": 96, "decoder_channels": 256}, window_multiple=8, fixed_bands=True,
                  default_mode="linear_probe", weight_layouts=("satmae",), paper="Cong et al. 2022"),
    ]
}


def get_spec(arch: str) -> ModelSpec:
    """The registry entry, or a clear error listing the known names."""
    spec = MODELS.get(str(arch).strip().lower())
    if spec is None:
        raise SandwatchError.about("arch", f"unknown model {arch!r}", f"use one of {', '.join(MODELS)}")
    return spec


def resolve_bands(arch: str, bands: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The model's input bands: the registry default, or ``bands`` checked against the model."""
    spec = get_spec(arch)
    if bands is None:
        return spec.default_bands
    out = parse_band_list(bands, what=f"bands for {spec.name}")
    if not out:
        raise SandwatchError.about(f"bands for {spec.name}", "is empty", "name at least one band")
    if spec.fixed_bands and out != spec.default_bands:
        raise SandwatchError.about(
            f"bands for {spec.name}", f"must be exactly {','.join(spec.default_bands)} (got {','.join(out)})",
            "leave the bands out; select and order a scene's bands with sandwatch.models.prepare_input")
    return out


def default_band_spec(arch: str, bands: Sequence[str] | str | None = None) -> BandSpec:
    """Bands (default or given) with the architecture's published normalisation."""
    spec = get_spec(arch)
    names = resolve_bands(arch, bands)
    return BandSpec(names, spec.normalization(names))


def check_window(arch: str, window: int) -> int:
    """``window`` if the model accepts it, else a clear error (SatMAE: multiple of 8)."""
    spec = get_spec(arch)
    window = int(window)
    if window < 32 or window % spec.window_multiple:
        raise SandwatchError.about(
            f"window {window}", f"does not suit {spec.name}",
            f"use at least 32 pixels and a multiple of {spec.window_multiple} (the published window is 160)")
    return window


def build_model(arch: str, bands: Sequence[str] | str | None = None, *, weights: str | None = None,
                mode: str | None = None, **options: Any) -> SegmentationModel:
    """Build any model of the zoo.

    ``bands`` defaults to the registry's; ``options`` override :attr:`ModelSpec.default_options`
    (unknown options are an error). ``weights``: a local pretrained-weights file (any layout
    :func:`sandwatch.models.weights.read_weights` recognises) loaded into the encoder; the
    encoder is then frozen unless ``mode="finetune"``. ``weights`` is *not* an architecture
    option and is not recorded in :attr:`model.options` (a checkpoint carries the trained
    weights themselves). Without ``weights`` the model is fully trainable unless ``mode`` says so.

    Works under ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    spec = get_spec(arch)
    names = resolve_bands(spec.name, bands)
    unknown = sorted(set(options) - set(spec.default_options))
    if unknown:
        raise SandwatchError.about(
            f"options for {spec.name}", f"unknown option(s) {', '.join(unknown)}",
            f"use {', '.join(spec.default_options) or 'no options'}")
    opts = {**spec.default_options, **options}
    if isinstance(opts.get("decoder_channels"), tuple):
        opts["decoder_channels"] = list(opts["decoder_channels"])
    try:
        model = spec.builder(len(names), **opts)
    except (TypeError, ValueError) as err:
        raise SandwatchError.about(f"options for {spec.name}", str(err), "check the option values") from None
    model.arch = spec.name
    model.options = {k: v for k, v in opts.items()}
    model.band_spec = BandSpec(names, spec.normalization(names))
    if weights is not None:
        from sandwatch.models.weights import load_pretrained

        load_pretrained(model, weights)
        set_trainable(model, mode or "linear_probe")
    elif mode is not None:
        set_trainable(model, mode)
    return model


def parameter_table(arch: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Per model: name, bands, total parameters, trainable parameters in the default training
    mode (linear probing for the pretrained encoders, everything for the U-Net), encoder and
    decoder parameters. Built on the meta device: no memory, no time."""
    rows = []
    for name in ([get_spec(arch).name] if arch else MODELS):
        spec = MODELS[name]
        with torch.device("meta"):
            model = build_model(name, **(options if arch else {}))
        set_trainable(model, spec.default_mode)
        rows.append({
            "name": name,
            "bands": list(model.band_spec.bands),
            "window_multiple": spec.window_multiple,
            "default_mode": spec.default_mode,
            "parameters": count_parameters(model),
            "trainable": count_parameters(model, trainable_only=True),
            "encoder_parameters": count_parameters(model.encoder),
            "decoder_parameters": count_parameters(model.decoder),
            "weights": list(spec.weight_layouts),
            "description": spec.description,
        })
    return rows


def select_bands(data: np.ndarray, offered: Sequence[str], wanted: Sequence[str], *, source: object = "scene",
                 fill_missing: bool = False) -> tuple[np.ndarray, list[bool]]:
    """Bands of ``data`` (``(C, H, W)`` or ``(N, C, H, W)``, C = len(offered)) picked and
    ordered by name for ``wanted``. A missing band is a :class:`SandwatchError` naming
    ``source``; with ``fill_missing=True`` it comes back as zeros and its flag in the returned
    list is False. True-colour R/G/B and Sentinel-2 B04/B03/B02 are different kinds and never
    stand in for each other (see :func:`sandwatch.bands.match_bands`)."""
    data = np.asarray(data)
    if data.shape[-3] != len(offered):
        raise SandwatchError.about(source, f"has {data.shape[-3]} bands but {len(offered)} band names",
                                   "pass one name per band")
    idx = match_bands(offered, wanted, source=source, fill_missing=fill_missing)
    shape = list(data.shape)
    shape[-3] = len(wanted)
    out = np.zeros(shape, dtype=np.float32)
    present = []
    for j, i in enumerate(idx):
        present.append(i is not None)
        if i is not None:
            out[..., j, :, :] = data[..., i, :, :]
    return out, present


def prepare_input(data: np.ndarray, offered: Sequence[str], band_spec: BandSpec, *, source: object = "scene",
                  fill_missing: bool = False) -> np.ndarray:
    """Reflectance with the scene's bands ``offered`` -> the model's normalised input.

    Bands are selected and ordered by name (:func:`select_bands`). The documented zero-fill
    option: with ``fill_missing=True`` a band the scene lacks (e.g. B10 in L2A for the 13-band
    SSL4EO models) is set to 0 *in the normalised input*, i.e. the model sees the bottom of
    that band's range; without it a missing band is an error.
    """
    picked, present = select_bands(data, offered, band_spec.bands, source=source, fill_missing=fill_missing)
    out = band_spec.normalization(picked)
    for j, ok in enumerate(present):
        if not ok:
            out[..., j, :, :] = 0.0
    return out
