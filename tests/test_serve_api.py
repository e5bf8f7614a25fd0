"""``sandwatch serve`` through an HTTP client against the real app, on a small demo-like project.

The project (built once per session, :func:`serve_project`): ``sandwatch demo-data`` with two
sites and four dates, each scene's B01 set on the pixels of the site's active mining (the
demo's own truth), the marker U-Net of ``test_monitor_cli`` (predicts exactly those pixels),
and ``sandwatch monitor`` per site: a history with alerts, probability and mask COGs.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from sandwatch.cli.main import main

DATES = [dt.date(2021, 1, 10) + dt.timedelta(days=30 * i) for i in range(4)]
SIZE = 128
_BUILT: dict[str, Path] = {}


def build_project(root: Path) -> Path:
    from sandwatch.synthetic import SiteLandscape, plan_sites, write_demo_data
    from test_monitor_cli import marker_checkpoint

    demo = root / "data"
    write_demo_data(demo, sites=2, size=SIZE, seed=1, dates=DATES, progress=False)
    ckpt = marker_checkpoint(root / "marker.ckpt")
    for spec in plan_sites(2, SIZE, 1, DATES):
        land = SiteLandscape(spec)
        for k, date in enumerate(spec.dates):
            mask = np.zeros((SIZE, SIZE), bool)
            for cl in land.scene(k).clusters:
                if cl.active:
                    mask |= cl.mask
            with rasterio.open(demo / spec.name / f"{date}.tif", "r+") as ds:
                b01 = ds.read(1)
                b01[mask] = 6000
                ds.write(b01, 1)
        scenes = [str(demo / spec.name / f"{d}.tif") for d in DATES]
        assert main(["monitor", "--checkpoint", str(ckpt), "--site", spec.name, "--rivers",
                     str(demo / spec.name / "rivers.geojson"), "--scenes", *scenes,
                     "-o", str(root / "monitor" / spec.name), "--edge", "8", "-q"]) == 0
    return root


def project_dir(tmp_path_factory) -> Path:
    if "root" not in _BUILT:
        _BUILT["root"] = build_project(tmp_path_factory.mktemp("serve-project"))
    return _BUILT["root"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh copy per module (tests write labels and reviews)."""
    import shutil

    src = project_dir(tmp_path_factory)
    dst = tmp_path_factory.mktemp("serve-copy") / "proj"
    shutil.copytree(src, dst)
    _repoint_history(dst, src)
    return dst


def _repoint_history(dst: Path, src: Path) -> None:
    """The copied histories name files of the original folder: make them name the copy's."""
    for db in dst.glob("monitor/*/history.sqlite"):
        con = sqlite3.connect(db)
        with con:
            for col in ("scene", "observation_raster", "polygons"):
                con.execute(f"UPDATE observations SET {col} = replace({col}, ?, ?)", (str(src), str(dst)))
            con.execute("UPDATE alerts SET polygons = replace(polygons, ?, ?)", (str(src), str(dst)))
        con.close()


def client_for(root: Path, **config):
    from starlette.testclient import TestClient

    from sandwatch.serve import ServeConfig, create_app

    cfg = ServeConfig(**config)
    app = create_app(root, cfg)
    return TestClient(app, base_url=f"http://127.0.0.1:{cfg.port}", raise_server_exceptions=False), app


@pytest.fixture(scope="module")
def client(project):
    c, app = client_for(project)
    with c:
        yield c, app


def token_of(app) -> str:
    return app.state.token


def test_project_lists_sites_dates_and_file_keys(client, project):
    c, app = client
    data = c.get("/api/project").json()
    assert [s["name"] for s in data["sites"]] == ["site00", "site01"]
    assert data["alerts"] is True
    site = data["sites"][0]
    assert [d["date"] for d in site["dates"]] == [d.isoformat() for d in DATES]
    for d in site["dates"]:
        assert d["scene"] and d["probability"] and d["mask"] and d["polygons"]
        # keys, never paths
        assert "/" not in d["scene"] and app.state.project.file(d["probability"]).name.endswith(".prob.tif")
    lon0, lat0, lon1, lat1 = site["bounds"]
    with rasterio.open(project / "data" / "site00" / f"{DATES[0]}.tif") as ds:
        from rasterio.warp import transform_bounds

        assert (lon0, lat0, lon1, lat1) == pytest.approx(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds,
                                                                          densify_pts=21))


