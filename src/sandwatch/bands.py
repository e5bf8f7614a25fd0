"""The band table: every band sandwatch knows, by sensor, and the ``BandSpec`` a model asks for.

A scene *offers* bands (by name, in its own order); a model *asks* for bands (by name, in its
order, with a normalisation). :func:`match_bands` pairs the two and fails with a clear message.

Adding a sensor is a data change: new :class:`BandInfo` rows in ``_TABLE`` (name, sensor,
units, published statistics or declared range, aliases) and one :class:`Sensor` row. Every
other module asks this table: names and aliases (:func:`canonical_band`), the canonical order
of a scene's bands (:func:`band_order`), the units :meth:`sandwatch.imagery.Scene.read`
returns, each band's default normalisation (:func:`band_range`). A name that is not in the
table is an error wherever it appears, never dropped or clipped silently.

Sensors:

* ``S2-L1C`` / ``S2-L2A``: Sentinel-2 MSI, ``B01`` ... ``B12``, ``B8A`` (L2A has no ``B10``),
  read as reflectance ``(DN - offset) / 10000``; ``SCL`` (L2A scene classification) is a class
  raster beside them, never a model input.
* ``RGB``: true-colour 8-bit images (``R``, ``G``, ``B``), read as ``value / 255``.
* ``S1``: Sentinel-1 GRD backscatter ``VV``, ``VH``, read in decibels (files in linear power
  are converted: ``10 log10``); statistics of SSL4EO-S12 (torchgeo's S1 transforms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sandwatch.errors import SandwatchError

#: What :meth:`sandwatch.imagery.Scene.read` returns per unit.
UNITS = ("reflectance", "display", "dB", "class")


@dataclass(frozen=True)
class BandInfo:
    """One row of the band table."""

    name: str
    sensor: str                        #: key of :data:`SENSORS` family ("S2", "RGB", "S1")
    common_name: str
    resolution_m: float
    centre_nm: int | None = None       #: optical centre wavelength; None for radar and classes
    units: str = "reflectance"         #: one of :data:`UNITS`
    #: published mean and standard deviation, in ``stats_scale`` units of ``units``
    mean: float | None = None
    std: float | None = None
    stats_scale: float = 1.0
    #: the range that maps to [0, 1] where no statistics are published (declared, not a fallback)
    range: tuple[float, float] = (0.0, 1.0)
    in_l1c: bool = True
    in_l2a: bool = True
    aliases: tuple[str, ...] = ()

    def __post_init__(self):
        if self.units not in UNITS:
            raise ValueError(f"band {self.name}: units {self.units!r} is not one of {UNITS}")

    @property
    def model_input(self) -> bool:
        return self.units != "class"

    def normalization_range(self, k: float = 2.0) -> tuple[float, float]:
        """``[mean - k std, mean + k std]`` where statistics are published, else :attr:`range`."""
        if self.mean is None or self.std is None:
            return self.range
        m, s = self.mean * self.stats_scale, self.std * self.stats_scale
        return m - k * s, m + k * s


# Sentinel-2: name, common name, centre wavelength (nm), resolution (m), L2A mean and standard
# deviation in digital numbers (field guide, section 3; none published for cirrus, which L2A
# lacks: reflectance 0..1), aliases.
_S2_ROWS = (
    ("B01", "coastal", 443, 60, 1370.19, 633.15, ("B1", "COASTAL")),
    ("B02", "blue", 490, 10, 1184.38, 650.28, ("B2",)),
    ("B03", "green", 560, 10, 1120.77, 712.13, ("B3",)),
    ("B04", "red", 665, 10, 1136.26, 965.23, ("B4",)),
    ("B05", "rededge1", 705, 20, 1263.74, 948.98, ("B5",)),
    ("B06", "rededge2", 740, 20, 1645.40, 1108.07, ("B6",)),
    ("B07", "rededge3", 783, 20, 1846.87, 1258.36, ("B7",)),
    ("B08", "nir", 842, 10, 1762.60, 1233.15, ("B8", "NIR")),
    ("B8A", "nir08", 865, 20, 1972.62, 1364.39, ("B08A", "NIR08")),
    ("B09", "nir09", 945, 60, 582.73, 472.38, ("B9",)),
    ("B10", "cirrus", 1375, 60, None, None, ()),
    ("B11", "swir16", 1610, 20, 1732.16, 1310.37, ("SWIR16",)),
    ("B12", "swir22", 2190, 20, 1247.92, 1087.60, ("SWIR22",)),
)
# Sentinel-1 statistics in dB: SSL4EO-S12 (torchgeo's ``_ssl4eo_s12_transforms_s1``).
_TABLE: tuple[BandInfo, ...] = (
    *(BandInfo(name, "S2", common, res, nm, mean=mean, std=std, stats_scale=1e-4, in_l2a=name != "B10",
               aliases=aliases) for name, common, nm, res, mean, std, aliases in _S2_ROWS),
    BandInfo("SCL", sensor="S2", common_name="scene classification", resolution_m=20, units="class",
             in_l1c=False, range=(0.0, 11.0)),
    BandInfo("R", sensor="RGB", common_name="red", centre_nm=665, resolution_m=10, units="display",
             aliases=("VIS-RED", "TCI_R")),
    BandInfo("G", sensor="RGB", common_name="green", centre_nm=560, resolution_m=10, units="display",
             aliases=("VIS-GREEN", "TCI_G")),
    BandInfo("B", sensor="RGB", common_name="blue", centre_nm=490, resolution_m=10, units="display",
             aliases=("VIS-BLUE", "TCI_B")),
    BandInfo("VV", sensor="S1", common_name="vv", resolution_m=10, units="dB", mean=-12.59, std=5.26,
             range=(-25.0, 5.0), in_l1c=False, in_l2a=False, aliases=("SIGMA0_VV", "VV_DB", "S1_VV")),
    BandInfo("VH", sensor="S1", common_name="vh", resolution_m=10, units="dB", mean=-20.26, std=5.91,
             range=(-32.0, -2.0), in_l1c=False, in_l2a=False, aliases=("SIGMA0_VH", "VH_DB", "S1_VH")),
)
#: Every band by canonical name, in canonical order (the order a scene's bands are listed in).
BANDS: dict[str, BandInfo] = {b.name: b for b in _TABLE}


@dataclass(frozen=True)
class Sensor:
    """A product whose bands sandwatch reads; ``bands`` in canonical order."""

    name: str
    title: str
    bands: tuple[str, ...]


SENSORS: dict[str, Sensor] = {s.name: s for s in (
    Sensor("S2-L1C", "Sentinel-2 MSI level 1C (top of atmosphere)",
           tuple(b.name for b in _TABLE if b.sensor == "S2" and b.in_l1c)),
    Sensor("S2-L2A", "Sentinel-2 MSI level 2A (bottom of atmosphere)",
           tuple(b.name for b in _TABLE if b.sensor == "S2" and b.in_l2a and b.model_input)),
    Sensor("RGB", "true-colour 8-bit image", tuple(b.name for b in _TABLE if b.sensor == "RGB")),
    Sensor("S1", "Sentinel-1 GRD backscatter (dB)", tuple(b.name for b in _TABLE if b.sensor == "S1")),
)}

#: Sentinel-2 reflectance bands by name (no SCL).
S2_BANDS: dict[str, BandInfo] = {n: b for n, b in BANDS.items() if b.sensor == "S2" and b.model_input}
#: Canonical 13-band order (L1C, SSL4EO-S12, torchgeo).
L1C_BANDS: tuple[str, ...] = SENSORS["S2-L1C"].bands
#: The 12 bands of L2A (no B10 cirrus).
L2A_BANDS: tuple[str, ...] = SENSORS["S2-L2A"].bands
#: True-colour 8-bit images (e.g. Earth Engine RGB exports).
RGB_BANDS: tuple[str, ...] = SENSORS["RGB"].bands
#: Sentinel-1 polarisations.
S1_BANDS: tuple[str, ...] = SENSORS["S1"].bands
#: Sentinel-2 band that each true-colour channel stands for.
RGB_AS_S2 = {"R": "B04", "G": "B03", "B": "B02"}

# Aliases seen in band descriptions, STAC asset keys and file names; a common name shared by two
# sensors ("red") goes to the first in the table (Sentinel-2 before the true-colour channels).
_ALIASES: dict[str, str] = {}
for _b in _TABLE:
    for _alias in (*_b.aliases, _b.common_name.upper().replace(" ", "")):
        _ALIASES.setdefault(_alias, _b.name)


def canonical_band(name: str) -> str | None:
    """The canonical name of a band name or alias (``'b8'`` -> ``'B08'``), None if unknown."""
    key = str(name).strip().upper().replace(" ", "")
    if key in BANDS:
        return key
    return _ALIASES.get(key)


def band_order(names: Sequence[str]) -> list[str]:
    """``names`` in canonical table order (a folder's files, a STAC item's assets)."""
    order = {n: i for i, n in enumerate(BANDS)}
    return sorted(names, key=lambda n: order[n])


def band_range(names: Sequence[str], k: float = 2.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per band ``low``, ``high`` of its default normalisation (:meth:`BandInfo.normalization_range`)."""
    pairs = [BANDS[n].normalization_range(k) for n in names]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def known_bands_hint() -> str:
    """One line naming the bands of every sensor (for error messages)."""
    return "; ".join(f"{s.name}: {','.join(s.bands)}" for s in SENSORS.values())


def parse_band_list(text: str | Sequence[str], what: str = "--bands") -> tuple[str, ...]:
    """Parse ``'B02,B03,B04'`` (or a list) into canonical names, failing on unknown names."""
    items = [t for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    out = []
    for item in items:
        name = canonical_band(item)
        if name is None:
            raise SandwatchError.about(what, f"unknown band name {item!r}", f"use names of the band table ({known_bands_hint()})")
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
