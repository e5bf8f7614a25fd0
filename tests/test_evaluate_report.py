"""Evaluation over a manifest split, the report and the CLI, on tiny synthetic rasters.

Scene: 100 rows x 80 columns, 10 m pixels in EPSG:32633. Labels: pixel-aligned rectangles
(pixel-centre rule => known counts). Probabilities: uint8 in predict's encoding
(value = 1 + round(254 p), 0 = nodata) or float32.
"""

from __future__ import annotations

import json
import struct

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from sandwatch.cli.main import main as cli_main
from sandwatch.dataset.manifest import Manifest, Observation, save_manifest
from sandwatch.evaluate import EvalConfig, evaluate_predictions, find_predictions, write_report
from sandwatch.evaluate.core import border_mask
from sandwatch.grid import Grid, Window

H, W, RES = 100, 80, 10.0
X0, Y0 = 500000.0, 5800000.0
CRS = "EPSG:32633"
TRANSFORM = Affine(RES, 0, X0, 0, -RES, Y0)


def px_box(r0, c0, r1, c1):
    """Polygon covering pixel rows r0..r1-1 and columns c0..c1-1."""
    return box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


def write_prob(path, prob, dtype="uint8"):
    """Write probabilities (NaN = nodata) the way sandwatch.predict does."""
    profile = dict(driver="GTiff", width=prob.shape[1], height=prob.shape[0], count=1, crs=CRS, transform=TRANSFORM,
                   tiled=True, blockxsize=16, blockysize=16)
    nan = np.isnan(prob)
    with rasterio.open(path, "w", dtype=dtype, nodata=0 if dtype == "uint8" else np.nan, **profile) as ds:
        if dtype == "uint8":
            ds.write(np.where(nan, 0, 1 + np.rint(np.nan_to_num(prob) * 254)).astype(np.uint8), 1)
            ds.scales, ds.offsets = (1 / 254,), (-1 / 254,)
        else:
            ds.write(prob.astype(np.float32), 1)
    return path


def write_scene(path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (3, H, W)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM, nodata=0) as ds:
        ds.write(rgb)
        for i, d in enumerate(("red", "green", "blue"), 1):
            ds.set_band_description(i, d)
    return path


@pytest.fixture
def dataset(tmp_path):
    """Two val observations (clusters 0 and 1) and one train observation."""
    obs = []
    for k, (oid, cluster, split) in enumerate([("a", 0, "val"), ("b", 1, "val"), ("t", 2, "train")]):
        scene = write_scene(tmp_path / f"{oid}.tif")
        # mine: rows 40..59, cols 20..39 (400 px, High) and rows 0..9, cols 0..9 (100 px, in the border, Low)
        gpd.GeoDataFrame({"Confidence": ["High", "Low"]},
                         geometry=[px_box(40, 20, 60, 40), px_box(0, 0, 10, 10)], crs=CRS).to_file(
            tmp_path / f"{oid}_mining.geojson", driver="GeoJSON")
        # AOI: the left half, columns 0..39
        gpd.GeoDataFrame(geometry=[px_box(0, 0, H, 40)], crs=CRS).to_file(tmp_path / f"{oid}_aoi.geojson",
                                                                          driver="GeoJSON")
        obs.append(Observation(id=oid, site=f"site{k}", date="2021-01-15", scene=str(scene),
                               annotations=str(tmp_path / f"{oid}_mining.geojson"),
                               aoi=str(tmp_path / f"{oid}_aoi.geojson"), bands=["R", "G", "B"],
                               cluster=cluster, split=split))
    obs.append(Observation(id="c", site="site9", date="2021-02-01", scene=str(tmp_path / "a.tif"), annotations=None,
                           aoi=str(tmp_path / "a_aoi.geojson"), bands=["R", "G", "B"], cluster=1, split="val"))
    manifest = Manifest(observations=obs)
    path = save_manifest(manifest, tmp_path / "manifest.yaml")
    truth = np.zeros((H, W), bool)
    truth[40:60, 20:40] = True
    truth[0:10, 0:10] = True
    return path, truth


def perfect_maps(folder, truth, dtype="uint8"):
    folder.mkdir(exist_ok=True)
    prob = np.where(truth, 0.9, 0.1)
    for oid in ("a", "b", "t"):
        write_prob(folder / f"{oid}_prob.tif", prob, dtype)
    write_prob(folder / "c_prob.tif", np.full((H, W), 0.2), dtype)
    return folder


