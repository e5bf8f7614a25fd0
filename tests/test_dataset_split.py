"""Dataset manifests: import of the original format, load errors, geographic split, CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import shared_path
from sandwatch.cli.main import main
from sandwatch.dataset import Manifest, Observation, geographic_split, load_manifest, save_manifest, split_table
from sandwatch.dataset.importers import import_original_manifest, site_of, url_to_local
from sandwatch.dataset.split import choose_validation, haversine_km
from sandwatch.errors import SandwatchError

ORIGINAL = ("sandmining-watch-manifest", "dataset_v0.1.0_2023-11-16.json")


def _original() -> Path:
    return shared_path(*ORIGINAL)


# ---- import -------------------------------------------------------------------------------
def test_import_shared_manifest_keeps_urls_sites_and_clusters(tmp_path):
    src = _original()
    raw = json.loads(src.read_text())
    m = import_original_manifest(src, tmp_path / "m.yaml", imagery="s2_l1c")
    assert len(m.observations) == 80
    assert len(m.sites()) == 40
    first = m.observations[0]
    assert first.id == raw[0]["name"] == "Kathajodi_Cuttack_85-85_20-44_2022-05-01"
    assert first.site == "Kathajodi_Cuttack_85-85_20-44"
    assert first.date == dt.date(2022, 5, 1)
    assert first.scene == raw[0]["uri_to_s2_l1c"]
    assert first.annotations == raw[0]["uri_to_annotations"]
    assert first.aoi == raw[0]["uri_to_rivers"] and first.aoi.endswith("_rivers_1000m.geojson")
    assert first.rivers is None
    assert len(first.bands) == 13
    assert [o.cluster for o in m.observations] == [r["cluster_id"] for r in raw]
    assert (first.latitude, first.longitude) == (20.44, 85.85)
    # written file loads back identically (URLs untouched)
    back = load_manifest(tmp_path / "m.yaml")
    assert back.model_dump() == m.model_dump()
    # the Godavari site with three dates is one site
    assert sum(o.site == "Godavari_EastGodavari_80-89_17-72" for o in m.observations) == 3


def test_import_imagery_choice_and_base_dir(tmp_path):
    src = _original()
    raw = json.loads(src.read_text())
    # a local mirror holding one file under BUCKET/PATH
    url = raw[0]["uri_to_rgb"]
    rel = url.split("storage.googleapis.com/")[1]  # BUCKET/PATH
    local = tmp_path / "mirror" / rel
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    m = import_original_manifest(src, imagery="rgb", base_dir=tmp_path / "mirror")
    assert m.observations[0].scene == str(local.resolve())
    assert m.observations[0].bands == ["R", "G", "B"]
    # files not mirrored map to DIR/PATH (bucket stripped)
    assert m.observations[1].scene == str((tmp_path / "mirror" / raw[1]["uri_to_rgb"].split("sand_mining_median/")[1]).resolve())
    assert m.observations[1].scene.endswith("_rgb.tif")


def test_url_to_local_rules(tmp_path):
    assert url_to_local("gs://bkt/a/b.tif", tmp_path) == str(tmp_path / "a" / "b.tif")
    (tmp_path / "b.tif").write_bytes(b"")
    assert url_to_local("https://example.org/x/y/b.tif", tmp_path) == str(tmp_path / "b.tif")
    assert url_to_local("/abs/path.tif", tmp_path) == "/abs/path.tif"
    assert url_to_local(None, tmp_path) is None
    assert site_of("Ken_Banda_80-35_25-68_2022-06-01") == "Ken_Banda_80-35_25-68"


def test_import_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SandwatchError, match=str(bad)):
        import_original_manifest(bad)
    with pytest.raises(SandwatchError, match="no such file"):
        import_original_manifest(tmp_path / "missing.json")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps([{"name": "a_2020-01-01", "date": "2020-01-01"}]))
    with pytest.raises(SandwatchError, match="lacks"):
        import_original_manifest(partial)
    with pytest.raises(SandwatchError, match="imagery"):
        import_original_manifest(partial, imagery="s1")


# ---- load errors ----------------------------------------------------------------------------
def test_load_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(SandwatchError, match="missing.yaml: no such manifest file"):
        load_manifest(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("observations: [\n  - site: a\n  date: :")
    with pytest.raises(SandwatchError, match=r"bad.yaml: is not valid YAML"):
        load_manifest(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"observations": [
        {"site": "a", "date": "2020-01-01", "scene": "a.tif", "colour": "red"}]}))
    with pytest.raises(SandwatchError, match=r"unknown.yaml: invalid manifest at observations.0.colour") as e:
        load_manifest(unknown)
    assert "\n" not in str(e.value)


# ---- split on synthetic coordinates -----------------------------------------------------------
def _manifest(points: list[tuple[str, float, float]], dates: int = 2) -> Manifest:
    obs = []
    for site, lat, lon in points:
        for d in range(dates):
            obs.append(Observation(site=site, date=dt.date(2021, 1 + d, 1), scene=f"/x/{site}_{d}.tif",
                                   latitude=lat, longitude=lon))
    return Manifest(observations=obs)


def test_haversine_known_distance():
    # one degree of latitude is about 111.2 km; Delhi-Mumbai about 1150 km
    d = haversine_km(np.array([[0.0, 0.0], [1.0, 0.0], [28.61, 77.21], [19.08, 72.88]]))
    assert d[0, 1] == pytest.approx(111.19, abs=0.05)
    assert d[2, 3] == pytest.approx(1150, rel=0.02)


def test_two_far_groups_never_share_a_side():
    rng = np.random.default_rng(1)
    north = [(f"n{i}", 28 + rng.uniform(-0.3, 0.3), 77 + rng.uniform(-0.3, 0.3)) for i in range(5)]
    south = [(f"s{i}", 12 + rng.uniform(-0.3, 0.3), 78 + rng.uniform(-0.3, 0.3)) for i in range(5)]
    m = _manifest(north + south)
    for seed in range(5):
        out = geographic_split(m, clusters=2, val_fraction=0.3, seed=seed)
        sides = {o.site[0]: set() for o in out.observations}
        for o in out.observations:
            sides[o.site[0]].add(o.split)
        assert len(sides["n"]) == 1 and len(sides["s"]) == 1
        assert sides["n"] != sides["s"]
        clusters = {o.site[0]: {p.cluster for p in out.observations if p.site[0] == o.site[0]} for o in out.observations}
        assert clusters["n"] != clusters["s"] and all(len(c) == 1 for c in clusters.values())
        # cluster 0 is the western one (north group at 77 E < 78 E)
        assert clusters["n"] == {0}
    # the input is not modified
    assert all(o.split is None and o.cluster is None for o in m.observations)


def test_identical_coordinates_stay_together():
    pts = [("a", 20.0, 80.0), ("b", 20.0, 80.0), ("c", 25.0, 85.0), ("d", 15.0, 75.0)]
    out = geographic_split(_manifest(pts), clusters=3, val_fraction=0.25, seed=3)
    ca = {o.cluster for o in out.observations if o.site in "ab"}
    assert len(ca) == 1
    # 3 distinct locations: 4 clusters is too many even though there are 4 sites
    with pytest.raises(SandwatchError, match="3 distinct locations"):
        geographic_split(_manifest(pts), clusters=4)


def test_split_errors():
    m = _manifest([("a", 20, 80), ("b", 21, 81), ("c", 22, 82)])
    with pytest.raises(SandwatchError, match="more than the 3 sites"):
        geographic_split(m, clusters=4)
    for f in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(SandwatchError, match="between 0 and 1"):
            geographic_split(m, clusters=2, val_fraction=f)
    no_coords = Manifest(observations=[Observation(site="x", date="2020-01-01", scene="/nonexistent/x.tif")])
    with pytest.raises(SandwatchError, match="site x: has no latitude/longitude"):
        geographic_split(no_coords, clusters=1 + 1)


def test_choose_validation_rule():
    sizes = {0: 10, 1: 10, 2: 10, 3: 10, 4: 10}
    val = choose_validation(sizes, 0.2, seed=0)
    assert len(val) == 1
    assert choose_validation(sizes, 0.2, seed=0) == val
    assert len({frozenset(choose_validation(sizes, 0.2, seed=s)) for s in range(20)}) > 1
    # a cluster that overshoots by more than it fills is skipped for a closer one
    assert choose_validation({0: 60, 1: 20, 2: 20}, 0.2, seed=0) in ({1}, {2})
    # never all clusters in validation
    assert len(choose_validation({0: 1, 1: 1}, 0.9, seed=0)) == 1


# ---- split on the shared manifest --------------------------------------------------------------
def test_split_shared_manifest_k9_by_location_and_deterministic():
    m = import_original_manifest(_original())
    a = geographic_split(m, clusters=9, val_fraction=0.2, seed=0)
    b = geographic_split(m, clusters=9, val_fraction=0.2, seed=0)
    assert [(o.cluster, o.split) for o in a.observations] == [(o.cluster, o.split) for o in b.observations]
    assert {o.cluster for o in a.observations} == set(range(9))
    for key in (lambda o: o.site, lambda o: (o.latitude, o.longitude)):
        sides: dict = {}
        for o in a.observations:
            sides.setdefault(key(o), set()).add(o.split)
        assert all(len(s) == 1 for s in sides.values())
    clusters: dict = {}
    for o in a.observations:
        clusters.setdefault(o.cluster, set()).add(o.split)
    assert all(len(s) == 1 for s in clusters.values())
    n_val = len(a.split_of("val"))
    assert 0.1 <= n_val / 80 <= 0.3
    rows = split_table(a)
    assert sum(r.observations for r in rows) == 80 and sum(r.sites for r in rows) == 40
    # some seed gives a different split (the seed matters)
    splits = {tuple(o.split for o in geographic_split(m, 9, 0.2, seed=s).observations) for s in range(6)}
    assert len(splits) > 1


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_import_split_validate(tmp_path, capsys):
    out = tmp_path / "m.yaml"
    assert main(["dataset", "import", str(_original()), "-o", str(out), "--imagery", "rgb"]) == 0
    assert "80 observations at 40 sites" in capsys.readouterr().out
    split_out = tmp_path / "split.yaml"
    assert main(["dataset", "split", str(out), "--clusters", "9", "--seed", "1", "-o", str(split_out)]) == 0
    text = capsys.readouterr().out
    assert "cluster" in text and "val:" in text and "train:" in text
    m = load_manifest(split_out)
    assert all(o.split in ("train", "val") for o in m.observations)
    assert all(o.split is None for o in load_manifest(out).observations)  # -o leaves the input alone
    # in place
    assert main(["dataset", "split", str(out), "--clusters", "5"]) == 0
    capsys.readouterr()
    assert {o.cluster for o in load_manifest(out).observations} == set(range(5))
    # URLs are not checked by validate
    assert main(["dataset", "validate", str(out)]) == 0
    assert "valid, 80 observations" in capsys.readouterr().out
    # user errors: one line, exit 2
    assert main(["dataset", "split", str(out), "--clusters", "41"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use at most 40 clusters" in err[0]


def test_cli_validate_reports_missing_files(tmp_path, capsys):
    m = _manifest([("a", 20, 80)])
    path = save_manifest(m, tmp_path / "m.yaml")
    assert main(["dataset", "validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert "2 referenced file(s) do not exist" in captured.err
    assert main(["dataset", "validate", str(path), "--no-check-files"]) == 0


def test_cli_help_teaches():
    from click.testing import CliRunner

    from sandwatch.cli.dataset import dataset

    r = CliRunner().invoke(dataset, ["--help"])
    assert r.exit_code == 0 and "observations:" in r.output and "sandwatch dataset split" in r.output
    for sub in ("import", "split", "stats", "validate"):
        r = CliRunner().invoke(dataset, [sub, "--help"])
        assert r.exit_code == 0 and "Example" in r.output


def test_site_coordinates_from_scene_centre_only_when_missing(tmp_path):
    import rasterio
    from affine import Affine
    from pyproj import Transformer

    def scene(path, left, top):
        with rasterio.open(path, "w", driver="GTiff", width=40, height=20, count=1, dtype="uint16",
                           crs="EPSG:32644", transform=Affine(10, 0, left, 0, -10, top), nodata=0) as ds:
            ds.write(np.full((1, 20, 40), 500, np.uint16))
            ds.descriptions = ("B02",)
        return str(path)

    far = scene(tmp_path / "far.tif", 700_000, 3_000_000)
    near = scene(tmp_path / "near.tif", 300_000, 2_000_000)
    m = Manifest(observations=[
        Observation(site="far", date="2021-01-01", scene=far),
        Observation(site="near", date="2021-01-01", scene=near),
        # has coordinates: its (missing) scene is never opened
        Observation(site="given", date="2021-01-01", scene=str(tmp_path / "absent.tif"), latitude=18.1, longitude=78.2),
    ])
    out = geographic_split(m, clusters=3, val_fraction=0.3, seed=0)
    to_ll = Transformer.from_crs("EPSG:32644", "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(700_000 + 200, 3_000_000 - 100)  # centre of the 400 m x 200 m scene
    far_obs = out.observations[0]
    assert far_obs.latitude == pytest.approx(lat, abs=1e-4) and far_obs.longitude == pytest.approx(lon, abs=1e-4)
    assert (out.observations[2].latitude, out.observations[2].longitude) == (18.1, 78.2)
    assert len({o.cluster for o in out.observations}) == 3
