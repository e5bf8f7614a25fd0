"""Build any model of the zoo by name, and the band and window rules around it.

::

    from sandwatch.models import build_model, MODELS, default_band_spec
    model = build_model("unet", bands=["R", "G", "B"], width=16)       # any band set
    model = build_model("ssl4eo-resnet50", weights="B13_rn50_moco_0099.pth")  # frozen encoder
    model = build_model("satmae-large", weights="pretrain-vit-large-e199.pth")
    spec = default_band_spec("satmae-base")   # bands + the published normalisation

Nothing here knows one architecture from another: each family module declares its
:class:`ModelSpec` (bands, normalisation, window constraint, options, default freezing,
published learning rate and batch size, weight layouts; see :mod:`sandwatch.models.spec`) and
:mod:`sandwatch.models.zoo` collects them (:data:`MODELS`, :func:`register`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sandwatch.bands import BandSpec, match_bands
from sandwatch.errors import SandwatchError
from sandwatch.models.base import SegmentationModel, count_parameters, set_trainable
from sandwatch.models.spec import (  # noqa: F401 - re-exported
    ModelSpec,
    WeightLayout,
    channelwise_normalization,
    native_range,
)
from sandwatch.models.weights import (
    SANDWATCH,
    LoadReport,
    WeightsFile,
    compare_state_dict,
    load_pretrained,
    read_weights,
)
from sandwatch.models.zoo import LAYOUTS, MODELS, get_spec, register, unregister  # noqa: F401 - re-exported


def resolve_bands(arch: str, bands: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The model's input bands: the registry default, or ``bands`` checked against the model."""
    return get_spec(arch).resolve_bands(bands)


def default_band_spec(arch: str, bands: Sequence[str] | str | None = None) -> BandSpec:
    """Bands (default or given) with the architecture's published normalisation."""
    return get_spec(arch).band_spec(bands)


def check_window(arch: str, window: int) -> int:
    """``window`` if the model accepts it, else a clear error (SatMAE: multiple of 8)."""
    return get_spec(arch).check_window(window)


def build_model(arch: str, bands: Sequence[str] | str | None = None, *,
                weights: str | os.PathLike | WeightsFile | None = None,
                freeze_encoder: bool | None = None, **options: Any) -> SegmentationModel:
    """Build any model of the zoo.

    ``bands`` defaults to the registry's; ``options`` override :attr:`ModelSpec.default_options`
    (unknown options are an error). ``weights``: a local pretrained-weights file (any layout
    :func:`sandwatch.models.weights.read_weights` recognises), or one already read, loaded into
    the encoder.
    ``weights`` is *not* an architecture option and is not recorded in :attr:`model.options`
    (a checkpoint carries the trained weights themselves). ``freeze_encoder``: True freezes the
    encoder (linear probing), False trains everything; None: the spec's
    :attr:`~ModelSpec.freeze_encoder` when ``weights`` are loaded, else everything trains.

    Works under ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    spec = get_spec(arch)
    names = spec.resolve_bands(bands)
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
        load_pretrained(model, weights)
        if freeze_encoder is None:
            freeze_encoder = spec.freeze_encoder
    if freeze_encoder is not None:
        set_trainable(model, freeze_encoder)
    return model


def parameter_table(arch: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Per model: name, bands, total parameters, trainable parameters in the default training
    (encoder frozen for the pretrained encoders, everything for the U-Net), encoder and
    decoder parameters, published learning rate and batch size. Built on the meta device: no
    memory, no time."""
    rows = []
    for name in ([get_spec(arch).name] if arch else list(MODELS)):
        spec = MODELS[name]
        with torch.device("meta"):
            model = build_model(name, freeze_encoder=spec.freeze_encoder, **(options if arch else {}))
        rows.append({
            "name": name,
            "bands": list(model.band_spec.bands),
            "window_multiple": spec.window_multiple,
            "freeze_encoder": spec.freeze_encoder,
            "lr": spec.lr,
            "batch_size": spec.batch_size,
            "parameters": count_parameters(model),
            "trainable": count_parameters(model, trainable_only=True),
            "encoder_parameters": count_parameters(model.encoder),
            "decoder_parameters": count_parameters(model.decoder),
            "weights": list(spec.weight_layouts),
            "description": spec.description,
        })
    return rows


@dataclass
class Inspection:
    weights: WeightsFile
    arch: str
    bands: tuple[str, ...]
    report: LoadReport

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"path": str(self.weights.path), "layout": self.weights.layout, "arch": self.arch,
                "detected_arch": self.weights.arch, "n_bands": self.weights.n_bands, "bands": list(self.bands),
                "options": self.weights.options, "info": {k: str(v) for k, v in self.weights.info.items()},
                "ok": r.ok, "loaded": r.loaded, "missing": r.missing, "unexpected": r.unexpected,
                "mismatched": r.mismatched, "ignored": r.ignored}


def inspect_weights(path: str | os.PathLike, arch: str | None = None, bands=None) -> Inspection:
    """Recognise a weights file, build the matching model (on the meta device, so even
    ViT-large costs nothing) and load the file into it. Never raises for a key mismatch:
    the returned report says what would not load (``report.ok``)."""
    wf = read_weights(path)
    name = get_spec(arch).name if arch else wf.arch
    if name is None:
        raise SandwatchError.about(wf.path, f"is a {wf.layout} file of an architecture sandwatch does not know",
                                   "pass --arch NAME to try it against a model of the zoo")
    spec = get_spec(name)
    if bands is None:
        bands = wf.bands if (wf.bands and not spec.fixed_bands) else None
    options = {k: v for k, v in wf.options.items() if k in spec.default_options} if wf.arch == name else {}
    with torch.device("meta"):
        model = build_model(name, bands=bands, **options)
    report = load_pretrained(model, wf, strict=False, assign=True) if (wf.layout == SANDWATCH or wf.layout in spec.weight_layouts) \
        else compare_state_dict(model.encoder, wf.state_dict, wf.ignored)
    return Inspection(wf, name, tuple(model.band_spec.bands), report)


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
