"""One mask-to-polygon rule: predict's polygons, monitor's regions and polygons, the AOI and the
synthetic labels all count the same regions on the same mask."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from conftest import make_utm_grid, write_tif
from sandwatch.aoi.water import vectorize_mask
from sandwatch.monitor.run import _write_date_polygons
from sandwatch.monitor.series import date_figures
from sandwatch.predict.polygons import polygonize
from sandwatch.vectors import CONNECTIVITY, area_m2, label_regions, mask_polygons, to_wgs84


def tricky_mask() -> np.ndarray:
    """Five regions under edge connectivity: two squares touching only at a corner, an L, a
    ring with a hole, a single pixel; a patch crossing rows 7/8 (a block seam below)."""
    m = np.zeros((24, 24), bool)
    m[1:4, 1:4] = True            # square A
    m[4:7, 4:7] = True            # square B: touches A only at a corner
    m[5:12, 12:14] = True         # L, vertical part crossing the row-8 seam
    m[10:12, 14:18] = True        # L, foot
    m[15:22, 2:9] = True          # ring...
    m[17:20, 4:7] = False         # ...with a hole
    m[20, 20] = True              # one pixel
    return m


def test_the_rule_is_edge_connectivity():
    m = tricky_mask()
    labels, n = label_regions(m)
    polys = mask_polygons(m, Affine.identity())
    assert CONNECTIVITY == 4
    assert n == len(polys) == 5
    assert all(p.is_valid for p in polys)
    assert sorted(int(p.area) for p in polys) == sorted(np.bincount(labels.ravel())[1:].tolist())
    ring = max(polys, key=lambda p: p.area)
    assert len(ring.interiors) == 1 and ring.area == 7 * 7 - 3 * 3


def test_predict_monitor_and_aoi_count_the_same_regions(tmp_path):
    m = tricky_mask()
    grid = make_utm_grid(*m.shape[::-1])
    mask_path = write_tif(tmp_path / "s.mask.tif", grid, m[None].astype("uint8"))
    prob_path = write_tif(tmp_path / "s.prob.tif", grid, (m[None] * 0.9).astype("float32"), dtype="float32")
    # predict reads the mask in bands of 8 rows: the L is cut by a seam and joined again
    gdf = polygonize(mask_path, prob_path, band_rows=8)
    figures = date_figures(m, np.ones_like(m), np.ones_like(m), grid.pixel_area_m2)
    _, rows = _write_date_polygons(tmp_path, "site", dt.date(2024, 1, 1), "h", m, grid, several=False)
    aoi = vectorize_mask(m, grid)
    assert len(gdf) == figures.n_polygons == len(rows) == len(aoi.geoms) == 5
    assert gdf["pixels"].sum() == m.sum()
    assert gdf["area_m2"].sum() == pytest.approx(m.sum() * 100.0)
    assert sum(r["area_m2"] for r in rows) == pytest.approx(m.sum() * 100.0)
    assert shapely.union_all(list(gdf.geometry)).equals(aoi)


def test_areas_planar_and_geodesic():
    assert area_m2(box(0, 0, 100, 50), "EPSG:32644") == pytest.approx(5000.0)
    # 0.001 x 0.001 degree at the equator: about 111.32 m x 110.57 m
    assert area_m2(box(0, 0, 0.001, 0.001), "EPSG:4326") == pytest.approx(12309, rel=0.01)
    assert area_m2(shapely.Polygon(), "EPSG:32644") == 0.0


def test_to_wgs84_of_a_utm_point():
    p = to_wgs84(shapely.Point(500_000, 0), "EPSG:32644")      # the central meridian of zone 44N
    assert p.x == pytest.approx(81.0) and p.y == pytest.approx(0.0, abs=1e-9)
    assert to_wgs84(p, "EPSG:4326") is p


def test_synthetic_labels_keep_diagonal_neighbours_apart_before_growing():
    from sandwatch.synthetic.files import mask_to_polygons

    grid = make_utm_grid(40, 40)
    m = np.zeros((40, 40), bool)
    m[5:10, 5:10] = True
    m[20:25, 20:25] = True
    polys = mask_to_polygons(m, grid, generous_px=0.5, simplify_px=0.0, min_pixels=1)
    assert len(polys) == 2
    assert sum(p.area for p in polys) > 2 * 25 * 100.0      # grown outlines, as an annotator draws


def test_every_vector_format_written_atomically_and_read_back(tmp_path):
    import geopandas as gpd

    from sandwatch.vectors import VECTOR_FORMATS, write_vectors

    grid = make_utm_grid(40, 40)
    m = np.zeros((40, 40), bool)
    m[5:10, 5:12] = True
    gdf = gpd.GeoDataFrame({"id": [1], "area_m2": [3500.0]}, geometry=mask_polygons(m, grid), crs=grid.crs)
    paths = {key: tmp_path / f"p{fmt.suffix}" for key, fmt in VECTOR_FORMATS.items()}
    assert set(paths) == {"gpkg", "geojson", "parquet"}
    assert write_vectors(gdf, paths) == list(paths.values())
    back = {key: gpd.read_file(p) if key != "parquet" else gpd.read_parquet(p) for key, p in paths.items()}
    assert back["gpkg"].crs == grid.crs and back["parquet"].crs == grid.crs
    assert back["geojson"].crs.to_epsg() == 4326
    assert back["parquet"].geometry[0].equals_exact(gdf.geometry[0], 1e-6)
    assert back["gpkg"].geometry[0].area == pytest.approx(3500.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.geojson", "p.gpkg", "p.parquet"]   # no temporaries
