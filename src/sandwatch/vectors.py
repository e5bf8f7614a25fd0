"""Vectors, one owner for every stage: reading vector files (polygons, river lines), the rule
that turns a mask into polygons, areas and WGS84, and small geometry helpers.

* **Mask to polygons** (:func:`mask_polygons`, :func:`label_regions`): pixels are one region
  when they share an edge (:data:`CONNECTIVITY` = 4). Polygons are then simple and valid, and
  pieces cut by block seams join exactly. ``predict``'s polygons, ``monitor``'s polygons and
  alert regions, the vectorised AOI and the synthetic labels all call these two functions, so
  every command counts the same mines on the same mask. Areas: :func:`area_m2` (geodesic on a
  geographic CRS).
* **Writing** (:data:`VECTOR_FORMATS`, :func:`write_vectors`): one entry per output format
  (GeoPackage in the data's CRS, GeoJSON in EPSG:4326, GeoParquet in the data's CRS), each
  written atomically; a new format is one more entry.

* GeoJSON, GeoPackage, Shapefile and anything else GDAL reads, through pyogrio.
* GeoJSON without a CRS is EPSG:4326 (RFC 7946). Other files without a CRS are an error.
* Coordinates that cannot be longitude/latitude (beyond +-180/+-90) in a file whose CRS is
  geographic (usually a GeoJSON exported from QGIS in a projected CRS without its ``crs``
  member) are kept with *no* CRS and marked (:func:`crs_unknown`); the first use on a scene
  (:func:`adopt_grid_crs`) takes the scene's CRS when they fall on it, with a warning saying
  so, and is a one-line error otherwise. Before this they became inf and vanished: an empty
  mask without a word.
* GeoJSON whose features lack ``"type": "Feature"`` (GDAL then sees no features at all; the
  public Indian sand-mining annotations are written like this) are read with the ``json``
  module and :meth:`geopandas.GeoDataFrame.from_features` instead.
* Invalid geometries are repaired with :func:`shapely.make_valid`; only the polygonal parts
  are kept when ``polygonal=True``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from sandwatch.errors import SandwatchError, warn_once
from sandwatch.grid import Grid, Window
from sandwatch.io import atomic_output

_JSON_SUFFIXES = {".geojson", ".json"}


class EmptyVectorWarning(UserWarning):
    """A vector file has no features (valid, but usually a mistake)."""


class AssumedCRSWarning(UserWarning):
    """A vector file without a usable CRS was read in the scene's CRS."""


_CRS_UNKNOWN = "sandwatch.vectors.crs_unknown"   # GeoDataFrame.attrs: the file whose coordinates lack a CRS


def _beyond_lonlat(gdf: gpd.GeoDataFrame) -> bool:
    if len(gdf) == 0:
        return False
    with np.errstate(invalid="ignore"):
        minx, miny, maxx, maxy = gdf.total_bounds
    if not np.all(np.isfinite([minx, miny, maxx, maxy])):
        return False
    return minx < -180.5 or maxx > 180.5 or miny < -90.5 or maxy > 90.5


def crs_unknown(gdf) -> str | None:
    """The file a GeoDataFrame came from when its coordinates have no known CRS (see module doc)."""
    return gdf.attrs.get(_CRS_UNKNOWN) if isinstance(gdf, gpd.GeoDataFrame) else None