def test_page_is_offline_and_escapes_its_config(client):
    c, app = client
    page = c.get("/")
    assert page.status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")           # no CDN, no external URL
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for src in ("/static/vendor/leaflet/leaflet.js", "/static/vendor/leaflet-geoman/leaflet-geoman.min.js",
                "/static/app.js", "/static/vendor/leaflet/leaflet.css"):
        assert src in page.text
        r = c.get(src)
        assert r.status_code == 200 and len(r.content) > 1000
    assert token_of(app) in page.text


def decode_png(content: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(content)).convert("RGBA"))


def reference_tile(path: Path, z: int, x: int, y: int, bands=(1,)) -> np.ndarray:
    """rasterio's own reprojection of the raster onto the tile's web-mercator grid (nearest)."""
    import morecantile
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject

    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(x, y, z)
    out = np.zeros((len(bands), 256, 256), np.float64)
    with rasterio.open(path) as src:
        for i, band in enumerate(bands):
            reproject(rasterio.band(src, band), out[i], dst_transform=from_bounds(b.left, b.bottom, b.right, b.top,
                                                                                  256, 256),
                      dst_crs="EPSG:3857", resampling=Resampling.nearest, src_nodata=src.nodata, dst_nodata=0)
    return out


def centre_tile(app, site: str, z: int):
    import morecantile

    lon0, lat0, lon1, lat1 = app.state.project.sites[site].bounds
    return morecantile.tms.get("WebMercatorQuad").tile((lon0 + lon1) / 2, (lat0 + lat1) / 2, z)


@pytest.mark.parametrize("z", [14, 16])
def test_probability_and_mask_tiles_equal_a_rasterio_read_of_their_bounds(client, z):
    """The colour-mapped tile, turned back into probability values through the LUT, equals
    rasterio's nearest-neighbour reprojection of the COG onto the tile's bounds."""
    from sandwatch.serve.tiles import MASK_RGBA, PROB_LUT

    c, app = client
    entry = app.state.project.sites["site00"].dates[2]
    t = centre_tile(app, "site00", z)
    png = decode_png(c.get(f"/tiles/{entry.probability}/{t.z}/{t.x}/{t.y}.png").content)
    ref = reference_tile(app.state.project.file(entry.probability), t.z, t.x, t.y)[0]
    # invert the LUT: nearest LUT colour (alpha 0 = nodata or p = 0)
    lut = PROB_LUT[2:].astype(int)
    dist = np.abs(png[..., None, :3].astype(int) - lut[None, None, :, :3]).sum(-1)
    value = np.where(png[..., 3] == 0, 0, dist.argmin(-1) + 2)
    ref_v = np.where(ref <= 1, 0, ref)
    assert (ref_v > 0).sum() > 500, "the tile should show mining"
    agree = np.abs(value - ref_v) <= 2
    # resampling tolerance: at most 1 % of the mining pixels (a one-pixel shift is 2..3 %)
    assert (~agree).sum() <= 0.01 * (ref_v > 0).sum(), f"tile and rasterio read differ on {(~agree).sum()} pixels"
    mask_png = decode_png(c.get(f"/tiles/{entry.mask}/{t.z}/{t.x}/{t.y}.png").content)
    mref = reference_tile(app.state.project.file(entry.mask), t.z, t.x, t.y)[0]
    painted = (mask_png == MASK_RGBA).all(-1)
    assert (painted != (mref == 1)).sum() <= 0.01 * (mref == 1).sum() and painted.sum() > 500


def test_scene_tile_is_the_stretched_true_colour_of_the_scene(client):
    c, app = client
    entry = app.state.project.sites["site01"].dates[0]
    path = app.state.project.file(entry.scene)
    t = centre_tile(app, "site01", 15)
    png = decode_png(c.get(f"/tiles/{entry.scene}/{t.z}/{t.x}/{t.y}.png").content)
    sources, stretch = app.state.tiles.stretch_of(path)
    assert [i for _, i in sources] == [4, 3, 2]            # B04, B03, B02 of the 13-band file
    ref_dn = reference_tile(path, t.z, t.x, t.y, bands=(4, 3, 2))
    inside = ref_dn.min(axis=0) > 0
    assert inside.mean() > 0.2 and (png[..., 3] == 255).mean() == pytest.approx(inside.mean(), abs=0.01)
    both = inside & (png[..., 3] == 255)
    expected = stretch.apply(ref_dn).transpose(1, 2, 0)
    diff = np.abs(png[..., :3].astype(int) - expected.astype(int))[both]
    assert (diff <= 1).mean() >= 0.999
    assert png[..., :3][both].std() > 10                     # a picture, not a flat colour


