"""Labels never turn into an empty mask in silence.

* Projected coordinates in a GeoJSON without a ``crs`` member (QGIS exports): the scene's CRS
  when they fall on it (one warning saying so), a one-line error when they do not.
* A label file whose polygons all miss their scene: an error in ``train`` and ``dataset
  validate`` (a warning with ``--allow-empty`` / ``data.allow_empty_labels``); a file with no
  features stays a negative scene, and says so once per file per run.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError, forget_warnings
from sandwatch.labels import EmptyVectorWarning, rasterize_labels

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def box(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def feature_collection(path, geoms, crs=None):
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"Confidence": "High"},
                                                     "geometry": g} for g in geoms]}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(fc))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def lines(err, prefix):
    return [ln for ln in err.splitlines() if ln.startswith(prefix)]


# ---- projected coordinates without a CRS ---------------------------------------------------------------
def test_projected_geojson_without_crs_uses_the_scenes_crs_with_a_warning(capsys, scene, tmp_path):
    path, grid = scene
    polys = [box(400100, 2200100, 400500, 2200500), box(400800, 2200900, 401000, 2201000)]
    bare = feature_collection(tmp_path / "qgis.geojson", polys)
    named = feature_collection(tmp_path / "named.geojson", polys, crs="EPSG:32644")
    code, out, err = run(capsys, "labels", "rasterize", bare, "--like", path, "-o", tmp_path / "bare.tif")
    assert code == 0
    warn = lines(err, "warning: ")
    assert len(warn) == 1 and str(bare) in warn[0] and "scene's CRS EPSG:32644 is assumed" in warn[0]
    assert run(capsys, "labels", "rasterize", named, "--like", path, "-o", tmp_path / "named.tif")[0] == 0
    with rasterio.open(tmp_path / "bare.tif") as a, rasterio.open(tmp_path / "named.tif") as b:
        got, want = a.read(1), b.read(1)
    assert want.sum() == 1600 + 200 and np.array_equal(got, want)   # 40x40 + 20x10 pixels (edges on pixel edges)
    assert "1800 mine pixels" in out


def test_projected_geojson_without_crs_off_the_scene_is_one_line(capsys, scene, tmp_path):
    path, _ = scene
    bare = feature_collection(tmp_path / "qgis.geojson", [box(600100, 2200100, 600500, 2200500)])
    out_tif = tmp_path / "mask.tif"
    code, _, err = run(capsys, "labels", "rasterize", bare, "--like", path, "-o", out_tif)
    err_lines = lines(err, "error: ")
    assert code == 2 and len(err_lines) == 1 and len(err.strip().splitlines()) == 1
    assert str(bare) in err_lines[0] and "not longitude/latitude" in err_lines[0] and "names no CRS" in err_lines[0]
    assert "add a 'crs' member" in err_lines[0]
    assert not out_tif.exists()


def test_rivers_without_crs_give_the_same_aoi(capsys, scene, tmp_path):
    path, _ = scene
    line = {"type": "LineString", "coordinates": [[400000, 2200600], [401280, 2200700]]}
    bare = feature_collection(tmp_path / "rivers.geojson", [line])
    named = feature_collection(tmp_path / "rivers_named.geojson", [line], crs="EPSG:32644")
    code, out_bare, err = run(capsys, "aoi", "--like", path, "--rivers", bare, "--buffer", "200", "-o", tmp_path / "a.tif")
    assert code == 0 and len(lines(err, "warning: ")) == 1 and "is assumed" in err
    assert run(capsys, "aoi", "--like", path, "--rivers", named, "--buffer", "200", "-o", tmp_path / "b.tif")[0] == 0
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.read(1).sum() > 1000


# ---- empty files: a negative, said once per file per run ------------------------------------------------
def test_no_features_is_warned_once_per_file_per_run(scene, tmp_path):
    _, grid = scene
    empty = feature_collection(tmp_path / "none.geojson", [])
    forget_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            mask, weight = rasterize_labels(empty, grid)
            assert mask.sum() == 0 and (weight == 1).all()
    assert [w.category for w in caught if w.category is EmptyVectorWarning] == [EmptyVectorWarning]
    forget_warnings()     # a new run (each CLI command starts one)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rasterize_labels(empty, grid)
    assert sum(w.category is EmptyVectorWarning for w in caught) == 1


# ---- labels that miss their scene: dataset validate and train ------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo-data", str(root), "--sites", "4", "--size", "128"]) == 0
    assert main(["dataset", "split", str(root / "manifest.yaml"), "--clusters", "2"]) == 0
    return root


def swapped_manifest(demo, tmp_path) -> tuple[Path, Path]:
    """site00's first scene gets site01's label file (another place: its polygons miss the scene)."""
    data = yaml.safe_load((demo / "manifest.yaml").read_text())
    obs = data["observations"][0]
    other = next(o for o in data["observations"] if o["site"] == "site01")
    wrong = demo / other["annotations"]
    assert json.loads(wrong.read_text())["features"], "the demo's site01 has mining polygons"
    obs["annotations"] = str(wrong)
    for o in data["observations"]:
        for key in ("scene", "rivers", "annotations", "s1"):
            if o.get(key) and not Path(o[key]).is_absolute():
                o[key] = str(demo / o[key])
    path = tmp_path / "swapped.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, wrong


def test_dataset_validate_refuses_labels_that_miss_their_scene(capsys, demo, tmp_path):
    code, out, err = run(capsys, "dataset", "validate", demo / "manifest.yaml")
    assert code == 0 and "valid, 8 observations" in out
    # the never-mined site has empty label files: one warning per file, not per read
    empties = lines(err, "warning: ")
    assert len(empties) == 2 and all("has no features" in w for w in empties)
    assert len(set(empties)) == 2

    manifest, wrong = swapped_manifest(demo, tmp_path)
    code, out, err = run(capsys, "dataset", "validate", manifest)
    err_lines = lines(err, "error: ")
    assert code == 2 and len(err_lines) == 1
    assert str(wrong) in err_lines[0] and "none of its 1 polygon(s) overlaps the scene" in err_lines[0]
    assert "site00_2021-01-15" in err_lines[0] and "--allow-empty" in err_lines[0]

    code, out, err = run(capsys, "dataset", "validate", manifest, "--allow-empty")
    assert code == 0 and "1 label file(s) miss their scene (allowed)" in out
    assert any(str(wrong) in w and "used as a negative scene" in w for w in lines(err, "warning: "))


def test_train_refuses_labels_that_miss_their_scene(capsys, demo, tmp_path):
    manifest, wrong = swapped_manifest(demo, tmp_path)
    code, out, err = run(capsys, "train", CONFIG, "--set", f"manifest={manifest}", "--set", f"run_dir={tmp_path / 'run'}")
    err_lines = lines(err, "error: ")
    assert code == 2 and len(err_lines) == 1
    assert str(wrong) in err_lines[0] and "data.allow_empty_labels: true" in err_lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_allows_them_as_negatives_when_told(demo, tmp_path):
    from sandwatch.train.config import load_config
    from sandwatch.train.runner import prepare

    manifest, wrong = swapped_manifest(demo, tmp_path)
    cfg = load_config(CONFIG, [f"manifest={manifest}", f"run_dir={tmp_path / 'run'}", "data.allow_empty_labels=true",
                               "data.num_workers=0"])
    forget_warnings()
    with pytest.warns(UserWarning, match="used as a negative scene"):
        prepare(cfg)
    cfg = load_config(CONFIG, [f"manifest={manifest}", f"run_dir={tmp_path / 'run'}", "data.num_workers=0"])
    with pytest.raises(SandwatchError, match="overlaps the scene"):
        prepare(cfg)


@pytest.mark.slow
def test_demo_training_says_no_features_once_per_file(demo, tmp_path):
    """Two epochs with two DataLoader workers: the never-mined site's two empty label files are
    read by the main process and every worker of every epoch, and said once each."""
    import os
    import subprocess
    import sys

    shutil.copytree(demo, tmp_path / "demo")
    res = subprocess.run([sys.executable, "-m", "sandwatch", "train", str(CONFIG),
                          "--set", f"manifest={tmp_path / 'demo' / 'manifest.yaml'}", "--set", f"run_dir={tmp_path / 'run'}",
                          "--set", "optim.epochs=2", "--set", "trainer.progress_bar=false"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    said = [ln for ln in res.stderr.splitlines() if "has no features" in ln]
    assert len(said) == 2 and len(set(said)) == 2, said
