"""Sentinel-2 bands by name, and the ``BandSpec`` a model asks for.

A scene *offers* bands (by name, in its own order); a model *asks* for bands (by name, in its
order, with a normalisation). :func:`match_bands` pairs the two and fails with a clear message.

Names are canonical Sentinel-2 names (``B01`` ... ``B12``, ``B8A``) plus ``SCL`` for the L2A
scene classification and ``R``, ``G``, ``B`` for true-colour (uint8) images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sandwatch.errors import SandwatchError


@dataclass(frozen=True)
class BandInfo:
    name: str
    common_name: str
    centre_nm: int
    resolution_m: int
    in_l1c: bool = True
    in_l2a: bool = True


S2_BANDS: dict[str, BandInfo] = {
    b.name: b
    for b in [
        BandInfo("B01", "coastal", 443, 60),
        BandInfo("B02", "blue", 490, 10),
        BandInfo("B03", "green", 560, 10),
        BandInfo("B04", "red", 665, 10),
        BandInfo("B05", "rededge1", 705, 20),
        BandInfo("B06", "rededge2", 740, 20),
        BandInfo("B07", "rededge3", 783, 20),
        BandInfo("B08", "nir", 842, 10),
        BandInfo("B8A", "nir08", 865, 20),
        BandInfo("B09", "nir09", 945, 60),
        BandInfo("B10", "cirrus", 1375, 60, in_l2a=False),
        BandInfo("B11", "swir16", 1610, 20),
        BandInfo("B12", "swir22", 2190, 20),
    ]
}

#: Canonical 13-band order (L1C, SSL4EO-S12, torchgeo).
L1C_BANDS: tuple[str, ...] = tuple(S2_BANDS)
#: The 12 bands of L2A (no B10 cirrus).
L2A_BANDS: tuple[str, ...] = tuple(b for b in L1C_BANDS if S2_BANDS[b].in_l2a)
#: True-colour 8-bit images (e.g. Earth Engine RGB exports).
RGB_BANDS: tuple[str, ...] = ("R", "G", "B")
#: Sentinel-2 band that each true-colour channel stands for.
RGB_AS_S2 = {"R": "B04", "G": "B03", "B": "B02"}

# Aliases seen in band descriptions, STAC asset keys and file names.
_ALIASES = {
    "B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07",
    "B8": "B08", "B9": "B09", "B8A": "B8A", "B08A": "B8A",
    "RED": "R", "GREEN": "G", "BLUE": "B", "VIS-RED": "R", "VIS-GREEN": "G", "VIS-BLUE": "B",
    "TCI_R": "R", "TCI_G": "G", "TCI_B": "B",
}
_ALIASES.update({info.common_name.upper(): name for name, info in S2_BANDS.items()})
_ALIASES.update({"COASTAL": "B01", "NIR": "B08", "NIR08": "B8A", "SWIR16": "B11", "SWIR22": "B12"})


def canonical_band(name: str) -> str | None:
    """The canonical name of a band name or alias (``'b8'`` -> ``'B08'``), None if unknown."""
    key = str(name).strip().upper().replace(" ", "")
    if key in S2_BANDS or key in ("SCL", "R", "G", "B"):
        return key
    return _ALIASES.get(key)


def parse_band_list(text: str | Sequence[str], what: str = "--bands") -> tuple[str, ...]:
    """Parse ``'B02,B03,B04'`` (or a list) into canonical names, failing on unknown names."""
    items = [t for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    out = []
    for item in items:
        name = canonical_band(item)
        if name is None:
            raise SandwatchError.about(
                what, f"unknown band name {item!r}",
                "use Sentinel-2 names B01..B12, B8A (or R,G,B for true-colour images)")
        out.append(name)
    if len(set(out)) != len(out):
        raise SandwatchError.about(what, f"band names repeat: {','.join(out)}", "name each band once")
    return tuple(out)


@dataclass(frozen=True)
class Normalization:
    """Per-band linear map of reflectance ``[low, high]`` to ``[0, 1]``, optionally clipped.

    This one form covers the published normalisations:

    * SSL4EO-S12: reflectance (DN / 10000) clipped to [0, 1]: ``low=0, high=1``;
    * SatMAE / "ChannelWise": ``[mean - 2 std, mean + 2 std]`` of each band to [0, 1];
    * U-Net trained here: the same, with statistics measured on the training scenes.

    Inputs are reflectance (see :meth:`sandwatch.imagery.Scene.read`), outputs float32.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    clip: bool = True
    #: ``k`` > 0: each scene is normalised by its own ``[mean - k std, mean + k std]`` inside its
    #: AOI (:mod:`sandwatch.scenestats`); ``low``/``high`` then hold the training scenes' average,
    #: used only where a scene's own statistics cannot be measured. 0: ``low``/``high`` as they are.
    per_scene_k: float = 0.0
    #: where a scene's own statistics are measured: ``"aoi"`` (inside its river AOI) or
    #: ``"scene"`` (the whole scene, so prediction needs no AOI to normalise)
    per_scene_region: str = "aoi"

    def __post_init__(self):
        if len(self.low) != len(self.high):
            raise ValueError("Normalization low/high lengths differ")

    @property
    def per_scene(self) -> bool:
        return self.per_scene_k > 0

    @classmethod
    def constant(cls, n_bands: int, low: float = 0.0, high: float = 1.0, clip: bool = True) -> "Normalization":
        return cls((float(low),) * n_bands, (float(high),) * n_bands, clip)

    @classmethod
    def mean_std(cls, mean: Sequence[float], std: Sequence[float], k: float = 2.0, scale: float = 1.0,
                 clip: bool = True) -> "Normalization":
        """``[mean - k std, mean + k std]`` to [0, 1]; ``scale`` converts the statistics' units
        to reflectance (1e-4 for statistics given in digital numbers)."""
        low = tuple(float((m - k * s) * scale) for m, s in zip(mean, std))
        high = tuple(float((m + k * s) * scale) for m, s in zip(mean, std))
        return cls(low, high, clip)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise an array of shape (C, H, W) or (N, C, H, W) with C = number of bands."""
        x = np.asarray(x, dtype=np.float32)
        axis = -3
        if x.shape[axis] != len(self.low):
            raise ValueError(f"normalisation for {len(self.low)} bands got {x.shape[axis]}")
        shape = [1] * x.ndim
        shape[axis] = len(self.low)
        low = np.asarray(self.low, np.float32).reshape(shape)
        span = np.asarray(self.high, np.float32).reshape(shape) - low
        span = np.where(span == 0, 1.0, span).astype(np.float32)
        out = (x - low) / span
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        out = {"low": list(self.low), "high": list(self.high), "clip": self.clip}
        if self.per_scene:
            out["per_scene_k"] = float(self.per_scene_k)
            out["per_scene_region"] = self.per_scene_region
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(d["low"]), tuple(d["high"]), bool(d.get("clip", True)), float(d.get("per_scene_k", 0.0)),
                   str(d.get("per_scene_region", "aoi")))


@dataclass(frozen=True)
class BandSpec:
    """Which bands a model takes, in what order, and how they are normalised."""

    bands: tuple[str, ...]
    normalization: Normalization = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        object.__setattr__(self, "bands", tuple(self.bands))
        if self.normalization is None:
            object.__setattr__(self, "normalization", Normalization.constant(len(self.bands)))
        if len(self.normalization.low) != len(self.bands):
            raise ValueError("BandSpec: normalisation and band list differ in length")

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "normalization": self.normalization.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "BandSpec":
        return cls(tuple(d["bands"]), Normalization.from_dict(d["normalization"]))


def match_bands(offered: Sequence[str], wanted: Sequence[str], *, source: object = "scene",
                fill_missing: bool = False, what: str = "the model") -> list[int | None]:
    """Indices into ``offered`` for each band in ``wanted``, matched by name.

    True-colour channels (R, G, B: 8-bit display values) and Sentinel-2 bands (reflectance)
    are different kinds: R does not stand in for B04 nor the other way round, because their
    scaling and normalisation differ and a silent swap gives a wrong map. A missing band raises
    :class:`SandwatchError` naming ``source`` (and, for a kind mismatch, the band names to
    use), unless ``fill_missing`` is set, in which case its index is ``None`` (the caller
    fills it with zeros).
    """
    offered = list(offered)
    out: list[int | None] = []
    missing = []
    for band in wanted:
        idx = offered.index(band) if band in offered else None
        if idx is None:
            missing.append(band)
        out.append(idx)
    if missing and not fill_missing:
        rgb_file = set(offered) >= set(RGB_BANDS) and not set(offered) & set(S2_BANDS)
        if rgb_file and set(missing) & set(S2_BANDS):
            raise SandwatchError.about(
                source, f"is a true-colour (R,G,B) image but {what} asks for Sentinel-2 bands "
                f"{','.join(missing)}", "use the bands R,G,B (sandwatch train: --set model.bands=[R,G,B])")
        if set(missing) & set(RGB_BANDS) and set(offered) & set(S2_BANDS):
            raise SandwatchError.about(
                source, f"has Sentinel-2 bands ({','.join(offered)}) but {what} takes true-colour "
                f"{','.join(missing)}", "use a true-colour (R,G,B) image, or train on Sentinel-2 band names")
        raise SandwatchError.about(
            source, f"lacks band(s) {','.join(missing)} that {what} needs (it has {','.join(offered)})",
            "use a scene with those bands, a model trained on these bands (model.bands), "
            "or the explicit zero-fill option")
    return out
