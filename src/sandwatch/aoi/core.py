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
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.labels.vectors import (
    adopt_grid_crs,
    clip_to_grid,
    crs_unknown,
    grid_footprint,
    is_north_up,
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
def aoi_from_rivers(rivers, grid: Grid, buffer_m: float = 1000.0) -> BaseGeometry:
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
@dataclass(frozen=True)
class WaterOptions:
    """How :func:`aoi_from_water` finds water.

    * ``index``: ``"auto"`` (MNDWI when B11 exists, else NDWI), ``"mndwi"`` or ``"ndwi"``.
    * ``threshold``: water where the index is above it (0 to 0.2 is usual).
    * ``open_px`` / ``close_px``: iterations of a 3 x 3 (square) binary opening (removes specks
      and channels under 3 px wide) and closing (fills small gaps, e.g. bridges).
    * ``min_area_m2``: water bodies smaller than this are dropped (default 1 ha).
    * ``max_pixels``: when the grid has more pixels, the water mask is built on a decimated
      grid (``factor = ceil(sqrt(pixels / max_pixels))``; a full 10980 px tile -> 60 m cells):
      the scene is read in blocks at full resolution, two bands at a time, and each cell is
      water when more than half of its valid pixels are.
    * ``block``: block size (pixels of the full grid) for reading.
    """

    index: str = "auto"
    threshold: float = 0.0
    open_px: int = 1
    close_px: int = 1
    min_area_m2: float = 10_000.0
    max_pixels: int = 2048 * 2048
    block: int = 2048


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
    polys = [shape(g) for g, v in rasterio.features.shapes(m, mask=m.astype(bool), transform=grid.transform,
                                                            connectivity=4) if v == 1]
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


def water_mask_from_scene(scene, options: WaterOptions = WaterOptions(), progress: bool = False):
    """Water mask (bool) of a scene and the grid it lies on (the scene grid, or a decimated one).

    Reads only the two bands of the index, block by block (``options.block``), in reflectance.
    """
    grid: Grid = scene.grid
    name, other = _choose_index(scene.bands, options.index, getattr(scene, "source", "scene"))
    factor = max(1, math.ceil(math.sqrt(grid.width * grid.height / options.max_pixels)))
    out_grid = _decimated_grid(grid, factor) if factor > 1 else grid
    out = np.zeros(out_grid.shape, dtype=bool)
    cb = max(1, options.block // factor)  # block size in output cells
    blocks = [Window(r, c, min(cb, out_grid.height - r), min(cb, out_grid.width - c))
              for r in range(0, out_grid.height, cb) for c in range(0, out_grid.width, cb)]
    for ow in tqdm(blocks, desc=f"{name.upper()} water", unit="block", disable=not progress or len(blocks) < 4):
        fw = Window(ow.row * factor, ow.col * factor, ow.height * factor, ow.width * factor)
        data, valid = scene.read(window=fw, bands=["B03", other])
        idx = water_index(data[0], data[1], valid)
        water = np.nan_to_num(idx, nan=-np.inf) > options.threshold
        if factor > 1:
            shp = (ow.height, factor, ow.width, factor)
            nwater = water.reshape(shp).sum(axis=(1, 3))
            nvalid = np.isfinite(idx).reshape(shp).sum(axis=(1, 3))
            out[ow.slices()] = (nvalid > 0) & (2 * nwater > nvalid)
        else:
            out[ow.slices()] = water
    return out, out_grid, name


def aoi_from_water(
    scene_or_arrays,
    grid: Grid | None = None,
    buffer_m: float = 1000.0,
    index: str = "auto",
    threshold: float = 0.0,
    min_area_m2: float = 10_000.0,
    *,
    open_px: int = 1,
    close_px: int = 1,
    max_pixels: int = 2048 * 2048,
    block: int = 2048,
    progress: bool = False,
) -> BaseGeometry:
    """AOI from the scene's own water: MNDWI (B03, B11) when B11 exists, else NDWI (B03, B08).

    ``scene_or_arrays``: a :class:`sandwatch.imagery.Scene` (``grid`` defaults to
    ``scene.grid``), or a mapping of band name -> 2-D array on ``grid`` (reflectance, or DN
    without an offset; an optional ``"valid"`` boolean array). Water is where the index is
    above ``threshold``; the mask is cleaned (3 x 3 opening then closing, ``open_px`` /
    ``close_px`` iterations; water bodies under ``min_area_m2`` dropped), vectorised and
    buffered by ``buffer_m`` metres (see :func:`buffer_on_grid`), then clipped to the grid.

    A scene larger than ``max_pixels`` is not held in memory at full resolution: it is read
    block by block, two bands at a time, and the water mask is built on a decimated grid
    (see :class:`WaterOptions`). RGB-only scenes raise :class:`SandwatchError` asking for
    river vectors (a true-colour water rule is too unreliable over turbid rivers and sand).
    Returns an empty polygon when no water is found.
    """
    options = WaterOptions(index=index, threshold=threshold, open_px=open_px, close_px=close_px,
                           min_area_m2=min_area_m2, max_pixels=max_pixels, block=block)
    if isinstance(scene_or_arrays, Mapping):
        if grid is None:
            raise ValueError("aoi_from_water: pass grid= with band arrays")
        arrays = {k: v for k, v in scene_or_arrays.items() if k != "valid"}
        _, other = _choose_index(list(arrays), options.index, "band arrays")
        for k in ("B03", other):
            if np.shape(arrays[k]) != grid.shape:
                raise ValueError(f"band {k} has shape {np.shape(arrays[k])}, the grid is {grid.shape}")
        idx = water_index(arrays["B03"], arrays[other], scene_or_arrays.get("valid"))
        water = np.nan_to_num(idx, nan=-np.inf) > options.threshold
        mask_grid = grid
    else:
        scene = scene_or_arrays
        grid = grid or scene.grid
        water, mask_grid, _ = water_mask_from_scene(scene, options, progress=progress)
    water = clean_water_mask(water, mask_grid.pixel_area_m2, options)
    geom = vectorize_mask(water, mask_grid)
    geom = buffer_on_grid(geom, mask_grid, buffer_m, simplify_m=math.sqrt(mask_grid.pixel_area_m2))
    return _polygonal(clip_to_grid(geom, grid))


# ---------------------------------------------------------------------------------------------
def aoi_for_observation(obs, scene, buffer_m: float = 1000.0, **water_options) -> BaseGeometry:
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
