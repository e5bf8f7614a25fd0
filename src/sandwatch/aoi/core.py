"""The river area of interest (AOI): everything within ``buffer_m`` metres of a river.

Three sources, in the order :func:`aoi_for_observation` tries them:

1. a ready-made AOI polygon file (``Observation.aoi``): used as is, no buffer;
2. river lines or polygons (``Observation.rivers``, e.g. OpenStreetMap): buffered by
   ``buffer_m`` in a metric CRS (the grid's own CRS when it is projected in metres, else the
   local UTM zone), see :func:`aoi_from_rivers`;
3. the scene's own water index, see :func:`aoi_from_water`.

Every AOI is a shapely geometry in the grid's CRS, clipped to the grid. :func:`rasterize_aoi`
turns it into a boolean mask with the pixel-centre rule (``all_touched=False``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.published import AOI_BUFFER_M
from sandwatch.vectors import (
    adopt_grid_crs,
    clip_to_grid,
    crs_unknown,
    grid_footprint,
    is_north_up,
    mask_polygons,
    metric_crs_for,
    polygonal_part,
    read_vector,
    repair,
)

EMPTY = Polygon()


# ---------------------------------------------------------------------------------------------
# geometry helpers
def _as_vectors(source, what: str) -> tuple[gpd.GeoDataFrame, str]:
    if isinstance(source, gpd.GeoSeries):
        source = gpd.GeoDataFrame(geometry=source)
    if isinstance(source, gpd.GeoDataFrame):
        if source.crs is None and not crs_unknown(source):
            raise SandwatchError.about(what, "the GeoDataFrame has no CRS", "set one with .set_crs(...)")
        return source, what
    return read_vector(source, what=what), str(source)


def _union(geoms) -> BaseGeometry:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return EMPTY
    return shapely.union_all(geoms)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    out = polygonal_part(geom)
    return EMPTY if out is None else out


def buffer_on_grid(geom: BaseGeometry, grid: Grid, buffer_m: float, simplify_m: float | None = None) -> BaseGeometry:
    """Buffer a geometry given in the grid's CRS by ``buffer_m`` metres, measured in a metric CRS.

    The grid's CRS is used when it is projected in metres; otherwise (e.g. EPSG:4326 grids)
    the geometry is buffered in the local UTM zone and brought back. ``buffer_m == 0`` returns
    the polygonal part of the geometry unchanged.

    Before buffering, the geometry is simplified by ``simplify_m`` metres (default
    ``min(one pixel, buffer_m / 20)``; vectorised masks pass one pixel: their staircases
    otherwise make buffering 100x slower); the AOI edge moves by at most that much.
    """
    if geom is None or geom.is_empty:
        return EMPTY
    if buffer_m < 0:
        raise ValueError(f"buffer_m must be >= 0, got {buffer_m}")
    if buffer_m == 0:
        return _polygonal(geom)
    metric = metric_crs_for(grid)
    series = gpd.GeoSeries([geom], crs=grid.crs)
    same = series.crs == metric
    if not same:
        series = series.to_crs(metric)
    tol = _simplify_tolerance(grid, buffer_m) if simplify_m is None else simplify_m
    series = series.simplify(tol).buffer(buffer_m)
    if not same:
        series = series.to_crs(grid.crs)
    return _polygonal(series.iloc[0])


def _simplify_tolerance(grid: Grid, buffer_m: float) -> float:
    return min(math.sqrt(grid.pixel_area_m2), buffer_m / 20.0)


# ---------------------------------------------------------------------------------------------
# 1. river vectors
def aoi_from_rivers(rivers, grid: Grid, buffer_m: float = AOI_BUFFER_M) -> BaseGeometry:
    """AOI = everything within ``buffer_m`` metres of the rivers, in the grid's CRS, clipped to the grid.

    ``rivers``: a path (GeoJSON, GeoPackage, Shapefile; any CRS) or a GeoDataFrame/GeoSeries of river
    lines and/or polygons. Buffering happens in a metric CRS (see :func:`buffer_on_grid`).
    With ``buffer_m=0`` polygons are taken as they are and lines contribute nothing (no area).
    Returns an empty polygon when nothing falls on the grid (the CLI turns that into an error).
    """
    gdf, _ = _as_vectors(rivers, "river file")
    gdf = adopt_grid_crs(repair(gdf, polygonal=False), grid)   # coordinates of a file without a usable CRS
    if len(gdf) == 0:
        return EMPTY
    if buffer_m < 0:
        raise ValueError(f"buffer_m must be >= 0, got {buffer_m}")
    if buffer_m == 0:
        gdf = gdf.to_crs(grid.crs) if gdf.crs != grid.crs else gdf
        geom = _union(_polygonal(g) for g in gdf.geometry.values)
        return _polygonal(clip_to_grid(geom, grid))
    metric = metric_crs_for(grid)
    gdf = gdf.to_crs(metric) if gdf.crs != metric else gdf
    # Only what can reach the grid matters: cut the rivers to the grid outline + the buffer first.
    foot = grid_footprint(grid)
    if grid.crs != metric:
        foot = gpd.GeoSeries([shapely.segmentize(foot, max(grid.res) * 64)], crs=grid.crs).to_crs(metric).iloc[0]
    reach = foot.buffer(buffer_m * 1.01 + 4 * math.sqrt(grid.pixel_area_m2))
    hits = gdf.sindex.query(reach, predicate="intersects")
    if len(hits) == 0:
        return EMPTY
    parts = shapely.intersection(gdf.geometry.values[np.sort(hits)], reach)
    buffered = shapely.buffer(shapely.simplify(parts, _simplify_tolerance(grid, buffer_m)), buffer_m)
    geom = _union(buffered)
    if grid.crs != metric:
        geom = gpd.GeoSeries([geom], crs=metric).to_crs(grid.crs).iloc[0]
    return _polygonal(clip_to_grid(_polygonal(geom), grid))


def aoi_from_file(path, grid: Grid) -> BaseGeometry:
    """A ready-made AOI polygon file, reprojected to the grid and clipped to it (no buffer)."""
    return aoi_from_rivers(path, grid, buffer_m=0.0)


# ---------------------------------------------------------------------------------------------
# 3. water index
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


# ---------------------------------------------------------------------------------------------
def aoi_for_observation(obs, scene, buffer_m: float = AOI_BUFFER_M, **water_options) -> BaseGeometry:
    """The AOI of one manifest observation on its scene's grid.

    ``obs.aoi`` (a polygon file) is used as is (no buffer); else ``obs.rivers`` buffered by
    ``buffer_m``; else the scene's water index (:func:`aoi_from_water`, ``water_options``
    passed on). ``scene`` is a Scene (or anything with ``.grid``; a bare :class:`Grid` works
    when the observation has an AOI or rivers).
    """
    grid = scene if isinstance(scene, Grid) else scene.grid
    if getattr(obs, "aoi", None):
        return aoi_from_file(obs.aoi, grid)
    if getattr(obs, "rivers", None):
        return aoi_from_rivers(obs.rivers, grid, buffer_m=buffer_m)
    if isinstance(scene, Grid):
        raise SandwatchError.about(getattr(obs, "id", "observation"), "has neither an AOI nor rivers",
                                   "add `rivers:` to the manifest or pass the scene for a water index")
    return aoi_from_water(scene, grid, buffer_m=buffer_m, **water_options)


def rasterize_aoi(geom: BaseGeometry, grid: Grid, window: Window | None = None, *,
                  all_touched: bool = False) -> np.ndarray:
    """Boolean (h, w) mask of the window (default: whole grid): True where the pixel centre is in the AOI.

    The geometry is clipped to the window first, so small windows of a big AOI are cheap.
    """
    window = window or grid.full_window()
    out = np.zeros(window.shape, dtype=bool)
    if geom is None or geom.is_empty or window.size == 0:
        return out
    part = clip_to_grid(geom, grid, window.pad(1)) if is_north_up(grid) else geom
    part = _polygonal(part)
    if part.is_empty:
        return out
    burnt = rasterio.features.rasterize([(part, 1)], out_shape=window.shape,
                                        transform=grid.window_transform(window), fill=0,
                                        all_touched=all_touched, dtype=np.uint8)
    return burnt.astype(bool)


def require_aoi(geom: BaseGeometry, source, how: str) -> BaseGeometry:
    """``geom``, or :class:`SandwatchError` when it is empty (``how``: where the AOI came from)."""
    if geom is None or geom.is_empty:
        raise SandwatchError.about(source, f"the AOI is empty: {how}",
                                   "pass --rivers or a larger --buffer")
    return geom


def aoi_area_m2(geom: BaseGeometry, grid: Grid) -> float:
    """Area of an AOI in square metres (measured in the metric CRS of the grid)."""
    if geom is None or geom.is_empty:
        return 0.0
    metric = metric_crs_for(grid)
    s = gpd.GeoSeries([geom], crs=grid.crs)
    return float((s.to_crs(metric) if s.crs != metric else s).area.iloc[0])


def write_aoi(geom: BaseGeometry, grid: Grid, path: str | os.PathLike, *, block: int = 1024) -> Path:
    """Write an AOI: ``.geojson``/``.json`` (EPSG:4326, RFC 7946), ``.gpkg`` (grid CRS),
    or ``.tif``/``.tiff`` (uint8 0/1 on the grid, tiled, compressed). Atomic."""
    from sandwatch.io import atomic_output  # noqa: PLC0415
    from sandwatch.labels.writers import write_raster_blocks  # noqa: PLC0415

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return write_raster_blocks(path, grid, "uint8",
                                   lambda w: rasterize_aoi(geom, grid, w).astype(np.uint8),
                                   block=block, description="aoi")
    drivers = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}
    if suffix not in drivers:
        raise SandwatchError.about(path, f"unknown output format {suffix!r}",
                                   "name the output .geojson, .gpkg or .tif")
    geom = geom if isinstance(geom, (Polygon, MultiPolygon)) else _polygonal(geom)
    gdf = gpd.GeoDataFrame({"area_m2": [aoi_area_m2(geom, grid)]}, geometry=[geom], crs=grid.crs)
    if drivers[suffix] == "GeoJSON":
        gdf = gdf.to_crs("EPSG:4326")
    with atomic_output(path) as tmp:
        gdf.to_file(tmp, driver=drivers[suffix], layer=path.stem if suffix == ".gpkg" else None)
    return path
