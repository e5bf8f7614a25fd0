"""sandwatch.synthetic: demo data that looks like real inputs."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import yaml
from PIL import Image
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import box, shape

from sandwatch.bands import L1C_BANDS
from sandwatch.dataset.manifest import load_manifest
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid
from sandwatch.synthetic import (Surface, SiteLandscape, make_scene, plan_sites, scene_quicklook, site_grid, surface_spectrum,
                                 utm_grid, write_demo_data, write_polygons, write_scene)

SITES, SIZE = 4, 256   # kinds: growing, stopping, never, stable


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    manifest = write_demo_data(out, sites=SITES, size=SIZE, seed=0)
    return out, manifest, load_manifest(manifest)


def _polygons_in(path, crs):
    data = json.loads(open(path).read())
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    geoms = [shapely.transform(shape(f["geometry"]), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
             for f in data["features"]]
    return geoms, [f["properties"].get("Confidence") for f in data["features"]]


def _label_mask(obs):
    with rasterio.open(obs.scene) as src:
        geoms, conf = _polygons_in(obs.annotations, src.crs)
        if not geoms:
            return np.zeros((src.height, src.width), bool), conf
        mask = rasterio.features.rasterize([(g, 1) for g in geoms], out_shape=(src.height, src.width),
                                           transform=src.transform).astype(bool)
    return mask, conf


def test_manifest_layout(demo):
    out, path, m = demo
    assert path == out / "manifest.yaml"
    assert len(m.observations) == SITES * 2
    assert m.aoi_buffer_m == 1000
    raw = yaml.safe_load(path.read_text())
    first = raw["observations"][0]
    assert not first["scene"].startswith("/") and first["scene"].endswith(".tif")   # relative paths
    assert first["annotations"].endswith("_mining.geojson") and first["rivers"].endswith("rivers.geojson")
    for o in m.observations:
        for p in (o.scene, o.annotations, o.rivers):
            assert p is not None and (out / p).exists()
        assert 8 < o.latitude < 30 and 72 < o.longitude < 96           # India
        assert o.date < dt.date(2022, 1, 25)                           # before the DN offset
        assert (out / o.site / f"{o.date.isoformat()}.png").exists()
    by_site = {}
    for o in m.observations:
        by_site.setdefault(o.site, []).append(o.date)
    assert all(len(d) == 2 and (d[1] - d[0]).days >= 90 for d in by_site.values())


def test_scene_georeferencing(demo):
    _, _, m = demo
    specs = {s.name: s for s in plan_sites(SITES, SIZE, 0)}
    for o in m.observations:
        with rasterio.open(o.scene) as src:
            epsg = src.crs.to_epsg()
            assert 32643 <= epsg <= 32646
            assert epsg == 32600 + int((o.longitude + 180) // 6) + 1
            assert src.res == (10.0, 10.0) and src.transform.b == 0 and src.transform.d == 0
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert (src.width, src.height, src.count) == (SIZE, SIZE, 13)
            assert set(src.dtypes) == {"uint16"} and src.nodata == 0
            assert tuple(src.descriptions) == L1C_BANDS
            assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
            assert src.tags()["ACQUISITION_DATE"] == o.date.isoformat()
            # the scene is centred on the site's coordinates (within a pixel or two)
            cx, cy = src.transform * (SIZE / 2, SIZE / 2)
            lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
            assert abs(lon - o.longitude) < 2e-4 and abs(lat - o.latitude) < 2e-4
            assert site_grid(specs[o.site]).same_as(Grid.from_dataset(src))


def test_sites_spread_in_geographic_groups():
    specs = plan_sites(6, 512, 0)
    assert {s.group for s in specs} == {0, 1, 2}
    assert len({site_grid(s).crs.to_epsg() for s in specs}) == 3
    pts = {s.name: np.array([s.lon, s.lat]) for s in specs}
    for a in specs:
        for b in specs:
            d = np.linalg.norm(pts[a.name] - pts[b.name]) * 111   # km, roughly
            if a.group == b.group and a.name != b.name:
                assert 5 < d < 80
            elif a.group != b.group:
                assert d > 400
    assert [s.kind for s in specs].count("never") == 2
    assert all(any(s.kind != "never" for s in specs if s.group == g) for g in range(3))


def test_polygons_inside_scene_with_confidence(demo):
    _, _, m = demo
    confs = []
    for o in m.observations:
        raw = json.loads(open(o.annotations).read())
        assert raw["type"] == "FeatureCollection"
        with rasterio.open(o.scene) as src:
            footprint = box(*src.bounds)
            geoms, conf = _polygons_in(o.annotations, src.crs)
        for f in raw["features"]:
            lon, lat = np.asarray(shape(f["geometry"]).exterior.coords).T
            assert 72 < lon.min() and lon.max() < 96 and 8 < lat.min() and lat.max() < 30  # EPSG:4326
        for g in geoms:
            assert g.is_valid and g.geom_type == "Polygon" and g.area > 500   # > 5 pixels
            assert footprint.buffer(30).contains(g)
        confs += conf
    assert set(confs) == {"High", "Low"}
    assert confs.count("High") > confs.count("Low") / 2


def test_mine_fraction_sane(demo):
    _, _, m = demo
    kinds = {s.name: s.kind for s in plan_sites(SITES, SIZE, 0)}
    fractions = []
    for o in m.observations:
        mask, _ = _label_mask(o)
        f = mask.mean()
        fractions.append(f)
        if kinds[o.site] == "never":
            assert f == 0
        else:
            assert 0.003 < f < 0.15, (o.id, f)
    assert 0.005 < np.mean(fractions) < 0.08


def test_polygons_outline_the_true_mining(demo):
    _, _, m = demo
    specs = {s.name: s for s in plan_sites(SITES, SIZE, 0)}
    o = next(o for o in m.observations if specs[o.site].kind == "growing")
    land = SiteLandscape(specs[o.site])
    truth = land.scene(specs[o.site].dates.index(o.date))
    mask, _ = _label_mask(o)
    covered = (mask & truth.mine_mask).sum() / truth.mine_mask.sum()
    assert covered > 0.97                                        # generous outlines cover the disturbance
    assert 1.0 < mask.sum() / truth.mine_mask.sum() < 2.0          # ... but not wildly


def test_mining_grows_stops_and_never(demo):
    _, _, m = demo
    kinds = {s.name: s.kind for s in plan_sites(SITES, SIZE, 0)}
    for site, kind in kinds.items():
        obs = sorted((o for o in m.observations if o.site == site), key=lambda o: o.date)
        (m0, c0), (m1, c1) = (_label_mask(o) for o in obs)
        if kind == "growing":
            assert m1.sum() > 1.3 * m0.sum() > 0
        elif kind == "never":
            assert m0.sum() == 0 and m1.sum() == 0 and not c0 and not c1
        elif kind == "stopping":
            assert m0.sum() > 0 and "High" in c0 and set(c1) <= {"Low"}
        elif kind == "stable":
            assert 0.7 < m1.sum() / m0.sum() < 1.3


def _read_refl(path):
    with rasterio.open(path) as src:
        return src.read().astype(np.float32) / 10000.0


def test_spectra_plausible(demo):
    _, _, m = demo
    specs = {s.name: s for s in plan_sites(SITES, SIZE, 0)}
    o = m.observations[0]
    truth = SiteLandscape(specs[o.site]).scene(0)
    refl = _read_refl(o.scene)
    band = {b: refl[i] for i, b in enumerate(L1C_BANDS)}

    def core(code):  # pixels of one surface, away from its edges (the PSF mixes edges)
        return ndimage.binary_erosion(truth.surface == code, iterations=2)

    water = core(Surface.CLEAR_WATER)
    sand = core(Surface.DRY_SAND) & (truth.weight < 0.3)
    veg = core(Surface.VEGETATION) | core(Surface.CROP)
    assert water.sum() > 200 and sand.sum() > 200 and veg.sum() > 200
    assert np.median(band["B11"][sand]) > 0.25 > 0.05 > np.median(band["B11"][water])
    assert np.median(band["B08"][veg]) > 2 * np.median(band["B04"][veg])
    mndwi = (band["B03"] - band["B11"]) / (band["B03"] + band["B11"])
    assert (mndwi[water] > 0).mean() > 0.99 and np.median(mndwi[water]) > 0.5
    assert (mndwi[sand] < 0).mean() > 0.95
    assert 0.001 < np.median(band["B10"]) < 0.012 and band["B10"].max() < 0.03    # cirrus: very dark
    # L1C-like: the atmosphere brightens blue more than SWIR; all bands carry data (no zeros)
    assert np.median(band["B01"]) > np.median(band["B12"][water])
    assert (refl > 0).all()
    # the 60 m bands are blocky on the 10 m grid, the 10 m bands are not
    b09 = band["B09"][:252, :252].reshape(42, 6, 42, 6)
    assert np.allclose(b09, b09[:, :1, :, :1], atol=1.5e-4)
    assert not np.allclose(band["B08"][:6, :6], band["B08"][0, 0])


def test_spectra_table_follows_field_guide():
    sand = surface_spectrum(Surface.DRY_SAND)
    veg = surface_spectrum(Surface.VEGETATION)
    idx = {b: i for i, b in enumerate(L1C_BANDS)}
    assert sand[idx["B02"]] == pytest.approx(0.15) and sand[idx["B11"]] == pytest.approx(0.38)
    assert veg[idx["B05"]] == pytest.approx(0.10) and veg[idx["B07"]] == pytest.approx(0.30)
    assert veg[idx["B04"]] < veg[idx["B05"]] < veg[idx["B06"]] < veg[idx["B07"]] < veg[idx["B08"]]
    assert veg[idx["B12"]] < veg[idx["B8A"]] <= veg[idx["B08"]]     # interpolated between B08 and B11
    assert sand[idx["B10"]] == 0   # no surface signal in the cirrus band


def test_river_line_follows_water(demo):
    _, _, m = demo
    o = m.observations[0]
    data = json.loads(open(o.rivers).read())
    assert data["crs"]["properties"]["name"].endswith("CRS84")
    (feat,) = data["features"]
    assert feat["geometry"]["type"] == "LineString"
    with rasterio.open(o.scene) as src:
        line = _polygons_in(o.rivers, src.crs)[0][0]
        refl = src.read([3, 12]).astype(np.float32)
        grid = Grid.from_dataset(src)
    assert line.intersects(box(*grid.bounds)) and line.length > SIZE * 10 * 0.8
    mndwi = (refl[0] - refl[1]) / (refl[0] + refl[1])
    near = rasterio.features.rasterize([(line.buffer(1000), 1)], out_shape=grid.shape,
                                       transform=grid.transform).astype(bool)
    water = mndwi > 0.2
    assert water.sum() > 300
    # water pixels lie along the river line (tanks and pools aside)
    assert (water & near).sum() / water.sum() > 0.85


def test_quicklook_png(demo):
    _, _, m = demo
    o = m.observations[0]
    png = np.asarray(Image.open(o.scene.replace(".tif", ".png")))
    assert png.shape == (SIZE, SIZE, 3) and png.dtype == np.uint8
    assert png.std() > 20 and png.max() > 200
    refl = _read_refl(o.scene)
    mndwi = (refl[2] - refl[11]) / (refl[2] + refl[11])
    bright_sand = refl[11] > 0.3
    assert png[mndwi > 0.3].mean() < png[bright_sand].mean() - 50


def test_deterministic_per_seed(tmp_path):
    a = write_demo_data(tmp_path / "a", sites=2, size=96, seed=3)
    b = write_demo_data(tmp_path / "b", sites=2, size=96, seed=3)
    c = write_demo_data(tmp_path / "c", sites=2, size=96, seed=4)
    ma, mb, mc = (load_manifest(p) for p in (a, b, c))
    for oa, ob, oc in zip(ma.observations, mb.observations, mc.observations):
        assert np.array_equal(_read_refl(oa.scene), _read_refl(ob.scene))
        assert not np.array_equal(_read_refl(oa.scene), _read_refl(oc.scene))
        assert open(oa.annotations).read() == open(ob.annotations).read()
        assert open(oa.rivers).read() == open(ob.rivers).read()


def test_more_dates_per_site(tmp_path):
    dates = ["2021-01-01", "2021-03-01", "2021-05-01", "2021-07-01"]
    path = write_demo_data(tmp_path, sites=1, size=192, seed=1, dates=dates)
    m = load_manifest(path)
    assert [o.date.isoformat() for o in m.observations] == dates
    sizes = [_label_mask(o)[0].sum() for o in m.observations]    # site00 is a growing site
    assert sizes[0] > 0 and all(b > a for a, b in zip(sizes, sizes[1:]))


def test_make_scene_with_known_mine_mask(tmp_path):
    grid = utm_grid(85.85, 20.30, size=96)
    assert grid.crs.to_epsg() == 32645 and grid.res == (10.0, 10.0)
    mask = np.zeros(grid.shape, bool)
    mask[30:50, 40:47] = True        # inside the sandbar (columns 29..67)
    truth = make_scene(tmp_path / "s.tif", grid, mine_mask=mask, annotations=tmp_path / "m.geojson", seed=2)
    assert np.array_equal(truth.mine_mask, mask)
    with rasterio.open(tmp_path / "s.tif") as src:
        assert Grid.from_dataset(src).same_as(grid) and src.count == 13
        refl = src.read().astype(np.float32) / 10000
    geoms, conf = _polygons_in(tmp_path / "m.geojson", grid.crs)
    assert conf == ["High"] and len(geoms) == 1
    lab = rasterio.features.rasterize([(geoms[0], 1)], out_shape=grid.shape, transform=grid.transform).astype(bool)
    assert lab[mask].all() and lab.sum() < 2 * mask.sum()
    # mining differs from the sand around it: darker in SWIR (wet, pits)
    sand = np.zeros(grid.shape, bool)
    sand[30:50, 31:37] = True
    assert refl[11][mask].mean() < refl[11][sand].mean() - 0.03


def test_write_scene_offset_and_errors(tmp_path):
    grid = utm_grid(79.8, 21.1, size=32)
    data = np.full((13, 32, 32), 0.1234, np.float32)
    data[:, 0, 0] = 0                      # nodata pixel
    write_scene(tmp_path / "old.tif", data, grid, date="2021-06-01")
    write_scene(tmp_path / "new.tif", data, grid, date="2023-06-01")
    with rasterio.open(tmp_path / "old.tif") as a, rasterio.open(tmp_path / "new.tif") as b:
        assert a.read(4)[5, 5] == 1234 and b.read(4)[5, 5] == 2234
        assert a.read(4)[0, 0] == 0 and b.read(4)[0, 0] == 0
        assert a.tags()["RADIO_ADD_OFFSET"] == "0" and b.tags()["RADIO_ADD_OFFSET"] == "-1000"
    with pytest.raises(ValueError, match="shape"):
        write_scene(tmp_path / "bad.tif", np.zeros((13, 10, 10)), grid)
    assert not list(tmp_path.glob("*bad*")) and not list(tmp_path.glob(".*partial*"))
    truth = make_scene(tmp_path / "q.tif", utm_grid(79.8, 21.1, size=48), date="2023-01-05")
    ql = np.asarray(Image.open(scene_quicklook(tmp_path / "q.tif", tmp_path / "q.png"))).astype(float)
    assert ql.shape == (48, 48, 3) and ql.std() > 20
    water, sand = truth.surface == Surface.CLEAR_WATER, truth.surface == Surface.DRY_SAND
    assert ql[water].mean() < ql[sand].mean() - 60       # offset (1000) removed before the stretch
    empty = write_polygons(tmp_path / "none.geojson", np.zeros(grid.shape, bool), grid)
    assert json.loads(empty.read_text())["features"] == []


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(SandwatchError, match="--sites"):
        write_demo_data(tmp_path, sites=0)
    with pytest.raises(SandwatchError, match="YYYY-MM-DD"):
        write_demo_data(tmp_path, sites=1, size=64, dates=["2021-13-01"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(SandwatchError, match="not a folder"):
        write_demo_data(tmp_path / "file", sites=1, size=64)


def test_cli_demo_data(tmp_path, capsys):
    from sandwatch.cli.main import main

    assert main(["demo-data", "--help"]) == 0
    assert "sandwatch demo-data demo/" in capsys.readouterr().out
    assert main(["demo-data", str(tmp_path / "d"), "--sites", "1", "--size", "64", "--seed", "5",
                 "--dates", "2021-02-01,2021-04-01,2021-06-01"]) == 0
    m = load_manifest(tmp_path / "d" / "manifest.yaml")
    assert len(m.observations) == 3
    assert main(["demo-data", str(tmp_path / "e"), "--sites", "1", "--size", "64", "--dates", "soon"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_dates_per_site_mapping():
    specs = plan_sites(3, 128, 0, dates={"site01": ["2022-03-01", "2021-12-01", "2022-06-01"]})
    assert specs[0].dates == (dt.date(2021, 1, 15), dt.date(2021, 5, 15))   # default (matches the CLI help)
    assert specs[1].dates == (dt.date(2021, 12, 1), dt.date(2022, 3, 1), dt.date(2022, 6, 1))  # sorted
    assert plan_sites(3, 128, 0)[2].dates[0] == dt.date(2021, 1, 25)