def test_tile_outside_is_transparent_and_second_request_is_cached(client):
    from sandwatch.serve.tiles import EMPTY_PNG

    c, app = client
    key = app.state.project.sites["site00"].dates[0].probability
    r = c.get(f"/tiles/{key}/10/0/0.png")
    assert r.status_code == 200 and r.content == EMPTY_PNG
    t = centre_tile(app, "site00", 13)
    hits = app.state.tiles.hits
    first = c.get(f"/tiles/{key}/{t.z}/{t.x}/{t.y}.png").content
    assert c.get(f"/tiles/{key}/{t.z}/{t.x}/{t.y}.png").content == first
    assert app.state.tiles.hits == hits + 1
    assert c.get(f"/tiles/{key}/25/0/0.png").status_code == 404          # beyond the zoom range
    assert c.get(f"/tiles/{key}/3/9/0.png").status_code == 404           # not a tile of zoom 3


def test_aoi_is_the_buffered_river_of_the_history(client, project):
    import shapely
    from pyproj import Geod
    from shapely.geometry import shape

    c, app = client
    fc = c.get("/api/aoi", params={"site": "site00"}).json()
    geom = shape(fc["features"][0]["geometry"])
    site = app.state.project.sites["site00"]
    from sandwatch.vectors import to_wgs84

    expected = to_wgs84(shapely.wkt.loads(site.aoi_wkt), site.crs)
    assert geom.symmetric_difference(expected).area <= 1e-6 * expected.area
    area = abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0])
    assert 0.5e6 < area < 1.7e6          # 1280 m square scene: most of it lies within 1 km of the river


def test_review_is_stored_in_the_history_and_shown_by_monitor_report(client, project, capsys):
    c, app = client
    alerts = c.get("/api/alerts").json()["alerts"]
    assert {a["site"] for a in alerts} == {"site00", "site01"}
    site00 = [a for a in alerts if a["site"] == "site00" and not a["pixel"]]
    latest = {}
    for a in sorted(site00, key=lambda a: (a["date"], int(a["id"].split("-")[1]))):
        latest[a["region"]] = a
    target = latest[min(latest)]
    tok = {"X-Sandwatch-Token": token_of(app)}
    r = c.post(f"/api/alerts/{target['id']}/review", headers=tok,
               json={"decision": "rejected", "comment": "river bank, <b>not</b> a pit", "reviewer": "Asha"})
    assert r.status_code == 200, r.text
    assert r.json()["review"]["decision"] == "rejected"
    again = {a["id"]: a for a in c.get("/api/alerts").json()["alerts"]}[target["id"]]
    assert again["review"]["reviewer"] == "Asha" and again["review"]["comment"] == "river bank, <b>not</b> a pit"
    db = project / "monitor" / "site00" / "history.sqlite"
    con = sqlite3.connect(db)
    rows = con.execute("SELECT alert_id, decision, reviewer, comment FROM alert_decisions").fetchall()
    con.close()
    assert rows == [(int(target["id"].split("-")[1]), "rejected", "Asha", "river bank, <b>not</b> a pit")]
    capsys.readouterr()
    assert main(["monitor", "report", str(db)]) == 0
    out = capsys.readouterr().out
    assert "reviewed: rejected by Asha on" in out and "river bank, <b>not</b> a pit" in out
    # bad decisions are one line, nothing stored
    bad = c.post(f"/api/alerts/{target['id']}/review", headers=tok, json={"decision": "maybe", "reviewer": "A"})
    assert bad.status_code == 400 and "unknown decision" in bad.json()["error"]
    assert c.post("/api/alerts/h0-99999/review", headers=tok,
                  json={"decision": "accepted", "reviewer": "A"}).status_code == 400
    assert c.post(f"/api/alerts/{target['id']}/review", headers=tok,
                  json={"decision": "accepted", "reviewer": "  "}).status_code == 400


def square(lon, lat, d=0.0008):
    return [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]


