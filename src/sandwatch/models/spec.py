"""What a model family declares about itself: :class:`ModelSpec` and :class:`WeightLayout`.

A family module (``unet.py``, ``resnet_unet.py``, ``satmae.py``) holds its ``nn.Module`` code
and, beside it, ``SPECS``: a tuple of :class:`ModelSpec`, one per architecture name. A spec
says everything the rest of sandwatch needs to know about the architecture: input bands and
their normalisation, window constraint, builder and options, whether training freezes the
encoder by default, the published learning rate and batch size, and the pretrained-weight
file layouts it reads (each a :class:`WeightLayout`: how to recognise the file, which keys to
set aside, which prefix to strip, what the file implies about architecture, bands and options).
:mod:`sandwatch.models.zoo` collects them with one registration line per family::

    register(*satmae.SPECS)

This module imports nothing from the families or the zoo, so every family can import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sandwatch.bands import BANDS, BandSpec, Normalization, band_range, parse_band_list
from sandwatch.errors import SandwatchError
from sandwatch.published import WINDOW_PX

#: Published training values of the method (field guide, section 2) unless a spec says otherwise.
PUBLISHED_LR = 5e-4
PUBLISHED_BATCH = 128

def channelwise_normalization(bands: Sequence[str], k: float = 2.0) -> Normalization:
    """``[mean - k std, mean + k std]`` -> [0, 1] per band, from the published statistics in the
    band table (:mod:`sandwatch.bands`: L2A reflectance, Sentinel-1 dB); bands the table gives a
    declared range instead (R, G, B, B10) map that range."""
    low, high = band_range(bands, k)
    return Normalization(low, high, clip=True)


def native_range(bands: Sequence[str]) -> Normalization:
    """Each band's declared range to [0, 1], clipped: reflectance 0..1 for Sentinel-2 (SSL4EO-S12),
    0..1 for true colour, the table's dB range for Sentinel-1."""
    return Normalization(tuple(BANDS[b].range[0] for b in bands), tuple(BANDS[b].range[1] for b in bands), clip=True)


# ---- pretrained-weight file layouts -------------------------------------------------------------

def is_tensor_dict(d: Any) -> bool:
    """A state dict: string keys, mostly tensors."""
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) for k in d) and \
        sum(isinstance(v, torch.Tensor) for v in d.values()) >= max(1, len(d) // 2)


@dataclass(frozen=True)
class FileFacts:
    """What a weights file implies about the model that takes it."""

    arch: str | None = None                    # registry name, None when not recognised
    n_bands: int | None = None                 # input channels of the file's first layer
    bands: tuple[str, ...] | None = None       # band names, when the channel count implies them
    options: dict[str, Any] = field(default_factory=dict)   # architecture options the file implies


def _no_facts(state_dict: dict[str, torch.Tensor]) -> FileFacts:
    return FileFacts()


def _no_info(obj: dict) -> dict[str, Any]:
    return {}


def _unchanged(target: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state_dict


@dataclass(frozen=True)
class WeightLayout:
    """One published layout of pretrained encoder weights, declared by the family that reads it.

    ``recognise(obj)``: the loaded file (a dict) is in this layout; ``tensors(obj)``: the state
    dict inside it; keys matching ``ignore`` (a regex) are set aside as pretraining extras, then
    ``strip`` is removed from the start of the others; ``facts(state_dict)`` says what the
    stripped encoder keys imply (:class:`FileFacts`); ``info(obj)`` what else to show
    (epoch, arguments); ``fit(encoder, state_dict)`` adapts tensors to the model before loading
    (e.g. a positional embedding for another grid).
    """

    name: str
    description: str
    recognise: Callable[[dict], bool]
    tensors: Callable[[dict], dict[str, torch.Tensor]]
    ignore: str = ""
    strip: str = ""
    facts: Callable[[dict[str, torch.Tensor]], FileFacts] = _no_facts
    info: Callable[[dict], dict[str, Any]] = _no_info
    fit: Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _unchanged

    def encoder_state(self, obj: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The encoder state dict of a file in this layout (extras set aside, prefix stripped)
        and the keys set aside."""
        pattern = re.compile(self.ignore) if self.ignore else None
        keep, ignored = {}, []
        for k, v in self.tensors(obj).items():
            if pattern is not None and pattern.search(k):
                ignored.append(k)
            else:
                keep[k[len(self.strip):] if self.strip and k.startswith(self.strip) else k] = v
        return keep, ignored


# ---- architectures ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the zoo, as its family module declares it."""

    name: str
    description: str
    default_bands: tuple[str, ...]
    normalization: Callable[[Sequence[str]], Normalization]   # bands -> the published normalisation
    builder: Callable[..., torch.nn.Module]       # builder(n_bands, **options) -> SegmentationModel
    default_options: dict[str, Any] = field(default_factory=dict)
    window_multiple: int = 1                      # windows must be a multiple of this
    default_window: int = WINDOW_PX
    fixed_bands: bool = False                     # True: exactly default_bands, in that order
    freeze_encoder: bool = False                  # default with pretrained weights: encoder frozen (linear probing)
    lr: float = PUBLISHED_LR                      # published learning rate
    batch_size: int = PUBLISHED_BATCH             # published batch size
    layouts: tuple[WeightLayout, ...] = ()        # pretrained-weight layouts it loads
    paper: str = ""

    @property
    def weight_layouts(self) -> tuple[str, ...]:
        return tuple(layout.name for layout in self.layouts)

    def resolve_bands(self, bands: Sequence[str] | str | None = None) -> tuple[str, ...]:
        """The input bands: the default, or ``bands`` checked against this architecture."""
        if bands is None:
            return self.default_bands
        out = parse_band_list(bands, what=f"bands for {self.name}")
        if not out:
            raise SandwatchError.about(f"bands for {self.name}", "is empty", "name at least one band")
        if self.fixed_bands and out != self.default_bands:
            raise SandwatchError.about(
                f"bands for {self.name}", f"must be exactly {','.join(self.default_bands)} (got {','.join(out)})",
                "leave the bands out; select and order a scene's bands with sandwatch.models.prepare_input")
        return out

    def band_spec(self, bands: Sequence[str] | str | None = None) -> BandSpec:
        """Bands (default or given) with the published normalisation."""
        names = self.resolve_bands(bands)
        return BandSpec(names, self.normalization(names))

    def check_window(self, window: int) -> int:
        """``window`` if the architecture accepts it, else a clear error."""
        window = int(window)
        if window < 32 or window % self.window_multiple:
            raise SandwatchError.about(
                f"window {window}", f"does not suit {self.name}",
                f"use at least 32 pixels and a multiple of {self.window_multiple} (the published window is 160)")
        return window