def test_border_mask_counts():
    grid = Grid(CRS, TRANSFORM, W, H)
    full = border_mask(grid, grid.full_window(), 30)
    assert (~full).sum() == (H - 60) * (W - 60)
    # a window straddling the border agrees with the full mask
    win = Window(20, 25, 30, 40)
    assert np.array_equal(border_mask(grid, win, 30), full[win.slices()])


def test_border_and_aoi_change_exactly_the_expected_pixels(tmp_path, dataset):
    manifest, truth = dataset
    rng = np.random.default_rng(1)
    prob = rng.random((H, W))
    prob[5, 15] = np.nan  # one nodata pixel (in the border, in the AOI, not mine)
    prob[50, 45] = np.nan  # one nodata pixel inside the scored area, outside the AOI
    maps = tmp_path / "maps"
    maps.mkdir()
    for oid in "abtc":
        write_prob(maps / f"{oid}_prob.tif", prob, "float32")
    cfg0 = EvalConfig(border=0, block=32, progress=False)
    r0 = evaluate_predictions(manifest, maps, split="val", config=cfg0).images["a"]
    assert r0.accumulators["image"].metrics().n_pixels == H * W - 2
    assert r0.accumulators["image"].metrics().n_positive == 500
    # AOI = columns 0..39 (4000 px), minus the nodata pixel at (5, 15)
    assert r0.accumulators["aoi"].metrics().n_pixels == 40 * H - 1
    assert r0.accumulators["aoi"].metrics().n_positive == 500
    cfg = EvalConfig(border=30, block=32, progress=False)
    r = evaluate_predictions(manifest, maps, split="val", config=cfg).images["a"]
    m_img, m_aoi = r.accumulators["image"].metrics(), r.accumulators["aoi"].metrics()
    assert m_img.n_pixels == 40 * 20 - 1          # rows 30..69 x cols 30..49, minus (50, 45)
    assert m_img.n_positive == 20 * 10           # rows 40..59 x cols 30..39: the Low box is in the border
    assert m_aoi.n_pixels == 40 * 10              # rows 30..69 x cols 30..39
    assert m_aoi.n_positive == 20 * 10
    # the AP of the cropped image equals sklearn on exactly those pixels
    from sklearn.metrics import average_precision_score

    keep = np.zeros((H, W), bool)
    keep[30:70, 30:50] = True
    keep &= np.isfinite(prob)
    assert m_img.ap == pytest.approx(average_precision_score(truth[keep], prob[keep]), abs=1e-9)


def test_low_confidence_modes(tmp_path, dataset):
    manifest, truth = dataset
    maps = perfect_maps(tmp_path / "maps", truth)
    res = {}
    for mode in ("count", "exclude", "weight"):
        cfg = EvalConfig(border=0, low_confidence=mode, progress=False)
        res[mode] = evaluate_predictions(manifest, maps, config=cfg).images["a"].accumulators["image"].metrics()
    assert res["count"].n_positive == 500 and res["count"].positive_weight == 500
    assert res["exclude"].n_positive == 400 and res["exclude"].n_pixels == H * W - 100
    assert res["weight"].n_positive == 500 and res["weight"].positive_weight == pytest.approx(400 + 0.5 * 100)
    for m in res.values():
        assert m.ap == pytest.approx(1.0) and m.f1 == pytest.approx(1.0)


