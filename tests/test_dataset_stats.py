"""Dataset statistics: pure arithmetic on counts, and exact counts on a synthetic manifest."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString, box

from conftest import shared_path
from sandwatch.cli.main import main
from sandwatch.dataset import Manifest, Observation, load_manifest, save_manifest
from sandwatch.dataset.stats import ObservationStats, blocks, count_block, dataset_stats, format_stats, summarize
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window

CRS = "EPSG:32644"  # UTM 44N, central India
LEFT, TOP = 500_000.0, 2_300_000.0


# ---- pure arithmetic ----------------------------------------------------------------------
def test_count_block_counts_only_valid_pixels():
    valid = np.ones((4, 5), bool)
    valid[0] = False                       # 15 valid
    mine = np.zeros((4, 5), np.uint8)
    mine[0:2, 0:2] = 1                     # 2 of them valid
    aoi = np.zeros((4, 5), bool)
    aoi[:, 0] = True                       # 3 valid
    assert count_block(valid, mine, aoi) == (15, 2, 3, 1)
    assert count_block(valid, None, None) == (15, 0, 0, 0)


def test_summarize_definitions():
    rows = [
        ObservationStats("a1", "a", valid_pixels=10_000, mine_pixels=100, aoi_pixels=1000, mine_in_aoi_pixels=100),
        ObservationStats("a2", "a", valid_pixels=8_000, mine_pixels=150, aoi_pixels=2000, mine_in_aoi_pixels=100),
        ObservationStats("b1", "b", valid_pixels=2_500, pixel_area_m2=400.0),
    ]
    s = summarize(rows)
    assert (s.sites, s.images) == (2, 3)
    assert s.km2 == pytest.approx(2.0)           # site a once (1.0 km2) + site b (1.0 km2)
    assert s.images_km2 == pytest.approx(2.8)
    assert s.mine_fraction == pytest.approx(250 / 20_500)
    assert s.mine_fraction_inside_aoi == pytest.approx(200 / 3000)
    assert s.mine_fraction_outside_aoi == pytest.approx(50 / 17_500)
    assert s.aoi_fraction == pytest.approx(3000 / 20_500)
    assert rows[2].mine_fraction == 0 and math.isnan(rows[2].mine_fraction_inside_aoi)
    text = format_stats(s, per_observation=True)
    assert "1.22 %" in text and "6.67 %" in text and "0.29 %" in text and "a2" in text
    json.dumps(s.to_dict(), allow_nan=True)


def test_blocks_tile_the_grid_exactly():
    grid = Grid(CRS, Affine(10, 0, LEFT, 0, -10, TOP), 250, 130)
    ws = list(blocks(grid, 100))
    assert len(ws) == 2 * 3
    assert sum(w.size for w in ws) == 250 * 130
    assert ws[-1] == Window(100, 200, 30, 50)
    with pytest.raises(SandwatchError):
        list(blocks(grid, 0))


# ---- synthetic manifest on disk -------------------------------------------------------------
def _scene(path, width, height, res=10.0, nodata_rows=0):
    data = np.full((4, height, width), 1200, np.uint16)
    if nodata_rows:
        data[:, height - nodata_rows:, :] = 0
    profile = dict(driver="GTiff", width=width, height=height, count=4, dtype="uint16", crs=CRS,
                   transform=Affine(res, 0, LEFT, 0, -res, TOP), nodata=0, tiled=True, blockxsize=32, blockysize=32)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = ("B02", "B03", "B04", "B08")
    return path


def _px_box(row0, col0, rows, cols, res=10.0):
    """Polygon covering whole pixels (row0..row0+rows, col0..col0+cols) of the 10 m grid."""
    return box(LEFT + col0 * res, TOP - (row0 + rows) * res, LEFT + (col0 + cols) * res, TOP - row0 * res)


def _vector(path, geoms, **props):
    gdf = gpd.GeoDataFrame(props or None, geometry=geoms, crs=CRS)
    gdf.to_file(path, driver="GeoJSON")
    return path


@pytest.fixture
def synthetic(tmp_path):
    """Two sites, three images, every count known exactly (see the comments)."""
    d = tmp_path
    # a1: 100x100 valid; one 10x10 mine square inside a river strip (river line between rows 49/50,
    #     buffered 50 m -> rows 45..54 = 1000 AOI pixels).
    _scene(d / "a1.tif", 100, 100)
    _vector(d / "a1_mining.geojson", [_px_box(45, 10, 10, 10)], Confidence=["High"])
    _vector(d / "rivers.geojson", [LineString([(LEFT - 500, TOP - 500), (LEFT + 1500, TOP - 500)])])
    # a2: bottom 20 rows nodata (8000 valid); mine: 100 px in the AOI, 50 px outside, 100 px in nodata;
    #     ready-made AOI polygon rows 40..59 (2000 px)
    _scene(d / "a2.tif", 100, 100, nodata_rows=20)
    _vector(d / "a2_mining.geojson", [_px_box(45, 10, 10, 10), _px_box(60, 0, 5, 10), _px_box(85, 50, 10, 10)],
            Confidence=["High", "Low", "High"])
    _vector(d / "a2_aoi.geojson", [_px_box(40, -5, 20, 110)])
    # b1: 50x50 pixels of 20 m (1 km2), no labels, no rivers
    _scene(d / "b1.tif", 50, 50, res=20.0)
    m = Manifest(name="synthetic", aoi_buffer_m=50, observations=[
        Observation(site="a", date="2021-01-01", scene=str(d / "a1.tif"), annotations=str(d / "a1_mining.geojson"),
                    rivers=str(d / "rivers.geojson")),
        Observation(site="a", date="2021-06-01", scene=str(d / "a2.tif"), annotations=str(d / "a2_mining.geojson"),
                    aoi=str(d / "a2_aoi.geojson")),
        Observation(site="b", date="2021-03-01", scene=str(d / "b1.tif")),
    ])
    return save_manifest(m, d / "manifest.yaml")


def test_stats_exact_counts_on_synthetic_manifest(synthetic):
    m = load_manifest(synthetic)
    s = dataset_stats(m, progress=False, block=32)   # many blocks, partial ones at the edges
    a1, a2, b1 = s.observations
    assert (a1.valid_pixels, a1.mine_pixels, a1.aoi_pixels, a1.mine_in_aoi_pixels) == (10_000, 100, 1000, 100)
    assert a1.mine_fraction == pytest.approx(0.01)
    assert (a2.valid_pixels, a2.mine_pixels, a2.aoi_pixels, a2.mine_in_aoi_pixels) == (8_000, 150, 2000, 100)
    assert (b1.valid_pixels, b1.mine_pixels, b1.aoi_pixels) == (2_500, 0, 0)
    assert a1.km2 == pytest.approx(1.0) and a2.km2 == pytest.approx(0.8) and b1.km2 == pytest.approx(1.0)
    assert (s.sites, s.images) == (2, 3)
    assert s.km2 == pytest.approx(2.0) and s.images_km2 == pytest.approx(2.8)
    assert s.mine_fraction == pytest.approx(250 / 20_500)
    assert s.mine_fraction_inside_aoi == pytest.approx(200 / 3000)
    assert s.mine_fraction_outside_aoi == pytest.approx(50 / 17_500)
    # block size does not change the counts
    s2 = dataset_stats(m, progress=False, block=1024)
    assert [o.to_dict() for o in s2.observations] == [o.to_dict() for o in s.observations]


def test_cli_stats_json_and_table(synthetic, capsys):
    assert main(["dataset", "stats", str(synthetic), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["images"] == 3 and d["mine_pixels"] == 250 and d["aoi_pixels"] == 3000
    assert main(["dataset", "stats", str(synthetic), "--per-observation"]) == 0
    out = capsys.readouterr().out
    assert "1.22 %" in out and "6.67 %" in out and "a_2021-06-01" in out


# ---- real data ----------------------------------------------------------------------------
def test_stats_on_real_indian_observations(tmp_path):
    root = shared_path("india-sandmining")
    obs = []
    for name in ("bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05"):
        folder = root / name
        obs.append(Observation(site=name.rsplit("-", 2)[0], date=f"{name[-7:]}-01", scene=str(folder / "rgb.tif"),
                               annotations=str(folder / "annotations.geojson"), aoi=str(folder / "rivers.geojson"),
                               bands=["R", "G", "B"]))
    m = Manifest(name="india", observations=obs)
    path = save_manifest(m, tmp_path / "india.yaml")
    s = dataset_stats(load_manifest(path), progress=False, block=256)
    assert (s.sites, s.images) == (2, 2)
    # the other pipeline's masks (0/255) burn every pixel a polygon touches, as our default does
    for row, name in zip(s.observations, ("bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05")):
        with rasterio.open(root / name / "labels_mask.tif") as ds:
            ref_mine = int((ds.read(1) > 0).sum())
        with rasterio.open(root / name / "rivers_mask.tif") as ds:
            ref_aoi = int((ds.read(1) > 0).sum())
        with rasterio.open(root / name / "rgb.tif") as ds:
            assert row.valid_pixels == ds.width * ds.height  # no nodata in these files
        assert abs(row.mine_pixels - ref_mine) <= 0.005 * ref_mine
        assert 0.97 * ref_aoi <= row.aoi_pixels <= ref_aoi
        assert row.mine_in_aoi_pixels == row.mine_pixels  # every mine of these two lies in the river AOI
        assert row.mine_fraction_outside_aoi == 0
    # about 10 m pixels at 20 N: 1231 x 459 x ~94 m2 = ~53 km2 and 409 x 1224 x ~93 m2 = ~46 km2
    assert s.km2 == pytest.approx(53 + 46, rel=0.05)
    assert 0 < s.mine_fraction < s.mine_fraction_inside_aoi
