"""The AOI from the scene's own water index, when no river vectors are at hand: clouds masked,
MNDWI (NDWI without B11) above a per-scene Otsu threshold, cleaned, vectorised and buffered
like river vectors (:func:`aoi_from_water`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from sandwatch.aoi.core import EMPTY, _polygonal, buffer_on_grid
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.published import AOI_BUFFER_M
from sandwatch.vectors import clip_to_grid, mask_polygons


#: Threshold on the water index chosen per scene by Otsu's method, kept within these bounds:
#: below 0 the index says "more SWIR (or NIR) than green", not water; above 0.3 turbid rivers
#: (MNDWI 0.1-0.3) would be lost in scenes dominated by clear lakes.
THRESHOLD_FLOOR, THRESHOLD_CEILING = 0.0, 0.3


@dataclass(frozen=True)
class WaterOptions:
    """How :func:`aoi_from_water` finds water.

    * ``index``: ``"auto"`` (MNDWI when B11 exists, else NDWI), ``"mndwi"`` or ``"ndwi"``.
    * ``threshold``: ``"auto"`` (default): Otsu's threshold on the index of the scene's clear
      valid pixels, kept within ``floor``..``ceiling``; a number: that fixed threshold.
    * ``ndwi_check``: with MNDWI, a water pixel must also have NDWI > 0 (B08 darker than B03)
      when the scene has B08: dark conifer forest, wet soil and cloud shadows have a low SWIR
      (positive MNDWI) but a bright NIR; water has both low.
    * ``clouds``: ``"auto"`` (SCL on L2A, the spectral test on L1C, see
      :mod:`sandwatch.imagery.clouds`), ``"scl"``, ``"l1c"`` or ``"none"``: cloudy pixels are
      neither water nor counted for the threshold.
    * ``open_px`` / ``close_px``: iterations of a 3 x 3 (square) binary opening (removes specks
      and channels under 3 px wide) and closing (fills small gaps, e.g. bridges).
    * ``min_area_m2``: water bodies smaller than this are dropped (default 1 ha).
    * ``max_pixels``: when the grid has more pixels, the water mask is built on a decimated
      grid (``factor = ceil(sqrt(pixels / max_pixels))``; a full 10980 px tile -> 60 m cells):
      the scene is read in blocks at full resolution twice (the threshold, then the mask),
      and each cell is water when more than half of its clear valid pixels are.
    * ``block``: block size (pixels of the full grid) for reading.
    """

    index: str = "auto"
    threshold: float | str = "auto"
    floor: float = THRESHOLD_FLOOR
    ceiling: float = THRESHOLD_CEILING
    ndwi_check: bool = True
    clouds: str = "auto"
    open_px: int = 1
    close_px: int = 1
    min_area_m2: float = 10_000.0
    max_pixels: int = 2048 * 2048
    block: int = 1024


@dataclass
class WaterReport:
    """What :func:`water_mask_from_scene` found: the index, the threshold used (and how it was
    chosen), the share of the scene that was clear and valid, and the share that is water."""

    index: str = ""
    threshold: float = math.nan
    how: str = ""
    clear_fraction: float = 0.0
    water_fraction: float = 0.0
    cloud_test: str = "none"
    ndwi_check: bool = False

    def describe(self) -> str:
        check = " and NDWI > 0" if self.ndwi_check else ""
        clouds = f", clouds masked ({self.cloud_test})" if self.cloud_test != "none" else ""
        return (f"{self.index.upper()} > {self.threshold:.3f} ({self.how}){check}{clouds}, "
                f"{100 * self.clear_fraction:.1f} % of the scene clear")


def water_index(green: np.ndarray, other: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(green - other) / (green + other) as float32; NaN where invalid or the sum is not positive.

    ``other`` is B11 (MNDWI) or B08 (NDWI). Inputs are reflectance (or DN without an offset).
    """
    g = np.asarray(green, dtype=np.float32)
    o = np.asarray(other, dtype=np.float32)
    den = g + o
    ok = np.isfinite(den) & (den > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    out = np.full(g.shape, np.nan, dtype=np.float32)
    np.divide(g - o, den, out=out, where=ok)
    return out


_BINS = np.linspace(-1.0, 1.0, 801)


def index_histogram(values: np.ndarray) -> np.ndarray:
    """Counts of finite index values in 800 bins over [-1, 1] (what Otsu's method needs)."""
    v = np.asarray(values, np.float32)
    return np.histogram(v[np.isfinite(v)], bins=_BINS)[0].astype(np.int64)


def otsu_threshold(hist: np.ndarray, edges: np.ndarray = _BINS) -> float | None:
    """Otsu's threshold (maximal between-class variance) of a histogram; None when empty or
    when all values fall in one bin."""
    h = np.asarray(hist, np.float64)
    if h.sum() == 0 or np.count_nonzero(h) < 2:
        return None
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(h)
    w1 = w0[-1] - w0
    s0 = np.cumsum(h * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        m0 = s0 / w0
        m1 = (s0[-1] - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    between[~np.isfinite(between)] = -1
    # two clean modes give a plateau of equal splits: take its middle, not its first bin
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    k = int(best[len(best) // 2])
    return float(edges[k + 1])          # water is above the upper edge of the lower class


def choose_threshold(hist: np.ndarray, options: "WaterOptions") -> tuple[float, str]:
    """The threshold for this scene and how it was chosen."""
    if options.threshold != "auto":
        try:
            return float(options.threshold), "fixed"
        except (TypeError, ValueError):
            raise SandwatchError.about("--threshold", f"{options.threshold!r} is not a number",
                                       "pass auto or a number such as 0.1") from None
    t = otsu_threshold(hist)
    if t is None:
        return options.floor, "floor: too few clear pixels for Otsu"
    if t < options.floor:
        return options.floor, f"Otsu {t:.3f} raised to the floor"
    if t > options.ceiling:
        return options.ceiling, f"Otsu {t:.3f} lowered to the ceiling"
    return t, "Otsu"


def clean_water_mask(mask: np.ndarray, pixel_area_m2: float, options: WaterOptions = WaterOptions()) -> np.ndarray:
    """3 x 3 binary opening, closing, then drop (8-connected) water bodies under ``min_area_m2``."""
    m = np.asarray(mask, dtype=bool)
    st = np.ones((3, 3), dtype=bool)  # square: rectangles of >= 3 px survive the opening unchanged
    # pad by replication so water touching the grid edge is not eaten by the border
    if options.open_px > 0:
        p = options.open_px
        m = ndimage.binary_opening(np.pad(m, p, mode="edge"), structure=st, iterations=p)[p:-p, p:-p]
    if options.close_px > 0:
        p = options.close_px
        m = ndimage.binary_closing(np.pad(m, p, mode="edge"), structure=st, iterations=p)[p:-p, p:-p]
    if options.min_area_m2 > 0 and m.any():
        labels, n = ndimage.label(m, structure=st)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes * pixel_area_m2 >= options.min_area_m2
        keep[0] = False
        m = keep[labels]
    return m


def vectorize_mask(mask: np.ndarray, grid: Grid) -> BaseGeometry:
    """The True pixels of ``mask`` (on ``grid``) as one (multi)polygon in the grid's CRS."""
    m = np.asarray(mask, dtype=np.uint8)
    if not m.any():
        return EMPTY
    polys = mask_polygons(m, grid)
    if not polys:
        return EMPTY
    try:
        geom = shapely.coverage_union_all(polys)
    except Exception:  # pragma: no cover (GEOS without coverage union)
        geom = shapely.union_all(polys)
    return _polygonal(geom)


def _choose_index(bands, index: str, source) -> tuple[str, str]:
    index = index.lower()
    have = set(bands)
    if "B03" in have and index in ("auto", "mndwi") and "B11" in have:
        return "mndwi", "B11"
    if "B03" in have and index in ("auto", "ndwi") and "B08" in have:
        return "ndwi", "B08"
    if index not in ("auto", "mndwi", "ndwi"):
        raise SandwatchError.about(source, f"unknown water index {index!r}", "use auto, mndwi or ndwi")
    if have and have <= {"R", "G", "B"}:
        raise SandwatchError.about(
            source, "has only true-colour bands (R, G, B); a water index needs B03 with B11 or B08",
            "pass --rivers FILE (river lines or polygons) to build the AOI")
    need = {"mndwi": "B03 and B11", "ndwi": "B03 and B08", "auto": "B03 with B11 or B08"}[index]
    raise SandwatchError.about(source, f"lacks the bands for a water index ({need})",
                               "pass --rivers FILE or a scene with those bands")


def _decimated_grid(grid: Grid, factor: int) -> Grid:
    return Grid(grid.crs, grid.transform * Affine.scale(factor), math.ceil(grid.width / factor),
                math.ceil(grid.height / factor))


@dataclass(frozen=True)
class _Plan:
    name: str                 # mndwi | ndwi
    other: str                # B11 | B08
    ndwi: bool                # also NDWI > 0 (needs B08)
    clouds: str               # scl | l1c | none
    bands: tuple[str, ...]    # every band read per block


def _plan(bands, options: WaterOptions, source, scene=None) -> _Plan:
    from sandwatch.imagery.clouds import L1C_CLOUD_BANDS, cloud_test_for

    name, other = _choose_index(bands, options.index, source)
    ndwi = bool(options.ndwi_check and name == "mndwi" and "B08" in set(bands))
    clouds = cloud_test_for(scene, options.clouds) if scene is not None else "none"
    need = ["B03", other] + (["B08"] if ndwi else [])
    if clouds == "l1c":
        need += [b for b in (*L1C_CLOUD_BANDS, "B10") if b in set(bands)]
    return _Plan(name, other, ndwi, clouds, tuple(dict.fromkeys(need)))


def _water_inputs(data: dict[str, np.ndarray], valid, plan: _Plan, scl=None) -> tuple[np.ndarray, np.ndarray]:
    """``(index, extra)`` of a block: the index (NaN where invalid or not clear) and the
    per-pixel condition besides the threshold (NDWI > 0, or all True)."""
    from sandwatch.imagery.clouds import l1c_cloud, scl_not_clear

    clear = np.ones(np.shape(data["B03"]), bool) if valid is None else np.asarray(valid, bool).copy()
    if plan.clouds == "scl" and scl is not None:
        clear &= ~scl_not_clear(scl)
    elif plan.clouds == "l1c":
        clear &= ~l1c_cloud(data["B02"], data["B03"], data["B04"], data.get("B10"))
    idx = water_index(data["B03"], data[plan.other], clear)
    extra = (water_index(data["B03"], data["B08"]) > 0) if plan.ndwi else np.ones(idx.shape, bool)
    return idx, extra


def water_mask_from_scene(scene, options: WaterOptions = WaterOptions(), progress: bool = False,
                          report: WaterReport | None = None):
    """Water mask (bool) of a scene, the grid it lies on (the scene grid, or a decimated one)
    and the index name; ``report`` (a :class:`WaterReport`) is filled in.

    Reads the bands of the index, the NDWI check and the cloud test block by block
    (``options.block``), in reflectance: once for scenes up to ``options.max_pixels``, twice
    (threshold, then mask) for larger ones, which are never held at full resolution.
    """
    grid: Grid = scene.grid
    source = getattr(scene, "source", "scene")
    plan = _plan(scene.bands, options, source, scene)
    report = report if report is not None else WaterReport()
    report.index, report.cloud_test, report.ndwi_check = plan.name, plan.clouds, plan.ndwi
    factor = max(1, math.ceil(math.sqrt(grid.width * grid.height / options.max_pixels)))
    out_grid = _decimated_grid(grid, factor) if factor > 1 else grid
    cb = max(1, options.block // factor)  # block size in output cells
    blocks = [Window(r, c, min(cb, out_grid.height - r), min(cb, out_grid.width - c))
              for r in range(0, out_grid.height, cb) for c in range(0, out_grid.width, cb)]

    def inputs(ow: Window):
        fw = Window(ow.row * factor, ow.col * factor, ow.height * factor, ow.width * factor)
        data, valid = scene.read(window=fw, bands=list(plan.bands))
        scl = scene.read_scl(fw) if plan.clouds == "scl" else None
        return _water_inputs(dict(zip(plan.bands, data)), valid, plan, scl)

    desc = f"{plan.name.upper()} water"
    hist = np.zeros(len(_BINS) - 1, np.int64)
    if factor == 1:   # one pass: the whole index fits in memory
        idx = np.full(grid.shape, np.nan, np.float32)
        extra = np.zeros(grid.shape, bool)
        for ow in tqdm(blocks, desc=desc, unit="block", disable=not progress or len(blocks) < 4):
            idx[ow.slices()], extra[ow.slices()] = inputs(ow)
        hist = index_histogram(idx)
        t, how = choose_threshold(hist, options)
        out = (np.nan_to_num(idx, nan=-np.inf) > t) & extra
        clear = int(np.isfinite(idx).sum())
    else:             # two passes: the histogram, then the mask on the decimated grid
        for ow in tqdm(blocks, desc=f"{desc} (1/2)", unit="block", disable=not progress or len(blocks) < 4):
            hist += index_histogram(inputs(ow)[0])
        t, how = choose_threshold(hist, options)
        out = np.zeros(out_grid.shape, dtype=bool)
        clear = 0
        for ow in tqdm(blocks, desc=f"{desc} (2/2)", unit="block", disable=not progress or len(blocks) < 4):
            idx, extra = inputs(ow)
            water = (np.nan_to_num(idx, nan=-np.inf) > t) & extra
            shp = (ow.height, factor, ow.width, factor)
            nwater = water.reshape(shp).sum(axis=(1, 3))
            nclear = np.isfinite(idx).reshape(shp).sum(axis=(1, 3))
            out[ow.slices()] = (nclear > 0) & (2 * nwater > nclear)
            clear += int(nclear.sum())
    report.threshold, report.how = t, how
    report.clear_fraction = clear / (grid.width * grid.height) if grid.width * grid.height else 0.0
    report.water_fraction = float(out.mean()) if out.size else 0.0
    return out, out_grid, plan.name


def aoi_from_water(
    scene_or_arrays,
    grid: Grid | None = None,
    buffer_m: float = AOI_BUFFER_M,
    index: str = "auto",
    threshold: float | str = "auto",
    min_area_m2: float = 10_000.0,
    *,
    open_px: int = 1,
    close_px: int = 1,
    max_pixels: int = 2048 * 2048,
    block: int = 1024,
    clouds: str = "auto",
    ndwi_check: bool = True,
    progress: bool = False,
    report: WaterReport | None = None,
) -> BaseGeometry:
    """AOI from the scene's own water: MNDWI (B03, B11) when B11 exists, else NDWI (B03, B08).

    ``scene_or_arrays``: a :class:`sandwatch.imagery.Scene` (``grid`` defaults to
    ``scene.grid``), or a mapping of band name -> 2-D array on ``grid`` (reflectance, or DN
    without an offset; an optional ``"valid"`` boolean array). In order:

    1. clouds are masked (SCL on L2A, a spectral test on L1C; ``clouds``, see
       :mod:`sandwatch.imagery.clouds`): they are neither water nor part of the statistics;
    2. the threshold is chosen for this scene: Otsu's on the index of the clear pixels, kept
       within 0..0.3 (``threshold`` a number fixes it);
    3. water = index above it and, with MNDWI and B08, NDWI > 0 (``ndwi_check``): dark forest
       and shadows have a low SWIR but a bright NIR;
    4. the mask is cleaned (3 x 3 opening then closing, ``open_px`` / ``close_px``
       iterations; water bodies under ``min_area_m2`` dropped), vectorised and buffered by
       ``buffer_m`` metres (see :func:`buffer_on_grid`), then clipped to the grid.

    A scene larger than ``max_pixels`` is not held in memory at full resolution (see
    :class:`WaterOptions`). RGB-only scenes raise :class:`SandwatchError` asking for river
    vectors (a true-colour water rule is too unreliable over turbid rivers and sand).
    Returns an empty polygon when no water is found (a desert). ``report`` (a
    :class:`WaterReport`) is filled with the index, threshold and clear share.
    """
    options = WaterOptions(index=index, threshold=threshold, open_px=open_px, close_px=close_px,
                           min_area_m2=min_area_m2, max_pixels=max_pixels, block=block, clouds=clouds,
                           ndwi_check=ndwi_check)
    report = report if report is not None else WaterReport()
    if isinstance(scene_or_arrays, Mapping):
        if grid is None:
            raise ValueError("aoi_from_water: pass grid= with band arrays")
        arrays = {k: v for k, v in scene_or_arrays.items() if k != "valid"}
        plan = _plan(list(arrays), options, "band arrays")
        for k in plan.bands:
            if np.shape(arrays[k]) != grid.shape:
                raise ValueError(f"band {k} has shape {np.shape(arrays[k])}, the grid is {grid.shape}")
        idx, extra = _water_inputs(arrays, scene_or_arrays.get("valid"), plan)
        t, how = choose_threshold(index_histogram(idx), options)
        water = (np.nan_to_num(idx, nan=-np.inf) > t) & extra
        mask_grid = grid
        report.index, report.threshold, report.how, report.ndwi_check = plan.name, t, how, plan.ndwi
        report.clear_fraction = float(np.isfinite(idx).mean())
        report.water_fraction = float(water.mean())
    else:
        scene = scene_or_arrays
        grid = grid or scene.grid
        water, mask_grid, _ = water_mask_from_scene(scene, options, progress=progress, report=report)
    water = clean_water_mask(water, mask_grid.pixel_area_m2, options)
    report.water_fraction = float(water.mean()) if water.size else 0.0
    geom = vectorize_mask(water, mask_grid)
    geom = buffer_on_grid(geom, mask_grid, buffer_m, simplify_m=math.sqrt(mask_grid.pixel_area_m2))
    return _polygonal(clip_to_grid(geom, grid))