def test_report_renders_with_numbers(tmp_path, dataset):
    manifest, truth = dataset
    maps = perfect_maps(tmp_path / "good", truth)
    # a worse model: misses half the mine rectangle and adds a false patch
    bad = tmp_path / "bad"
    bad.mkdir()
    p = np.where(truth, 0.9, 0.1)
    p[40:60, 30:40] = 0.3
    p[70:80, 50:70] = 0.8
    for oid in "abt":
        write_prob(bad / f"{oid}_prob.tif", p)
    write_prob(bad / "c_prob.tif", np.full((H, W), 0.2))
    cfg = EvalConfig(border=0, progress=False)
    results = [evaluate_predictions(manifest, d, config=cfg, name=d.name) for d in (maps, bad)]
    out = tmp_path / "report"
    metrics = write_report(results, out, overlay_size=200)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["comparison"][0]["model"] == "good" and on_disk["comparison"][0]["ap"] == pytest.approx(1.0)
    bad_row = on_disk["comparison"][1]
    # bad: TP = 2 x (400 - 200 + 100) = 600 of 1000 positives; FP = 2 x 200 at >= 0.5 (c adds none)
    assert bad_row["precision_at_0.5"] == pytest.approx(600 / 1000)
    assert bad_row["recall_at_0.5"] == pytest.approx(600 / 1000)
    assert metrics["models"][1]["pooled"]["image"]["n_positive"] == 1000
    scenes = {s["id"]: s for s in on_disk["models"][0]["scenes"]}
    assert set(scenes) == {"a", "b", "c"}                  # the train observation is not scored
    assert scenes["c"]["image"]["ap"] is None               # no mine pixel: AP skipped
    assert set(on_disk["models"][0]["clusters"]["image"]) == {"0", "1"}
    html = (out / "report.html").read_text()
    assert f"{bad_row['ap']:.3f}" in html and "0.600" in html
    assert html.count("data:image/png;base64,") == 1 + 2 * 3   # PR curve + overlays
    assert "src=\"overlays" not in html and "http" not in html.replace("http-equiv", "")
    for png in [out / "pr_curve.png", *sorted((out / "overlays").rglob("*.png"))]:
        w, h = struct.unpack(">II", png.read_bytes()[16:24])
        assert 300 <= w <= 2000 and 200 <= h <= 1500, (png, w, h)
    assert len(list((out / "overlays").rglob("*.png"))) == 6
    assert (out / "scenes.csv").read_text().count("\n") == 1 + 6