def test_labels_saved_atomically_with_versions_and_read_by_labels_rasterize(client, project, tmp_path):
    c, app = client
    site = app.state.project.sites["site01"]
    entry = site.dates[1]
    before = json.loads(entry.labels_path.read_text())
    lon0, lat0, lon1, lat1 = site.bounds
    lon, lat = lon0 + 0.3 * (lon1 - lon0), lat0 + 0.3 * (lat1 - lat0)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square(lon, lat)},
         "properties": {"confidence_class": "Low", "note": "fresh <script>alert(1)</script> pit"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square(lon + 0.002, lat)},
         "properties": {"confidence_class": "Medium", "note": ""}}]}
    url, q = "/api/labels", {"site": "site01", "date": entry.date}
    r = c.post(url, params=q, json=fc, headers={"X-Sandwatch-Token": token_of(app)})
    assert r.status_code == 200, r.text
    assert r.json()["features"] == 2 and r.json()["version"].startswith(entry.labels_path.stem + ".")
    versions = c.get(url + "/versions", params=q).json()["versions"]
    assert versions == [r.json()["version"]]
    kept = entry.labels_path.parent / ".versions" / versions[0]
    assert json.loads(kept.read_text()) == before                 # the earlier file, unchanged
    back = c.get(url, params=q).json()
    assert [f["properties"]["confidence_class"] for f in back["features"]] == ["Low", "Medium"]
    assert back["features"][0]["properties"]["note"] == "fresh <script>alert(1)</script> pit"
    saved = json.loads(entry.labels_path.read_text())
    assert [f["properties"]["Confidence"] for f in saved["features"]] == ["Low", 0.75]
    # sandwatch labels reads it: confidence 0.5 and 0.75, the squares burnt on the scene's grid
    scene = app.state.project.file(entry.scene)
    out, weights = tmp_path / "mask.tif", tmp_path / "w.tif"
    assert main(["labels", "rasterize", str(entry.labels_path), "--like", str(scene), "-o", str(out),
                 "--weights", str(weights)]) == 0
    with rasterio.open(out) as m, rasterio.open(weights) as w:
        mask, wt = m.read(1), w.read(1)
        from rasterio.warp import transform as warp

        xs, ys = warp("EPSG:4326", m.crs, [lon + 0.0004, lon + 0.0024], [lat + 0.0004, lat + 0.0004])
        (r0, c0), (r1, c1) = [m.index(x, y) for x, y in zip(xs, ys)]
    assert mask[r0, c0] == 1 and mask[r1, c1] == 1
    assert wt[r0, c0] == pytest.approx(0.5) and wt[r1, c1] == pytest.approx(0.75)
    # ~ 0.0008 deg squares at 20 N: about 83 x 75 m -> 2 x (9..10 x 10..11) pixels with all-touched
    assert 2 * 60 <= mask.sum() <= 2 * 130
    # a bad feature: nothing written, one line naming it
    fc["features"][1]["properties"]["confidence_class"] = "Sure"
    bad = c.post(url, params=q, json=fc, headers={"X-Sandwatch-Token": token_of(app)})
    assert bad.status_code == 400 and "feature 1" in bad.json()["error"] and "High, Medium or Low" in bad.json()["error"]
    assert c.get(url + "/versions", params=q).json()["versions"] == versions
    assert not list(entry.labels_path.parent.glob(".*.partial*"))


def test_labelbox_export_then_import_round_trip(client):
    from sandwatch.serve.labelbox import from_ndjson

    c, app = client
    entry = app.state.project.sites["site00"].dates[0]
    q = {"site": "site00", "date": entry.date}
    labels = c.get("/api/labels", params=q).json()
    assert labels["features"], "the demo date has polygons"
    text = c.get("/api/labelbox.ndjson", params=q).text
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) >= len(labels["features"])
    assert {ln["dataRow"]["globalKey"] for ln in lines} == {f"{entry.date}.tif"}
    assert {ln["classifications"][0]["answer"]["name"] for ln in lines} <= {"High", "Medium", "Low"}
    fc, skipped = from_ndjson(text, f"{entry.date}.tif")
    assert skipped == 0 and len(fc["features"]) == len(lines)
    ring = lines[0]["polygon"]
    assert fc["features"][0]["geometry"]["coordinates"][0][0] == [ring[0]["x"], ring[0]["y"]]
    # another data row's lines are skipped; the import merges into the label file
    other = text.replace(f"{entry.date}.tif", "other-scene.tif").splitlines()[0]
    r = c.post("/api/labelbox", params=q, content=(text + other + "\n").encode(),
               headers={"X-Sandwatch-Token": token_of(app)})
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == len(lines) and r.json()["skipped"] == 1
    assert len(c.get("/api/labels", params=q).json()["features"]) == len(labels["features"]) + len(lines)
    bad = c.post("/api/labelbox", params=q, content=b"{not json\n", headers={"X-Sandwatch-Token": token_of(app)})
    assert bad.status_code == 400 and "line 1 is not JSON" in bad.json()["error"]
    for malformed in (b'{"polygon": [1, 2], "dataRow": {"globalKey": "x"}}\n',
                      b'{"data_row": {"id": "x"}, "projects": {"p": {"labels": [7]}}}\n'):
        bad = c.post("/api/labelbox", params=q, content=malformed, headers={"X-Sandwatch-Token": token_of(app)})
        assert bad.status_code == 400 and "Labelbox" in bad.json()["error"], bad.text


