"""sandwatch.aoi: river buffers and water-index AOIs on a scene's grid."""

from __future__ import annotations

import datetime as dt
import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling
from shapely.geometry import LineString, Polygon, box

from conftest import UTM, X0, Y0, make_utm_grid, shared_path, write_tif
from sandwatch.aoi import (
    aoi_for_observation,
    aoi_from_rivers,
    aoi_from_water,
    clean_water_mask,
    rasterize_aoi,
    require_aoi,
    water_index,
    write_aoi,
)
from sandwatch.cli.main import main
from sandwatch.dataset.manifest import Observation
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.labels import iou

def utm_grid(width=100, height=80, res=10.0) -> Grid:
    return make_utm_grid(width, height, res)


def centres(grid: Grid):
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    xs, ys = grid.transform * (cols + 0.5, rows + 0.5)
    return xs, ys


# a diagonal river line across the synthetic UTM grid
RIVER = LineString([(X0 - 200, Y0 - 100), (X0 + 600, Y0 - 700), (X0 + 1200, Y0 - 650)])


# ---- rivers ----------------------------------------------------------------------------------
def test_river_line_buffer_matches_distance_from_pixel_centres():
    g = utm_grid()
    geom = aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, buffer_m=150)
    assert shapely.box(*g.bounds).buffer(1e-6).contains(geom)  # clipped to the grid
    mask = rasterize_aoi(geom, g)
    xs, ys = centres(g)
    dist = shapely.distance(RIVER, shapely.points(xs, ys))
    expected = dist <= 150
    differ = mask != expected
    assert 0.2 < expected.mean() < 0.8
    # only centres within the polygonal approximation of the round caps / joins may differ
    assert np.all(np.abs(dist[differ] - 150) < 3.0), np.abs(dist[differ] - 150).max()


def test_river_buffer_on_a_wgs84_grid_is_measured_in_metres(tmp_path):
    res = 9e-05
    g = Grid("EPSG:4326", Affine(res, 0, 85.85, 0, -res, 20.30), 120, 100)
    line = LineString([(85.85, 20.30 - 50 * res), (85.85 + 120 * res, 20.30 - 40 * res)])
    path = tmp_path / "r.geojson"
    gpd.GeoDataFrame(geometry=[line], crs="EPSG:4326").to_file(path, driver="GeoJSON")
    mask = rasterize_aoi(aoi_from_rivers(path, g, buffer_m=300), g)
    xs, ys = centres(g)
    utm = gpd.GeoSeries(gpd.points_from_xy(xs.ravel(), ys.ravel()), crs="EPSG:4326").to_crs(UTM)
    line_utm = gpd.GeoSeries([line], crs="EPSG:4326").to_crs(UTM).iloc[0]
    dist = utm.distance(line_utm).to_numpy().reshape(g.shape)
    differ = mask != (dist <= 300)
    assert (dist <= 300).sum() > 2000
    assert differ.mean() < 0.01 and np.all(np.abs(dist[differ] - 300) < 15)


def test_buffer_zero_keeps_polygons_and_drops_lines():
    g = utm_grid()
    poly = Polygon([g.transform * p for p in [(10.2, 5.3), (60.7, 20.1), (30.4, 70.6)]])
    gdf = gpd.GeoDataFrame(geometry=[poly, RIVER], crs=UTM)
    geom = aoi_from_rivers(gdf, g, buffer_m=0)
    assert geom.equals(poly)  # inside the grid: unchanged
    expected = rasterio.features.rasterize([poly], out_shape=g.shape, transform=g.transform).astype(bool)
    np.testing.assert_array_equal(rasterize_aoi(geom, g), expected)
    assert aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, buffer_m=0).is_empty


def test_rivers_in_another_crs_give_the_same_aoi(tmp_path):
    g = utm_grid()
    wgs = gpd.GeoDataFrame(geometry=[RIVER], crs=UTM).to_crs("EPSG:4326")
    wgs.to_file(tmp_path / "r.gpkg")
    a = rasterize_aoi(aoi_from_rivers(tmp_path / "r.gpkg", g, 200), g)
    b = rasterize_aoi(aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, 200), g)
    assert a.sum() > 1000 and (a != b).sum() <= 3


