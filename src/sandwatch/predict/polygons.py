"""Mining polygons from a written binary mask, block by block.

The mask is read in bands of ``band_rows`` full-width rows (a 1024-row band of a 10980 px
wide tile is 11 MB of uint8); :func:`sandwatch.vectors.mask_polygons` (the one mask-to-polygon
rule) turns each band into polygons in *pixel* coordinates (integer vertices), so pieces of one patch cut by a band seam join
exactly with :func:`shapely.unary_union`. Only the pieces touching a seam are kept aside for
that union; the rest are final at once. Each polygon's statistics come from a read of its own
bounding window of the probability raster, so memory holds the polygons, never the raster.

Attributes: ``id``, ``scene``, ``date`` (ISO, or empty), ``pixels``, ``area_m2``
(pixels x pixel area in a projected CRS; geodesic area on WGS84 for a geographic CRS),
``mean_prob``, ``max_prob``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine

from sandwatch.grid import Grid, Window
from sandwatch.predict.writer import decode_probability
from sandwatch.vectors import area_m2, mask_polygons, write_vectors

COLUMNS = ["id", "scene", "date", "pixels", "area_m2", "mean_prob", "max_prob"]


def _pixel_polygons(mask_path: str | os.PathLike, band_rows: int) -> tuple[list, Grid]:
    """Polygons of mask == 1 in pixel coordinates of the whole grid, merged across bands."""
    final, open_ = [], []
    with rasterio.open(mask_path) as ds:
        grid = Grid.from_dataset(ds)
        H, W = grid.shape
        for r0 in range(0, H, band_rows):
            h = min(band_rows, H - r0)
            m = ds.read(1, window=Window(r0, 0, h, W).to_rasterio()) == 1
            if not m.any():
                continue
            for poly in mask_polygons(m, Affine.translation(0, r0)):
                _, miny, _, maxy = poly.bounds
                if (r0 > 0 and miny <= r0) or (r0 + h < H and maxy >= r0 + h):
                    open_.append(poly)
                else:
                    final.append(poly)
    if open_:
        merged = shapely.unary_union(open_)
        final.extend(shapely.get_parts(merged).tolist())
    return final, grid


def polygonize(mask_path: str | os.PathLike, prob_path: str | os.PathLike, *, scene: str = "",
               date: dt.date | None = None, band_rows: int = 1024):
    """Mining polygons (a GeoDataFrame in the mask's CRS) with their statistics."""
    import geopandas as gpd

    polys, grid = _pixel_polygons(mask_path, band_rows)
    polys.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    t = grid.transform
    rows = []
    geoms = []
    with rasterio.open(mask_path) as mds, rasterio.open(prob_path) as pds:
        for i, poly in enumerate(polys):
            minx, miny, maxx, maxy = (int(round(v)) for v in poly.bounds)
            win = Window(miny, minx, maxy - miny, maxx - minx)
            inside = rasterio.features.geometry_mask([poly], out_shape=win.shape, invert=True,
                                                     transform=Affine.translation(minx, miny))
            m = mds.read(1, window=win.to_rasterio()) == 1
            p = decode_probability(pds.read(1, window=win.to_rasterio()))
            sel = inside & m
            vals = p[sel]
            vals = vals[~np.isnan(vals)]
            world = shapely.affinity.affine_transform(poly, [t.a, t.b, t.d, t.e, t.c, t.f])
            npx = int(sel.sum())
            area = area_m2(world, grid.crs)
            rows.append({"id": i + 1, "scene": scene, "date": date.isoformat() if date else "",
                         "pixels": npx, "area_m2": float(area),
                         "mean_prob": float(vals.mean()) if vals.size else float("nan"),
                         "max_prob": float(vals.max()) if vals.size else float("nan")})
            geoms.append(world)
    if rows:
        return gpd.GeoDataFrame(rows, geometry=geoms, crs=grid.crs)
    return gpd.GeoDataFrame({c: [] for c in COLUMNS}, geometry=gpd.GeoSeries([], crs=grid.crs), crs=grid.crs).astype(
        {"id": "int64", "scene": "str", "date": "str", "pixels": "int64", "area_m2": "float64",
         "mean_prob": "float64", "max_prob": "float64"})


def write_polygons(gdf, paths: dict[str, str | os.PathLike]) -> list[Path]:
    """The polygons in every vector format of ``paths`` (output key -> path, keys
    ``polygons_<format>`` of :data:`~sandwatch.predict.naming.OUTPUTS`), each atomically."""
    return write_vectors(gdf, {key.removeprefix("polygons_"): path for key, path in paths.items()
                               if key.startswith("polygons_")})