def test_labelbox_export_format_rows_are_read():
    from sandwatch.serve.labelbox import from_ndjson

    row = {"data_row": {"id": "x", "external_id": "2021-01-10.tif"}, "projects": {"p": {"labels": [{"annotations": {
        "objects": [{"name": "mining", "geojson": {"type": "Polygon", "coordinates": square(80.0, 20.0)},
                     "classifications": [{"name": "Confidence", "radio_answer": {"name": "Low"}}]}]}}]}}}
    fc, skipped = from_ndjson(json.dumps(row), "2021-01-10.tif")
    assert skipped == 0 and fc["features"][0]["properties"]["Confidence"] == "Low"
    assert fc["features"][0]["geometry"]["coordinates"] == square(80.0, 20.0)


def test_export_quicklook_is_a_stretched_rgb_cog_on_the_scene_grid(project, tmp_path, capsys):
    from sandwatch.imagery import open_scene
    from sandwatch.serve.quicklook import scene_stretch

    scene = project / "data" / "site00" / f"{DATES[0]}.tif"
    assert main(["export", "quicklook", str(scene), "-o", str(tmp_path / "q")]) == 0
    out = tmp_path / "q" / f"{DATES[0]}.quicklook.tif"
    with rasterio.open(out) as q, rasterio.open(scene) as s:
        assert (q.count, q.dtypes[0], q.crs, q.transform, q.shape) == (3, "uint8", s.crs, s.transform, s.shape)
        assert q.nodata == 0 and q.profile.get("tiled") and q.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        img = q.read()
        dn = s.read([4, 3, 2]).astype(np.float64)
    with open_scene(scene) as sc:
        expected = np.maximum(scene_stretch(sc).apply(dn), 1)
    assert np.abs(img.astype(int) - expected).max() <= 1
    assert img.mean() > 30 and img.std() > 15


def test_make_demo_layout_predictions_are_found_by_the_naming_rule(project, tmp_path):
    """`make demo` predicts scenes of several sites into one folder (names repeat: SITE-DATE);
    a prediction whose name fits but whose raster lies elsewhere is not taken."""
    import shutil

    from sandwatch.serve.project import Project

    root = tmp_path / "demo-out"
    shutil.copytree(project / "data", root / "data")
    scenes = [str(root / "data" / s / f"{DATES[0]}.tif") for s in ("site00", "site01")]
    assert main(["predict", str(project / "marker.ckpt"), *scenes, "-o", str(root / "predictions"), "--edge", "8",
                 "-q"]) == 0
    names = sorted(p.name for p in (root / "predictions").glob("*.prob.tif"))
    assert names == [f"site00-{DATES[0]}.prob.tif", f"site01-{DATES[0]}.prob.tif"]
    # a stray prediction named like site00's second date but of site01's raster: refused (no overlap)
    shutil.copy(root / "predictions" / names[1], root / "predictions" / f"{DATES[1]}.prob.tif")
    # `evaluate --checkpoint` names outputs by observation id
    shutil.copy(root / "predictions" / names[0], root / "predictions" / f"site00_{DATES[2]}.prob.tif")
    p = Project(root)
    assert p.file(p.sites["site00"].dates[2].probability).name == f"site00_{DATES[2]}.prob.tif"
    for site in ("site00", "site01"):
        e0 = p.sites[site].dates[0]
        assert p.file(e0.probability).name == f"{site}-{DATES[0]}.prob.tif"
        assert p.file(e0.mask).name == f"{site}-{DATES[0]}.mask.tif"
        assert p.file(e0.polygons).name == f"{site}-{DATES[0]}.polygons.geojson"
        assert e0.labels_path == root / "data" / site / f"{DATES[0]}_mining.geojson"
    assert p.sites["site00"].dates[1].probability is None
    assert p.file(p.sites["site01"].dates[1].probability).name == f"{DATES[1]}.prob.tif"


