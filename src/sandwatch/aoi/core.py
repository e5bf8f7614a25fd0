"""The river area of interest (AOI): everything within ``buffer_m`` metres of a river.

Three sources, in the order :func:`aoi_for_observation` tries them:

1. a ready-made AOI polygon file (``Observation.aoi``): used as is, no buffer;
2. river lines or polygons (``Observation.rivers``, e.g. OpenStreetMap): buffered by
   ``buffer_m`` in a metric CRS (the grid's own CRS when it is projected in metres, else the
   local UTM zone), see :func:`aoi_from_rivers`;
3. the scene's own water index, see :func:`sandwatch.aoi.water.aoi_from_water`.

Every AOI is a shapely geometry in the grid's CRS, clipped to the grid. :func:`rasterize_aoi`
turns it into a boolean mask with the pixel-centre rule (``all_touched=False``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.published import AOI_BUFFER_M
from sandwatch.vectors import (
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
    from sandwatch.aoi.water import aoi_from_water

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


def require_aoi(geom: BaseGeometry, source, how: str, fix: str = "pass --rivers or a larger --buffer") -> BaseGeometry:
    """``geom``, or one :class:`SandwatchError` line naming ``source`` when it is empty (``how``:
    why it came out empty; ``fix``: what to do about it)."""
    if geom is None or geom.is_empty:
        raise SandwatchError.about(source, f"the AOI is empty: {how}", fix)
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