def test_rivers_outside_the_scene_give_an_empty_aoi_and_an_error():
    g = utm_grid()
    far = gpd.GeoDataFrame(geometry=[RIVER], crs=UTM).translate(50_000, 0)
    geom = aoi_from_rivers(far, g, buffer_m=1000)
    assert geom.is_empty and rasterize_aoi(geom, g).sum() == 0
    with pytest.raises(SandwatchError, match=r"rivers.gpkg: the AOI is empty: .*pass --rivers or a larger --buffer"):
        require_aoi(geom, "rivers.gpkg", "no river near the scene")
    # a larger buffer reaches it
    assert not aoi_from_rivers(far, g, buffer_m=50_000).is_empty


def test_rasterize_aoi_windows_equal_slices():
    g = utm_grid(200, 150)
    geom = aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, buffer_m=120)
    full = rasterize_aoi(geom, g)
    for w in [Window(0, 0, 32, 32), Window(40, 30, 64, 50), Window(140, 190, 20, 20)]:
        part = rasterize_aoi(geom, g, w)
        inner = w.clip(*g.shape)
        np.testing.assert_array_equal(part[inner.relative_to(w).slices()], full[inner.slices()])
        assert part.sum() == full[inner.slices()].sum()


def test_corrupt_river_file_is_named(tmp_path):
    bad = tmp_path / "rivers.gpkg"
    bad.write_text("garbage")
    with pytest.raises(SandwatchError, match="rivers.gpkg: cannot be read as a river file"):
        aoi_from_rivers(bad, utm_grid())


# ---- water index -----------------------------------------------------------------------------
def synthetic_bands(g: Grid):
    """Sand/land with a river 12 px wide, a 3x3 px pond (0.09 ha) and a one-pixel speck."""
    b03 = np.full(g.shape, 0.20, np.float32)   # dry sand
    b11 = np.full(g.shape, 0.38, np.float32)
    b08 = np.full(g.shape, 0.30, np.float32)
    river = np.zeros(g.shape, bool)
    river[30:42, :] = True
    pond = np.zeros(g.shape, bool)
    pond[5:8, 5:8] = True
    speck = np.zeros(g.shape, bool)
    speck[70, 70] = True
    for m in (river, pond, speck):
        b03[m], b11[m], b08[m] = 0.05, 0.01, 0.02   # clear water
    return {"B03": b03, "B11": b11, "B08": b08}, river


def test_water_index_values():
    idx = water_index(np.array([0.05, 0.20, 0.0]), np.array([0.01, 0.38, 0.0]))
    np.testing.assert_allclose(idx[:2], [0.04 / 0.06, -0.18 / 0.58], rtol=1e-6)
    assert np.isnan(idx[2])


def test_water_aoi_from_arrays_mndwi_and_ndwi():
    g = utm_grid()
    bands, river = synthetic_bands(g)
    geom = aoi_from_water(bands, g, buffer_m=0)   # pond (< 1 ha) and speck are cleaned away
    np.testing.assert_array_equal(rasterize_aoi(geom, g), river)
    ndwi = aoi_from_water({"B03": bands["B03"], "B08": bands["B08"]}, g, buffer_m=0)
    np.testing.assert_array_equal(rasterize_aoi(ndwi, g), river)
    # keeping small water bodies brings the pond back (3x3 survives the 3x3 opening); the speck still goes
    keep = rasterize_aoi(aoi_from_water(bands, g, buffer_m=0, min_area_m2=0), g)
    assert keep.sum() == river.sum() + 9 and keep[5:8, 5:8].all() and not keep[70, 70]
    # a 100 m buffer adds 10 pixels each side of the river
    buf = rasterize_aoi(aoi_from_water(bands, g, buffer_m=100), g)
    assert buf[20:52].all() and not buf[:19].any() and not buf[53:].any()


def test_clean_water_mask_drops_small_bodies_by_area():
    m = np.zeros((40, 40), bool)
    m[2:6, 2:6] = True      # 16 px = 1600 m2
    m[20:32, 20:32] = True  # 144 px = 14400 m2
    out = clean_water_mask(m, 100.0)
    assert out.sum() == 144 and out[25, 25] and not out[3, 3]


class FakeScene:
    """Duck-typed Scene: records what is read, to check block reads of two bands."""

    def __init__(self, grid, bands, arrays):
        self.grid, self.bands, self.arrays, self.source, self.reads = grid, tuple(bands), arrays, "fake.tif", []

    def read(self, window=None, bands=None, **kw):
        w = window or self.grid.full_window()
        self.reads.append((w, tuple(bands)))
        out = np.zeros((len(bands), w.height, w.width), np.float32)
        valid = np.zeros((w.height, w.width), bool)
        inner = w.clip(*self.grid.shape)
        if inner is not None:
            rel = inner.relative_to(w).slices()
            for i, b in enumerate(bands):
                out[(i, *rel)] = self.arrays[b][inner.slices()]
            valid[rel] = True
        return out, valid