def test_find_predictions_rule(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("a_2021_prob.tif", "a_2021b.prob.tif", "x/scene_prob.tif", "site1-2021-01-15.prob.tif",
                 "2021-02-01.prob.tif"):
        (tmp_path / name).write_bytes(b"")
    o1 = Observation(id="s1", site="site1", date="2021-01-15", scene="/data/site1/2021-01-15.tif")
    o2 = Observation(id="s2", site="site2", date="2021-02-01", scene="/data/site2/2021-02-01.tif")
    found = find_predictions(tmp_path, ["a_2021", "a_2021b", "x", o1, o2])
    assert found["a_2021"].name == "a_2021_prob.tif"          # not a_2021b.prob.tif: the id ends at a separator
    assert found["a_2021b"].name == "a_2021b.prob.tif"
    assert found["x"] == tmp_path / "x" / "scene_prob.tif"
    assert found["s1"].name == "site1-2021-01-15.prob.tif"     # predict's names for repeated scene names
    assert found["s2"].name == "2021-02-01.prob.tif"           # predict's name for the scene file
    from sandwatch.errors import SandwatchError

    with pytest.raises(SandwatchError, match="no probability raster for observation zz"):
        find_predictions(tmp_path, ["zz"])


def test_cli_end_to_end(tmp_path, dataset, capsys):
    manifest, truth = dataset
    maps = perfect_maps(tmp_path / "maps", truth, dtype="float32")
    out = tmp_path / "rep"
    code = cli_main(["evaluate", "--predictions", str(maps), str(manifest), "--split", "val", "-o", str(out),
                     "--border", "0", "--no-overlays"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "report:" in text and "1.000" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["border"] == 0 and m["models"][0]["pooled"]["aoi"]["ap"] == pytest.approx(1.0)
    # a user error: one line, exit status 2
    code = cli_main(["evaluate", str(manifest), "-o", str(out)])
    assert code == 2
    code = cli_main(["evaluate", "--predictions", str(tmp_path / "nope"), str(manifest), "-o", str(out)])
    assert code == 2 and "no such predictions folder" in capsys.readouterr().err


def test_predict_split_with_a_hand_made_predictor(tmp_path):
    """--checkpoint path through the real predict stage: the model says 'red = mine'."""
    from sandwatch.evaluate import predict_split
    from sandwatch.predict import Predictor

    rgb = np.full((3, H, W), 40, np.uint8)
    rgb[0, 40:60, 20:40] = 230
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as ds:
        ds.write(rgb)
    gpd.GeoDataFrame({"Confidence": ["High"]}, geometry=[px_box(40, 20, 60, 40)], crs=CRS).to_file(
        tmp_path / "m.geojson", driver="GeoJSON")
    manifest = save_manifest(Manifest(observations=[Observation(
        id="s1", site="s", date="2021-01-01", scene=str(tmp_path / "s.tif"), annotations=str(tmp_path / "m.geojson"),
        bands=["R", "G", "B"], cluster=0, split="val")]), tmp_path / "m.yaml")
    pred = Predictor(forward=lambda x: np.asarray(x)[:, 0], bands=("R", "G", "B"), window=32)
    found, n_params, arch = predict_split(pred, manifest, tmp_path / "pred", edge=4, progress=False)
    with pytest.warns(UserWarning, match="AOI scope is left out"):
        res = evaluate_predictions(manifest, found, config=EvalConfig(border=0, progress=False), name="red")
    assert found["s1"].name == "s1.prob.tif" and n_params is None
    m = res.pooled("image").metrics()
    assert m.n_pixels == H * W and m.n_positive == 400
    assert m.ap == pytest.approx(1.0) and m.f1 == pytest.approx(1.0)
    assert "aoi" not in res.images["s1"].accumulators  # no rivers, no AOI file: the AOI scope needs a water index


@pytest.mark.slow
def test_cli_with_checkpoint_counts_parameters(tmp_path, dataset, capsys):
    import torch

    from sandwatch.bands import BandSpec
    from sandwatch.models import build_model
    from sandwatch.models.checkpoint import Checkpoint

    manifest, truth = dataset
    torch.manual_seed(0)
    model = build_model("unet", bands=["R", "G", "B"], width=4)
    ckpt = Checkpoint("unet", BandSpec(("R", "G", "B")), model.state_dict(), options={"width": 4}, window=32)
    path = ckpt.save(tmp_path / "tiny.ckpt")
    out = tmp_path / "rep"
    code = cli_main(["evaluate", "--checkpoint", str(path), str(manifest), "-o", str(out), "--edge", "4",
                     "--border", "2", "--no-overlays"])
    assert code == 0, capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    row = m["comparison"][0]
    assert row["model"] == "tiny" and row["parameters"] == sum(p.numel() for p in model.parameters())
    assert m["models"][0]["pooled"]["image"]["n_pixels"] == 3 * (H - 4) * (W - 4)
    assert sorted(p.name for p in (out / "predictions" / "tiny").glob("*.prob.tif")) == [
        "a.prob.tif", "b.prob.tif", "c.prob.tif"]


# ---- 7. the report for people ---------------------------------------------------------------------
def test_report_opens_with_plain_words_holding_the_measured_numbers(tmp_path, dataset):
    manifest, truth = dataset
    folder = tmp_path / "maps"
    folder.mkdir()
    p = np.where(truth, 0.9, 0.1)
    p[80:90, 60:70] = 0.8                                  # 100 px = 1 ha of false alarm per scene
    for oid in "abt":
        write_prob(folder / f"{oid}_prob.tif", p)
    write_prob(folder / "c_prob.tif", np.where(np.arange(H)[:, None] < 20, 0.7, 0.1) * np.ones((H, W)))
    result = evaluate_predictions(manifest, folder, config=EvalConfig(border=0, progress=False))
    metrics = write_report([result], tmp_path / "report", overlay_size=200)
    s = metrics["summary"][result.name]
    labelled = float(truth.sum()) * 2 / 100                # scenes a and b, 1 ha = 100 px
    assert s["labelled_ha"] == pytest.approx(labelled) and s["found_share"] == pytest.approx(1.0)
    assert s["scenes_without_mining"] == 1 and s["false_alarm_clean_ha"] == pytest.approx(20 * W / 100)
    assert s["flagged_ha"] == pytest.approx(labelled + 2 * 1.0 + 20 * W / 100)
    html = (tmp_path / "report" / "report.html").read_text()
    first = html.split("<h2>Scores")[0]
    assert "In plain words" in first and f"{s['flagged_ha']:.1f} ha" in first and "100 %" in first
    assert f"{s['false_alarm_clean_ha']:.1f} ha" in first
    for term in ("AP (average precision)", "precision (P)", "recall (R)", "border crop", "AOI", "best F1"):
        assert f"<dt>{term}" in html
    areas = (tmp_path / "report" / "areas.csv").read_text().splitlines()
    assert len(areas) == 1 + 3 and any(line.split(",")[1] == "c" for line in areas[1:])