def adopt_grid_crs(gdf: gpd.GeoDataFrame, grid: Grid) -> gpd.GeoDataFrame:
    """``gdf`` as it is when its CRS is known; else (coordinates without a CRS) in the grid's
    CRS when they fall on the grid, with a warning once per file, or a one-line error naming
    the file when they do not."""
    source = crs_unknown(gdf)
    if source is None:
        return gdf
    minx, miny, maxx, maxy = gdf.total_bounds
    foot = grid_footprint(grid)
    hits = len(gdf.sindex.query(foot, predicate="intersects")) if len(gdf) else 0
    crs_name = grid.crs.to_string()
    if not hits:
        raise SandwatchError.about(
            source, f"has coordinates that are not longitude/latitude (x {minx:.0f}..{maxx:.0f}, y {miny:.0f}..{maxy:.0f}) "
            f"and names no CRS, and they do not fall on the scene in its CRS ({crs_name}) either",
            "add a 'crs' member naming their CRS (e.g. EPSG:32644) or re-export the file as EPSG:4326")
    warn_once("assumed-crs", source, f"{source}: coordinates are not longitude/latitude and the file names no CRS; "
              f"they fall on the scene, so the scene's CRS {crs_name} is assumed (add a 'crs' member to say so)",
              AssumedCRSWarning, stacklevel=4)
    out = gdf.set_crs(grid.crs, allow_override=True)
    out.attrs.pop(_CRS_UNKNOWN, None)
    return out


def _read_geojson_leniently(path: Path) -> gpd.GeoDataFrame | None:
    """Parse a GeoJSON FeatureCollection with the json module (None when it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("features"), list) or not data["features"]:
        return None
    feats = []
    for i, f in enumerate(data["features"]):
        if not isinstance(f, dict) or "geometry" not in f:
            raise SandwatchError.about(path, f"feature {i} has no 'geometry' member",
                                       "fix the GeoJSON (each feature needs a geometry)")
        feats.append({"type": "Feature", "geometry": f["geometry"], "properties": f.get("properties") or {}})
    crs = "EPSG:4326"
    named = (data.get("crs") or {}).get("properties", {}).get("name") if isinstance(data.get("crs"), dict) else None
    if named:
        try:
            crs = ProjCRS.from_user_input(named)
        except Exception:
            raise SandwatchError.about(path, f"unknown CRS {named!r} in the 'crs' member",
                                       "remove it (GeoJSON is EPSG:4326) or use an EPSG code") from None
    try:
        return gpd.GeoDataFrame.from_features(feats, crs=crs)
    except Exception as err:  # malformed coordinates
        raise SandwatchError.about(path, f"has a malformed geometry ({str(err).splitlines()[0]})",
                                   "fix or re-export the file") from None


def read_vector(path: str | os.PathLike, what: str = "vector file") -> gpd.GeoDataFrame:
    """Read any GDAL vector file into a GeoDataFrame with a CRS (first layer).

    Raises :class:`SandwatchError` naming the file when it is missing, unreadable or has no CRS.
    """
    path = Path(path)
    if not path.exists():
        raise SandwatchError.about(path, f"no such {what}", "check the path")
    try:
        with warnings.catch_warnings():
            # mixed-type GeoJSON properties: pyogrio keeps them as strings, which we parse ourselves
            warnings.filterwarnings("ignore", message="Could not parse column", category=UserWarning)
            gdf = pyogrio.read_dataframe(path)
    except Exception as err:
        gdf = _read_geojson_leniently(path) if path.suffix.lower() in _JSON_SUFFIXES else None
        if gdf is None:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SandwatchError.about(path, f"cannot be read as a {what} ({first})",
                                       "check that it is a valid GeoJSON, GeoPackage or Shapefile") from None
    if len(gdf) == 0 and path.suffix.lower() in _JSON_SUFFIXES:
        lenient = _read_geojson_leniently(path)
        if lenient is not None:
            gdf = lenient
    if gdf.crs is None:
        if path.suffix.lower() in _JSON_SUFFIXES:
            gdf = gdf.set_crs("EPSG:4326")
        else:
            raise SandwatchError.about(path, "has no coordinate reference system",
                                       "add one (e.g. a .prj beside a Shapefile, or `ogr2ogr -a_srs EPSG:...`)")
    if gdf.geometry.name != "geometry":
        gdf = gdf.rename_geometry("geometry")
    if gdf.crs.is_geographic and _beyond_lonlat(gdf):
        # projected coordinates in a file read as lon/lat (GeoJSON without its crs member):
        # keep them, CRS unknown, until a scene says which CRS they fall on
        gdf = gdf.copy()
        gdf.geometry.values.crs = None
        gdf.attrs[_CRS_UNKNOWN] = str(path)
    return gdf


def polygonal_part(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The polygonal part of a geometry after repair (None when nothing polygonal is left)."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, (Polygon, MultiPolygon)):
        return None if geom.is_empty else geom
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
    if not parts:
        return None
    out = shapely.union_all(parts)
    return None if out.is_empty else out


def repair(gdf: gpd.GeoDataFrame, polygonal: bool = True) -> gpd.GeoDataFrame:
    """Repair invalid geometries (make_valid), keep polygonal parts (when asked), drop empties."""
    geoms = []
    for g in gdf.geometry.values:
        if polygonal:
            geoms.append(polygonal_part(g))
        elif g is None or g.is_empty:
            geoms.append(None)
        else:
            geoms.append(g if g.is_valid else shapely.make_valid(g))
    out = gdf.copy()
    out["geometry"] = gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
    keep = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    return out[keep]


def warn_if_empty(gdf: gpd.GeoDataFrame, source: object, what: str) -> None:
    """An empty file is a legitimate negative (no mining), said once per file per run."""
    if len(gdf) == 0:
        warn_once("empty", source, f"{source}: the {what} has no features; everything is background",
                  EmptyVectorWarning, stacklevel=4)


def grid_footprint(grid: Grid, window: Window | None = None) -> Polygon:
    """The outline of a grid (or of one window of it) as a polygon in the grid's CRS."""
    w = window or grid.full_window()
    t = grid.transform
    corners = [(w.col, w.row), (w.col_stop, w.row), (w.col_stop, w.row_stop), (w.col, w.row_stop)]
    return Polygon([t * c for c in corners])


