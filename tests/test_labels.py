"""sandwatch.labels: reading mining polygons and rasterising them onto a scene's grid."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from shapely.geometry import Polygon, box

from conftest import UTM, X0, Y0, make_utm_grid, shared_path, write_tif
from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.labels import (
    ConfidenceWeights,
    EmptyVectorWarning,
    iou,
    overlaps_grid,
    polygons_on_grid,
    rasterize_labels,
    read_polygons,
)

def utm_grid(width=40, height=30, res=10.0) -> Grid:
    return make_utm_grid(width, height, res)


def px_box(c0, r0, c1, r1, grid=None) -> Polygon:
    """A rectangle given in (fractional) pixel coordinates of ``grid``."""
    t = (grid or utm_grid()).transform
    (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def write_geojson(path, features, crs=None, with_type=True):
    feats = []
    for geom, props in features:
        f = {"geometry": shapely.geometry.mapping(geom), "properties": props}
        if with_type:
            f = {"type": "Feature", **f}
        feats.append(f)
    doc = {"type": "FeatureCollection", "features": feats}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


# ---- reading ---------------------------------------------------------------------------------
def test_read_polygons_parses_confidence_words_numbers_and_missing(tmp_path):
    g = utm_grid()
    gdf = gpd.GeoDataFrame(
        {"Confidence": ["High", "low", "HIGH", "0.25", None, " Low "]},
        geometry=[px_box(i, 0, i + 1, 1) for i in range(6)], crs=UTM)
    path = tmp_path / "p.gpkg"
    gdf.to_file(path)
    out = read_polygons(path)
    assert out.crs == UTM
    np.testing.assert_allclose(out["confidence"].to_numpy(), [1.0, 0.5, 1.0, 0.25, 1.0, 0.5])
    # numeric column, other field name, matched case-insensitively
    gdf2 = gpd.GeoDataFrame({"CONF": [0.0, 0.7, 1.0]}, geometry=[px_box(i, 0, i + 1, 1, g) for i in range(3)], crs=UTM)
    gdf2.to_file(tmp_path / "n.gpkg")
    np.testing.assert_allclose(read_polygons(tmp_path / "n.gpkg", confidence_field="conf")["confidence"], [0, 0.7, 1])
    # no confidence field at all = High
    gdf2.drop(columns="CONF").to_file(tmp_path / "none.gpkg")
    assert (read_polygons(tmp_path / "none.gpkg")["confidence"] == 1.0).all()
    # the published scheme's three words (Labelbox "Confidence": High / Medium / Low)
    gdf3 = gpd.GeoDataFrame({"Confidence": ["High", "Medium", "low"]},
                            geometry=[px_box(i, 0, i + 1, 1, g) for i in range(3)], crs=UTM)
    gdf3.to_file(tmp_path / "words.gpkg")
    np.testing.assert_allclose(read_polygons(tmp_path / "words.gpkg")["confidence"], [1.0, 0.75, 0.5])


@pytest.mark.parametrize("value, needle", [("maybe", "unknown confidence 'maybe'"),
                                           (1.5, "confidence 1.5 outside 0..1"),
                                           (-0.1, "confidence -0.1 outside 0..1")])
def test_bad_confidence_names_file_and_feature(tmp_path, value, needle):
    path = write_geojson(tmp_path / "bad.geojson", [(box(85, 20, 85.01, 20.01), {"Confidence": "High"}),
                                                   (box(85, 20, 85.01, 20.01), {"Confidence": "Low"}),
                                                   (box(85, 20, 85.01, 20.01), {"Confidence": value})])
    with pytest.raises(SandwatchError) as err:
        read_polygons(path)
    msg = str(err.value)
    assert str(path) in msg and "feature 2" in msg and needle in msg and "\n" not in msg


def test_geojson_without_feature_type_and_without_crs_is_read_as_wgs84(tmp_path):
    # The public Indian annotations omit "type": "Feature"; GDAL then sees no features at all.
    a, b = box(85.0, 20.0, 85.01, 20.01), box(85.02, 20.0, 85.03, 20.01)
    path = write_geojson(tmp_path / "a.geojson", [(a, {"Confidence": "Low"}), (b, {"Confidence": "High"})],
                         with_type=False)
    gdf = read_polygons(path)
    assert gdf.crs == "EPSG:4326" and len(gdf) == 2
    assert gdf.geometry.iloc[0].equals(a)
    np.testing.assert_allclose(gdf["confidence"], [0.5, 1.0])


def test_bowtie_is_repaired_into_its_two_triangles(tmp_path):
    g = utm_grid()
    t = g.transform
    # bow-tie over pixels (0..20, 0..20): crosses itself at (10, 10)
    pts = [t * p for p in [(0, 0), (20, 20), (20, 0), (0, 20), (0, 0)]]
    bow = Polygon(pts)
    assert not bow.is_valid
    path = write_geojson(tmp_path / "bow.geojson", [(bow, {"Confidence": "High"})], crs="EPSG:32645")
    gdf = read_polygons(path)
    geom = gdf.geometry.iloc[0]
    assert geom.is_valid and geom.geom_type == "MultiPolygon"
    assert geom.area == pytest.approx(2 * 0.5 * 200 * 100)  # two triangles: base 200 m, height 100 m
    mask, _ = rasterize_labels(gdf, g, all_touched=False)
    # independent check: pixel centres strictly inside the two triangles (pixel coordinates u, v)
    rows, cols = np.mgrid[0:g.height, 0:g.width]
    u, v = cols + 0.5, rows + 0.5
    inside = (v < 20) & (u < 20) & (np.abs(u - 10) > np.abs(v - 10))
    on_edge = np.isclose(np.abs(u - 10), np.abs(v - 10))  # centres exactly on a diagonal: either way
    assert inside.sum() == 180 and on_edge[:20, :20].sum() == 40
    np.testing.assert_array_equal(mask.astype(bool)[~on_edge], inside[~on_edge])


def test_non_polygonal_and_empty_features_are_dropped(tmp_path):
    line = shapely.LineString([(X0, Y0 - 5), (X0 + 100, Y0 - 5)])
    gdf = gpd.GeoDataFrame({"Confidence": ["High", "High", "Low"]},
                           geometry=[line, Polygon(), px_box(2, 2, 4, 4)], crs=UTM)
    path = tmp_path / "mixed.gpkg"
    gdf.to_file(path)
    out = read_polygons(path)
    assert len(out) == 1 and out["feature"].tolist() == [2] and out["confidence"].tolist() == [0.5]


def test_corrupt_missing_and_crsless_files_raise_naming_them(tmp_path):
    bad = tmp_path / "broken.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [ {"geometry": ')
    with pytest.raises(SandwatchError, match="broken.geojson: cannot be read"):
        read_polygons(bad)
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage at all" * 10)
    with pytest.raises(SandwatchError, match="junk.gpkg: cannot be read"):
        read_polygons(junk)
    with pytest.raises(SandwatchError, match="nope.geojson: no such polygon file"):
        read_polygons(tmp_path / "nope.geojson")
    shp = tmp_path / "noprj.shp"
    gpd.GeoDataFrame(geometry=[px_box(0, 0, 2, 2)], crs=UTM).to_file(shp)
    (tmp_path / "noprj.prj").unlink()
    with pytest.raises(SandwatchError, match="noprj.shp: has no coordinate reference system"):
        read_polygons(shp)


# ---- rasterising -----------------------------------------------------------------------------
def test_pixel_centre_rule_and_all_touched():
    g = utm_grid()
    gdf = gpd.GeoDataFrame({"confidence": [1.0]}, geometry=[px_box(0.6, 1.6, 3.4, 4.4)], crs=UTM)
    mask, weight = rasterize_labels(gdf, g, all_touched=False)
    assert mask.dtype == np.uint8 and weight.dtype == np.float32 and mask.shape == (30, 40)
    # centres at 1.5 and 2.5 are inside, 0.5 and 3.5 are not (rows likewise 2, 3)
    assert list(zip(*np.nonzero(mask))) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    touched, _ = rasterize_labels(gdf, g)  # the default: all touched
    assert touched.sum() == 16 and touched[1:5, 0:4].all()


def test_highest_confidence_wins_and_weights_map_confidence():
    g = utm_grid()
    big_low = px_box(0, 0, 10, 10)
    small_high = px_box(2, 2, 5, 5)
    numeric = px_box(20, 0, 25, 5)
    # High listed first, Low after: the Low polygon must not overwrite it
    gdf = gpd.GeoDataFrame({"confidence": [1.0, 0.5, 0.75]}, geometry=[small_high, big_low, numeric], crs=UTM)
    mask, weight = rasterize_labels(gdf, g)
    assert mask.sum() == 100 + 25
    assert (weight[2:5, 2:5] == 1.0).all()
    assert (weight[0:10, 0:10][~np.pad(np.ones((3, 3), bool), ((2, 5), (2, 5)))] == 0.5).all()
    assert (weight[0:5, 20:25] == 0.75).all()  # default weights: numeric confidence = weight
    assert (weight[mask == 0] == 1.0).all()
    w = ConfidenceWeights(high=2.0, low=0.2, background=0.1)
    _, weight2 = rasterize_labels(gdf, g, weights=w)
    assert weight2[3, 3] == pytest.approx(2.0) and weight2[0, 0] == pytest.approx(0.2)
    assert weight2[0, 20] == pytest.approx(0.2 + 0.5 * (2.0 - 0.2))  # 0.75 halfway between Low and High
    assert weight2[20, 30] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ConfidenceWeights(low=-1)


def test_windows_equal_slices_of_the_full_raster_and_reach_outside():
    g = utm_grid(120, 90)
    rng = np.random.default_rng(0)
    polys = []
    for _ in range(25):
        c, r = rng.uniform(-5, 115), rng.uniform(-5, 85)
        polys.append(px_box(c, r, c + rng.uniform(1, 12), r + rng.uniform(1, 12), g))
    gdf = gpd.GeoDataFrame({"confidence": rng.choice([0.5, 1.0], 25)}, geometry=polys, crs=UTM)
    full_m, full_w = rasterize_labels(gdf, g)
    assert 0 < full_m.sum() < full_m.size
    prepared = polygons_on_grid(gdf.to_crs("EPSG:4326"), g)  # read + reproject once for many windows
    for w in [Window(0, 0, 16, 16), Window(37, 51, 20, 33), Window(80, 100, 10, 20)]:
        m, wt = rasterize_labels(gdf, g, window=w)
        np.testing.assert_array_equal(m, full_m[w.slices()])
        np.testing.assert_array_equal(wt, full_w[w.slices()])
        m2, wt2 = rasterize_labels(prepared, g, window=w)
        np.testing.assert_array_equal(m2, m)
        np.testing.assert_array_equal(wt2, wt)
    # a window hanging over the edge: inside part equals the full raster, the rest is background
    w = Window(80, 110, 16, 16)
    m, wt = rasterize_labels(gdf, g, window=w)
    inner = w.clip(*g.shape)
    np.testing.assert_array_equal(m[inner.relative_to(w).slices()], full_m[inner.slices()])


def test_wgs84_polygons_on_utm_grid_give_the_same_mask_as_utm_polygons(tmp_path):
    g = utm_grid(60, 50)
    polys = [px_box(3.3, 4.2, 20.7, 15.1, g), Polygon([g.transform * p for p in [(30, 5), (55, 20), (35, 45)]])]
    utm = gpd.GeoDataFrame({"Confidence": ["High", "Low"]}, geometry=polys, crs=UTM)
    wgs = utm.to_crs("EPSG:4326")
    write_geojson(tmp_path / "wgs.geojson", zip(wgs.geometry, wgs.drop(columns="geometry").to_dict("records")))
    # the centre rule is exact under reprojection (all-touched flips pixels the edge grazes)
    m_utm, w_utm = rasterize_labels(utm, g, all_touched=False)
    m_wgs, w_wgs = rasterize_labels(tmp_path / "wgs.geojson", g, all_touched=False)
    assert m_utm.sum() > 500
    np.testing.assert_array_equal(m_utm, m_wgs)
    np.testing.assert_array_equal(w_utm, w_wgs)


def test_utm_polygons_on_a_wgs84_grid_follow_the_pixel_centre_rule():
    res = 9e-05
    g = Grid("EPSG:4326", Affine(res, 0, 85.85, 0, -res, 20.30), 80, 60)
    # a polygon drawn in UTM 45N, rasterised on the geographic grid
    centre = gpd.GeoSeries([shapely.Point(85.85 + 40 * res, 20.30 - 30 * res)], crs="EPSG:4326").to_crs(UTM).iloc[0]
    poly = shapely.Point(centre.x, centre.y).buffer(200)  # 200 m radius disc
    mask, _ = rasterize_labels(gpd.GeoDataFrame({"confidence": [1.0]}, geometry=[poly], crs=UTM), g, all_touched=False)
    rows, cols = np.mgrid[0:g.height, 0:g.width]
    xs, ys = g.transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    pts = gpd.GeoSeries(gpd.points_from_xy(xs, ys), crs="EPSG:4326").to_crs(UTM)
    dist = pts.distance(shapely.Point(centre.x, centre.y)).to_numpy().reshape(g.shape)
    expected = dist < 200
    differ = mask.astype(bool) != expected
    # only pixels right on the edge may differ (polygonal circle, reprojected straight edges)
    assert np.all(np.abs(dist[differ] - 200) < 3.0)
    assert expected.sum() == pytest.approx(np.pi * 200**2 / g.pixel_area_m2, rel=0.05)


def test_polygons_outside_the_scene(tmp_path):
    g = utm_grid()
    far = gpd.GeoDataFrame({"confidence": [1.0]}, geometry=[px_box(500, 500, 510, 510)], crs=UTM)
    assert not overlaps_grid(far, g)
    mask, weight = rasterize_labels(far, g)  # the library just gives background
    assert mask.sum() == 0 and (weight == 1).all()
    with pytest.raises(SandwatchError, match="no polygon overlaps the scene; check the CRS"):
        rasterize_labels(far, g, require_overlap=True)


def test_empty_file_is_all_background_with_a_warning(tmp_path):
    path = tmp_path / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.warns(EmptyVectorWarning, match="empty.geojson"):
        mask, weight = rasterize_labels(path, utm_grid(), require_overlap=True)
    assert mask.shape == (30, 40) and mask.sum() == 0 and (weight == 1.0).all()


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_rasterize_writes_mask_and_weights_on_the_scene_grid(tmp_path, capsys):
    g = utm_grid(300, 260)
    scene = write_tif(tmp_path / "scene.tif", g)
    polys = gpd.GeoDataFrame({"Confidence": ["High", "Low"]},
                             geometry=[px_box(10, 10, 30, 20, g), px_box(100, 200, 110, 250, g)], crs=UTM)
    write_geojson(tmp_path / "p.geojson",
                  zip(polys.to_crs("EPSG:4326").geometry, [{"Confidence": "High"}, {"Confidence": "Low"}]))
    rc = main(["labels", "rasterize", str(tmp_path / "p.geojson"), "--like", str(scene),
               "-o", str(tmp_path / "out" / "mask.tif"), "--weights", str(tmp_path / "out" / "w.tif"),
               "--low-weight", "0.25"])
    assert rc == 0
    assert "700 mine pixels" in capsys.readouterr().out
    with rasterio.open(tmp_path / "out" / "mask.tif") as ds:
        assert Grid.from_dataset(ds).same_as(g)
        assert ds.dtypes[0] == "uint8" and ds.profile["tiled"] and ds.compression is not None
        m = ds.read(1)
    with rasterio.open(tmp_path / "out" / "w.tif") as ds:
        assert ds.dtypes[0] == "float32"
        w = ds.read(1)
    assert m.sum() == 200 + 500 and set(np.unique(m)) == {0, 1}
    assert (m[10:20, 10:30] == 1).all() and (w[10:20, 10:30] == 1.0).all()
    assert (w[200:250, 100:110] == 0.25).all() and (w[m == 0] == 1.0).all()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mask.tif", "w.tif"]


def test_cli_polygons_outside_scene_fail_without_output(tmp_path, capsys):
    g = utm_grid()
    scene = write_tif(tmp_path / "scene.tif", g)
    path = write_geojson(tmp_path / "far.geojson", [(box(10.0, 50.0, 10.01, 50.01), {"Confidence": "High"})])
    rc = main(["labels", "rasterize", str(path), "--like", str(scene), "-o", str(tmp_path / "m.tif")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: no polygon overlaps the scene; check the CRS / that the labels belong to this scene"
    assert not (tmp_path / "m.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.geojson", "scene.tif"]


def test_cli_empty_file_warns_and_writes_background(tmp_path, capsys):
    scene = write_tif(tmp_path / "scene.tif", utm_grid())
    (tmp_path / "e.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = main(["labels", "rasterize", str(tmp_path / "e.geojson"), "--like", str(scene), "-o",
                   str(tmp_path / "m.tif")])
    assert rc == 0
    assert "warning:" in capsys.readouterr().err
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.read(1).sum() == 0


# ---- real data -------------------------------------------------------------------------------
@pytest.mark.parametrize("site", ["bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05"])
def test_real_annotations_match_the_published_masks(site):
    folder = shared_path("india-sandmining", site)
    with rasterio.open(folder / "rgb.tif") as ds:
        grid = Grid.from_dataset(ds)
    with rasterio.open(folder / "labels_mask.tif") as ds:
        assert Grid.from_dataset(ds).same_as(grid)
        ref = ds.read(1) > 0
    gdf = read_polygons(folder / "annotations.geojson")
    assert len(gdf) > 0 and set(np.unique(gdf["confidence"])) == {0.5, 1.0}
    # The published masks were burnt with GDAL's all-touched rule: reproduce them.
    touched, weight = rasterize_labels(gdf, grid, require_overlap=True)  # default rule
    assert iou(touched, ref) >= 0.95
    # The stricter pixel-centre rule gives a strict subset of them.
    centre, _ = rasterize_labels(gdf, grid, all_touched=False)
    assert not (centre.astype(bool) & ~ref).any()
    assert iou(centre, ref) >= 0.88
    assert set(np.unique(weight[touched == 1])) == {0.5, 1.0}