def test_each_worker_builds_the_same_app_with_the_shared_token(project, monkeypatch):
    """--workers N: uvicorn's workers build the app from the spec `run` leaves in the environment."""
    import dataclasses

    from starlette.testclient import TestClient

    from sandwatch.serve import SPEC_ENV, ServeConfig, app_from_env

    cfg = ServeConfig(workers=2, token="a-shared-token-for-all-workers")
    monkeypatch.setenv(SPEC_ENV, json.dumps({"project": str(project), "db": None,
                                             "config": dataclasses.asdict(cfg)}))
    apps = [app_from_env(), app_from_env()]
    assert {a.state.token for a in apps} == {"a-shared-token-for-all-workers"}
    keys = [TestClient(a, base_url="http://127.0.0.1:8765").get("/api/project").json() for a in apps]
    assert keys[0] == keys[1]                       # same file keys in every worker: tiles URLs work anywhere


def test_pixel_alerts_are_listed_with_confidence_and_a_map_rejection_reaches_the_alert_model(client, project):
    from sandwatch.monitor.history import History
    from sandwatch.monitor.history_alerts import rejected_keys

    c, app = client
    pixel = [a for a in c.get("/api/alerts").json()["alerts"] if a["pixel"] and a["site"] == "site00"]
    assert pixel, "the monitor run of the fixture records pixel alerts (sandwatch.alerts)"
    for a in pixel:
        assert 0 < a["confidence"] <= 1 and a["kind"].startswith("pixel alert, ") and a["area_ha"] >= 0.2
    target = pixel[0]
    tok = {"X-Sandwatch-Token": token_of(app)}
    db = project / "monitor" / "site00" / "history.sqlite"
    h = History(db, must_exist=True)
    try:
        site_id = next(s.id for s in h.sites() if s.name == "site00")
        assert rejected_keys(h, site_id) == set()
        r = c.post(f"/api/alerts/{target['id']}/review", headers=tok,
                   json={"decision": "rejected", "comment": "dredged channel", "reviewer": "Asha"})
        assert r.status_code == 200, r.text
        keys = rejected_keys(h, site_id)
        assert len(keys) == 1
        again = {a["id"]: a for a in c.get("/api/alerts").json()["alerts"]}[target["id"]]
        assert again["review"]["decision"] == "rejected" and again["review"]["reviewer"] == "Asha"
        # the reviewer changes their mind: the alert model no longer skips the region
        r = c.post(f"/api/alerts/{target['id']}/review", headers=tok, json={"decision": "accepted", "reviewer": "Asha"})
        assert r.status_code == 200 and rejected_keys(h, site_id) == set()
        con = sqlite3.connect(db)
        rows = con.execute("SELECT alert_id, event_key, decision FROM alert_decisions WHERE event_key IS NOT NULL "
                           "ORDER BY id").fetchall()
        con.close()
        assert rows == [(None, next(iter(keys)), "rejected"), (None, next(iter(keys)), "accepted")]
    finally:
        h.close()


def test_a_rewritten_scene_is_stretched_again(tmp_path):
    import os

    from sandwatch.grid import Grid
    from sandwatch.serve.tiles import TileRenderer
    from sandwatch.synthetic import make_scene

    grid = Grid.from_bounds("EPSG:32644", 400000, 2200000, 400640, 2200640, 10)
    path = tmp_path / "scene.tif"
    make_scene(path, grid, seed=1)
    tiles = TileRenderer(project=None)
    first = tiles.stretch_of(path)
    assert tiles.stretch_of(path) is first                      # measured once per version
    make_scene(path, grid, seed=2)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later version of the file
    assert tiles.stretch_of(path) is not first


def test_label_saves_at_once_each_keep_the_others_file_as_a_version(tmp_path):
    import threading

    from sandwatch.serve.annotate import list_versions, save_labels

    path = tmp_path / "2023-01-05_mining.geojson"

    def fc(i):
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square(80.0 + 0.01 * i, 20.0)},
             "properties": {"confidence_class": "High", "note": f"save {i}"}}]}

    save_labels(path, fc(0))
    n = 12
    start = threading.Barrier(n)

    def save(i):
        start.wait()
        save_labels(path, fc(i))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(1, n + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    notes = [json.loads((path.parent / ".versions" / v).read_text())["features"][0]["properties"]["note"]
             for v in list_versions(path)]
    notes.append(json.loads(path.read_text())["features"][0]["properties"]["note"])
    assert sorted(notes) == sorted(f"save {i}" for i in range(n + 1))     # every save kept exactly once