def test_water_aoi_from_a_large_scene_reads_two_bands_in_blocks_on_a_decimated_grid():
    g = utm_grid(400, 300)
    bands, _ = synthetic_bands(g)
    river = np.zeros(g.shape, bool)
    river[100:160, :] = True
    for b, v in (("B03", 0.05), ("B11", 0.01), ("B08", 0.02)):   # water: dark in SWIR and NIR
        bands[b][river] = v
    scene = FakeScene(g, ["B02", "B03", "B04", "B08", "B11"], bands)
    geom = aoi_from_water(scene, buffer_m=0, max_pixels=20_000, block=128)
    assert {r[1] for r in scene.reads} == {("B03", "B11", "B08")}   # MNDWI and the NDWI check
    assert max(r[0].height * r[0].width for r in scene.reads) <= 128 * 128
    mask = rasterize_aoi(geom, g)
    assert iou(mask, river | ((np.arange(300) >= 30) & (np.arange(300) < 42))[:, None]) > 0.95
    full = rasterize_aoi(aoi_from_water(scene, buffer_m=0), g)  # no decimation
    assert iou(mask, full) > 0.95


def test_rgb_only_scene_asks_for_rivers():
    g = utm_grid()
    scene = FakeScene(g, ["R", "G", "B"], {})
    with pytest.raises(SandwatchError, match=r"fake.tif: has only true-colour bands .* pass --rivers"):
        aoi_from_water(scene)


def test_aoi_for_observation_prefers_aoi_then_rivers_then_water(tmp_path):
    g = utm_grid()
    bands, river_px = synthetic_bands(g)
    scene = FakeScene(g, ["B03", "B11"], bands)
    aoi_poly = box(X0 + 100, Y0 - 300, X0 + 400, Y0 - 100)
    gpd.GeoDataFrame(geometry=[aoi_poly], crs=UTM).to_file(tmp_path / "aoi.gpkg")
    gpd.GeoDataFrame(geometry=[RIVER], crs=UTM).to_file(tmp_path / "rivers.gpkg")
    base = dict(site="s", date=dt.date(2021, 1, 1), scene="scene.tif")
    with_aoi = Observation(**base, aoi=str(tmp_path / "aoi.gpkg"), rivers=str(tmp_path / "rivers.gpkg"))
    assert aoi_for_observation(with_aoi, scene, buffer_m=1000).equals(aoi_poly)  # as is, no buffer
    with_rivers = Observation(**base, rivers=str(tmp_path / "rivers.gpkg"))
    geom = aoi_for_observation(with_rivers, scene, buffer_m=50)
    assert geom.area == pytest.approx(shapely.clip_by_rect(RIVER.buffer(50), *g.bounds).area, rel=0.01)
    bare = Observation(**base)
    np.testing.assert_array_equal(rasterize_aoi(aoi_for_observation(bare, scene, buffer_m=0), g), river_px)


# ---- output and CLI --------------------------------------------------------------------------
def test_write_aoi_formats(tmp_path):
    g = utm_grid()
    geom = aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, 100)
    write_aoi(geom, g, tmp_path / "a.geojson")
    doc = json.loads((tmp_path / "a.geojson").read_text())
    lon, lat = np.array(shapely.geometry.shape(doc["features"][0]["geometry"]).centroid.coords[0])
    assert 87 < lon < 88 and 20 < lat < 21  # EPSG:4326 (UTM 45N near 2300 km north)
    back = gpd.read_file(tmp_path / "a.geojson").to_crs(UTM).geometry.iloc[0]
    assert back.symmetric_difference(geom).area < 1.0
    write_aoi(geom, g, tmp_path / "a.gpkg")
    gp = gpd.read_file(tmp_path / "a.gpkg")
    assert gp.crs == UTM and gp.geometry.iloc[0].equals_exact(geom, 1e-6)
    write_aoi(geom, g, tmp_path / "a.tif")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert Grid.from_dataset(ds).same_as(g) and ds.dtypes[0] == "uint8"
        np.testing.assert_array_equal(ds.read(1), rasterize_aoi(geom, g).astype(np.uint8))
    with pytest.raises(SandwatchError, match="name the output .geojson, .gpkg or .tif"):
        write_aoi(geom, g, tmp_path / "a.csv")