def is_north_up(grid: Grid) -> bool:
    return grid.transform.b == 0 and grid.transform.d == 0


def clip_to_grid(geom: BaseGeometry, grid: Grid, window: Window | None = None) -> BaseGeometry:
    """``geom`` cut to the outline of the grid (or window); fast rectangle clip for north-up grids."""
    if geom is None or geom.is_empty:
        return Polygon()
    foot = grid_footprint(grid, window)
    if is_north_up(grid):
        return shapely.clip_by_rect(geom, *foot.bounds)
    return geom.intersection(foot)


def grid_of_raster(path: str | os.PathLike) -> Grid:
    """The grid of any single raster file GDAL can open (fallback for ``--like``)."""
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise SandwatchError.about(path, "has no coordinate reference system",
                                           "pass a georeferenced scene with --like")
            return Grid.from_dataset(ds)
    except rasterio.errors.RasterioIOError as err:
        raise SandwatchError.about(path, f"cannot be opened as a raster ({str(err).splitlines()[0]})",
                                   "pass a scene GeoTIFF, band folder or STAC item") from None


def grid_like(source: str | os.PathLike) -> Grid:
    """The 10 m grid of a scene: :func:`sandwatch.imagery.open_scene` first, any raster as fallback.

    The fallback (a plain GeoTIFF read with rasterio) lets ``--like`` take e.g. a mask GeoTIFF
    whose bands the imagery stage does not recognise.
    """
    try:
        from sandwatch.imagery import open_scene  # noqa: PLC0415 (imports the imagery stage lazily)
    except ImportError:
        return grid_of_raster(source)
    try:
        return open_scene(str(source)).grid
    except SandwatchError as err:
        if Path(source).is_file():
            try:
                return grid_of_raster(source)
            except SandwatchError:
                pass
        raise err from None


def metric_crs_for(grid: Grid, gdf: gpd.GeoDataFrame | None = None) -> ProjCRS:
    """A metric CRS for buffering: the grid's CRS when projected in metres, else the local UTM zone."""
    crs = ProjCRS.from_user_input(grid.crs.to_wkt())
    if crs.is_projected and crs.axis_info and all(a.unit_name in ("metre", "meter") for a in crs.axis_info[:2]):
        return crs
    foot = gpd.GeoSeries([grid_footprint(grid)], crs=crs)
    utm = foot.estimate_utm_crs()
    return utm