def test_cli_aoi_from_rivers_and_from_water(tmp_path, capsys):
    g = utm_grid()
    bands, river_px = synthetic_bands(g)
    dn = np.stack([bands["B03"], bands["B11"]]) * 10000
    scene = write_tif(tmp_path / "scene.tif", g, dn, dtype="uint16", descriptions=["B03", "B11"])
    gpd.GeoDataFrame(geometry=[RIVER], crs=UTM).to_crs("EPSG:4326").to_file(tmp_path / "r.geojson")
    assert main(["aoi", "--like", str(scene), "--rivers", str(tmp_path / "r.geojson"), "--buffer", "100",
                 "-o", str(tmp_path / "a.tif")]) == 0
    with rasterio.open(tmp_path / "a.tif") as ds:
        got = ds.read(1)
    expected = rasterize_aoi(aoi_from_rivers(gpd.GeoDataFrame(geometry=[RIVER], crs=UTM), g, 100), g)
    assert (got.astype(bool) != expected).sum() <= 3 and got.sum() > 500
    assert main(["aoi", "--like", str(scene), "--buffer", "0", "-o", str(tmp_path / "w.tif")]) == 0
    with rasterio.open(tmp_path / "w.tif") as ds:
        np.testing.assert_array_equal(ds.read(1).astype(bool), river_px)
    assert "km2" in capsys.readouterr().out


def test_cli_empty_aoi_is_an_error_without_output(tmp_path, capsys):
    g = utm_grid()
    scene = write_tif(tmp_path / "scene.tif", g)
    far = gpd.GeoDataFrame(geometry=[RIVER], crs=UTM).translate(0, 90_000)
    far.to_file(tmp_path / "far.gpkg")
    rc = main(["aoi", "--like", str(scene), "--rivers", str(tmp_path / "far.gpkg"), "-o", str(tmp_path / "a.gpkg")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'far.gpkg'}: the AOI is empty:") and err.endswith(
        "pass --rivers or a larger --buffer")
    assert not (tmp_path / "a.gpkg").exists()


# ---- real data -------------------------------------------------------------------------------
@pytest.mark.parametrize("site", ["bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05"])
def test_real_rivers_reproduce_the_published_river_masks(site):
    folder = shared_path("india-sandmining", site)
    with rasterio.open(folder / "rgb.tif") as ds:
        grid = Grid.from_dataset(ds)
    with rasterio.open(folder / "rivers_mask.tif") as ds:
        ref = ds.read(1) > 0
    geom = aoi_from_rivers(folder / "rivers.geojson", grid, buffer_m=0)  # already buffered by 1 km
    assert iou(rasterize_aoi(geom, grid), ref) >= 0.95
    # buffering more grows the AOI, never beyond the grid
    bigger = rasterize_aoi(aoi_from_rivers(folder / "rivers.geojson", grid, buffer_m=300), grid)
    assert bigger.sum() > ref.sum() and (bigger | ~ref).all()


def _havel_osm_water(folder, grid):
    osm = gpd.read_file(folder / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg")
    water = osm[osm["fclass"] == "water"]
    assert len(water) == 36 and water.crs == grid.crs
    return shapely.union_all(water.geometry.values).intersection(shapely.box(*grid.bounds))


@pytest.mark.slow
def test_havel_water_index_aoi_covers_the_osm_water_open_scene():
    folder = shared_path("s2-l1c-33UUU-havel")
    from sandwatch.imagery import open_scene

    scene = open_scene(str(folder))
    assert "B11" in scene.bands
    water = _havel_osm_water(folder, scene.grid)
    geom = aoi_from_water(scene, buffer_m=100)
    assert water.intersection(geom).area / water.area >= 0.90
    # the AOI is not the whole scene: water + 100 m is well under half of it
    assert geom.area < 0.4 * shapely.box(*scene.grid.bounds).area


def test_havel_water_index_aoi_covers_the_osm_water_from_arrays():
    folder = shared_path("s2-l1c-33UUU-havel")
    with rasterio.open(next(folder.glob("*_B03.jp2"))) as ds:
        grid = Grid.from_dataset(ds)
        b03 = ds.read(1).astype(np.float32)
    with rasterio.open(next(folder.glob("*_B11.jp2"))) as ds:  # 20 m -> 10 m
        b11 = ds.read(1, out_shape=grid.shape, resampling=Resampling.bilinear).astype(np.float32)
    water = _havel_osm_water(folder, grid)
    geom = aoi_from_water({"B03": b03, "B11": b11, "valid": b03 > 0}, grid, buffer_m=100)
    assert water.intersection(geom).area / water.area >= 0.90