# ---- masks to polygons: the one rule -----------------------------------------------------------
CONNECTIVITY = 4
"""Pixels sharing an edge are one region; pixels touching only at a corner are two."""

_STRUCTURE = ndimage.generate_binary_structure(2, 1 if CONNECTIVITY == 4 else 2)


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of a boolean mask (:data:`CONNECTIVITY`): labels 1..n, 0 background."""
    labels, n = ndimage.label(np.asarray(mask, bool), structure=_STRUCTURE)
    return labels, int(n)


def mask_polygons(mask: np.ndarray, transform: Affine | Grid) -> list[Polygon]:
    """Polygons of the True pixels of ``mask``, one per region (:data:`CONNECTIVITY`), in the
    coordinates of ``transform`` (a grid's, or a pixel offset such as ``Affine.translation``)."""
    m = np.asarray(mask, bool)
    if not m.any():
        return []
    t = transform.transform if isinstance(transform, Grid) else transform
    return [shape(g) for g, v in rasterio.features.shapes(m.astype(np.uint8), mask=m, transform=t,
                                                          connectivity=CONNECTIVITY) if v == 1]


def area_m2(geom: BaseGeometry, crs) -> float:
    """Area in square metres: planar in a projected CRS, geodesic (WGS84) in a geographic one."""
    if geom is None or geom.is_empty:
        return 0.0
    crs = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if crs.is_geographic:
        from pyproj import Geod

        return float(abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]))
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(geom.area * factor**2)


def to_wgs84(geom: BaseGeometry, crs) -> BaseGeometry:
    """``geom`` from ``crs`` to longitude/latitude (EPSG:4326, x = longitude)."""
    if geom is None or geom.is_empty:
        return geom
    src = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if src.to_epsg() == 4326:
        return geom
    from pyproj import Transformer

    tr = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


# ---- writing: one entry per format ---------------------------------------------------------------
@dataclass(frozen=True)
class VectorFormat:
    """An output format: file suffix and ``write(gdf, path)``."""

    suffix: str
    write: Callable[[gpd.GeoDataFrame, Path], None]


def _write_gpkg(gdf: gpd.GeoDataFrame, path: Path) -> None:
    gdf.to_file(path, driver="GPKG", layer="mining", engine="pyogrio")


def _write_geojson(gdf: gpd.GeoDataFrame, path: Path) -> None:
    gdf.to_crs("EPSG:4326").to_file(path, driver="GeoJSON", engine="pyogrio")


def _write_geoparquet(gdf: gpd.GeoDataFrame, path: Path) -> None:
    gdf.to_parquet(path, index=False)


#: Vector outputs by key, in the order they are written.
VECTOR_FORMATS: dict[str, VectorFormat] = {
    "gpkg": VectorFormat(".gpkg", _write_gpkg),               # the data's CRS (QGIS, GDAL)
    "geojson": VectorFormat(".geojson", _write_geojson),      # EPSG:4326 (web maps)
    "parquet": VectorFormat(".parquet", _write_geoparquet),   # GeoParquet, the data's CRS (GeoPandas, DuckDB)
}


def write_feature_collection(path: str | os.PathLike, features: list[dict], *, crs84: bool = False) -> Path:
    """GeoJSON features (lon/lat, already built as dicts) as a FeatureCollection, atomically;
    ``crs84`` adds the legacy ``crs`` member naming CRS84 (some older readers want it)."""
    fc: dict = {"type": "FeatureCollection"}
    if crs84:
        fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    fc["features"] = features
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(fc) + "\n")
    return Path(path)


def write_vectors(gdf: gpd.GeoDataFrame, paths: dict[str, str | os.PathLike]) -> list[Path]:
    """Write ``gdf`` once per entry of ``paths`` (key of :data:`VECTOR_FORMATS` -> path), each
    atomically (complete or absent); the paths written, in order."""
    out = []
    for key, path in paths.items():
        fmt = VECTOR_FORMATS[key]
        with atomic_output(path) as tmp:
            fmt.write(gdf, tmp)
        out.append(Path(path))
    return out
