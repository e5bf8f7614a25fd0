"""The levers of a training recipe (issue: accuracy on real imagery) and the rules around them:
best-checkpoint choice, calibration, step budget, soft targets, hard negatives, photometric
augmentation, losses, per-scene statistics, true-colour band detection, ``--set key=null``."""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import torch
import yaml
from shapely.geometry import box

from conftest import make_utm_grid, write_tif
from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.train.config import config_from_dict
from sandwatch.train.runner import train
from test_train_run import BANDS, config, scene, sources, unet


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def _same_weights(a: Checkpoint, b: Checkpoint) -> bool:
    return all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


# ---- which checkpoint is "best" --------------------------------------------------------------
def test_without_validation_best_is_the_last_checkpoint(tmp_path):
    res = train(config(tmp_path, "noval", optim__epochs=3), sources=(sources()[0], []), model=unet())
    best, last = Checkpoint.load(res.best), Checkpoint.load(res.last)
    assert best.metadata["epoch"] == last.metadata["epoch"] == 2
    assert _same_weights(best, last)


def test_mine_free_validation_does_not_choose_on_ap_zero(tmp_path):
    empty = scene("v", 3)
    empty.mask[:] = 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = train(config(tmp_path, "nomine", optim__epochs=3), sources=(sources()[0], [empty]), model=unet())
    best, last = Checkpoint.load(res.best), Checkpoint.load(res.last)
    assert [h["val_ap"] for h in res.history] == [0.0, 0.0, 0.0]
    assert best.metadata["epoch"] == 2 and _same_weights(best, last)
    assert sum("no mine pixels" in str(w.message) for w in seen) == 1        # said once, not per epoch
    lightning_best = Checkpoint.load(tmp_path / "nomine" / "checkpoints" / "best.ckpt")
    assert lightning_best.metadata["epoch"] == 2


@pytest.mark.slow
def test_with_mining_in_validation_best_is_the_best_ap(tmp_path):
    res = train(config(tmp_path, "val", optim__epochs=3, data__windows_per_scene=12), sources=sources(), model=unet())
    best = Checkpoint.load(res.best)
    aps = [h["val_ap"] for h in res.history]
    assert best.metadata["val_ap"] == pytest.approx(max(aps))
    assert best.metadata["epoch"] == int(np.argmax(aps))


# ---- calibration -----------------------------------------------------------------------------
def test_fit_temperature_recovers_a_known_temperature():
    from sandwatch.train.module import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 200_000)                       # an over-confident model's logits
    y = rng.random(z.size) < 1 / (1 + np.exp(-z / 2.5))  # truth follows sigmoid(z / 2.5)
    p = 1 / (1 + np.exp(-z))
    bins = 1000
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    pos, neg = np.bincount(idx[y], minlength=bins), np.bincount(idx[~y], minlength=bins)
    assert fit_temperature(torch.from_numpy(pos).double(), torch.from_numpy(neg).double()) == pytest.approx(2.5, rel=0.1)
    assert apply_temperature(0.5, 3.0) == pytest.approx(0.5)
    assert apply_temperature(1 / (1 + math.exp(-2.0)), 2.0) == pytest.approx(1 / (1 + math.exp(-1.0)))


@pytest.mark.slow
def test_calibration_stores_a_threshold_that_predict_applies(tmp_path):
    import rasterio

    from sandwatch.predict import predict_scene

    # a large pos_weight pushes probabilities up: the best threshold on validation is far above 0.5
    cfg = config(tmp_path, "cal", optim__epochs=3, data__windows_per_scene=12, calibration__enabled=True,
                 loss__pos_weight=40.0)
    res = train(cfg, sources=sources(), model=unet())
    best = Checkpoint.load(res.best)
    meta = best.metadata
    assert meta["val_best_threshold"] > 0.6
    assert best.threshold == pytest.approx(meta["val_calibrated_threshold"]) and abs(best.threshold - 0.5) > 0.05
    assert best.temperature == pytest.approx(meta["val_temperature"]) and 0.25 <= best.temperature <= 4
    # on validation, F1 at the stored threshold is the best F1 (within 0.03)
    assert meta["val_f1_at_threshold"] >= meta["val_best_f1"] - 0.03
    # predict uses it: the mask is exactly probability >= the stored threshold
    v = scene("v", 3)
    path = write_tif(tmp_path / "v.tif", v.grid, v.image, dtype="float32", descriptions=BANDS)
    out = predict_scene(best, path, tmp_path / "maps", edge=8, progress=False, dtype="float32")
    with rasterio.open(out.paths["probability"]) as ds:
        prob = ds.read(1)
        assert float(ds.tags()["sandwatch_threshold"]) == pytest.approx(best.threshold)
    with rasterio.open(out.paths["mask"]) as ds:
        mask = ds.read(1)
    ok = np.isfinite(prob)
    assert ((prob[ok] >= best.threshold) == (mask[ok] == 1)).all()
    assert ((prob[ok] >= 0.5) != (mask[ok] == 1)).any()      # a different mask than at 0.5


# ---- budget in steps, fixed epochs, early stop ----------------------------------------------
def test_step_budget_and_fixed_epoch_size(tmp_path):
    cfg = config(tmp_path, "steps", data__epoch_windows=8, optim__steps=10, optim__schedule="cosine",
                 optim__warmup=0.2)
    res = train(cfg, sources=(sources()[0], []), model=unet())
    last = Checkpoint.load(res.last)
    assert last.metadata["global_step"] == 10 and last.metadata["epoch"] == 4   # 5 epochs of 2 steps
    import json

    tp = json.loads((tmp_path / "steps" / "metrics.json").read_text())["throughput"]
    assert [t["windows"] for t in tp] == [8] * 5    # 8 windows an epoch, shared by the two scenes


def test_epoch_windows_are_shared_by_aoi_area():
    from sandwatch.grid import Grid
    from sandwatch.train.sampler import plan_scenes

    g = make_utm_grid(100, 100)
    x0, y1 = g.transform.c, g.transform.f
    small, large = box(x0, y1 - 200, x0 + 200, y1), box(x0, y1 - 600, x0 + 600, y1)  # 400 and 3600 px
    plans = plan_scenes([small, large], [g, g], lambda a: 1, epoch_windows=100)
    assert [p.n_windows for p in plans] == [10, 90]
    assert isinstance(g, Grid)


def test_early_stop_after_validations_without_progress(tmp_path):
    full = scene("v", 3)
    full.mask[:] = 1            # every pixel is mine: AP is 1 whatever the model, it never improves
    res = train(config(tmp_path, "early", optim__epochs=8, optim__early_stop=2), sources=(sources()[0], [full]),
                model=unet())
    assert [h["val_ap"] for h in res.history] == [1.0, 1.0, 1.0]   # the first, then two without progress


# ---- labels, windows, augmentation ----------------------------------------------------------
def _obs_files(tmp_path, rgb: bool = True, size: int = 96):
    """A small true-colour (or 3-band reflectance) GeoTIFF with Low and High polygons and an AOI."""
    g = make_utm_grid(size, size)
    rng = np.random.default_rng(0)
    if rgb:
        data = rng.integers(20, 200, (3, size, size)).astype("uint8")
        scene = write_tif(tmp_path / "rgb.tif", g, data, "uint8", ["R", "G", "B"])
    else:
        data = rng.integers(500, 3000, (3, size, size)).astype("uint16")
        scene = write_tif(tmp_path / "s2.tif", g, data, "uint16", ["B04", "B03", "B02"])
    x0, y1 = g.transform.c, g.transform.f
    polys = gpd.GeoDataFrame({"Confidence": ["High", "Low"]},
                             geometry=[box(x0 + 100, y1 - 300, x0 + 300, y1 - 100),
                                       box(x0 + 500, y1 - 700, x0 + 700, y1 - 500)], crs=g.crs)
    polys.to_file(tmp_path / "mining.geojson")
    gpd.GeoDataFrame(geometry=[box(x0, y1 - 10 * size, x0 + 10 * size - 200, y1)], crs=g.crs).to_file(
        tmp_path / "aoi.geojson")
    return g, scene


def test_soft_targets_for_low_confidence(tmp_path):
    from sandwatch.dataset.manifest import Observation
    from sandwatch.train.data import ObservationSource

    g, path = _obs_files(tmp_path)
    obs = Observation(id="a", site="a", date="2020-01-01", scene=str(path),
                      annotations=str(tmp_path / "mining.geojson"), aoi=str(tmp_path / "aoi.geojson"))
    hard = ObservationSource(obs, ["R", "G", "B"], low_weight=0.5)
    soft = ObservationSource(obs, ["R", "G", "B"], low_weight=0.5, low_target=0.7)
    w = g.full_window()
    t0, w0 = hard.labels(w)
    t1, w1 = soft.labels(w)
    high, low = (slice(10, 30), slice(10, 30)), (slice(50, 70), slice(50, 70))
    assert t0[high].min() == t0[low].min() == 1
    assert t1[high].min() == 1.0 and np.allclose(t1[low], 0.7) and t1.dtype == np.float32
    np.testing.assert_array_equal(w0, w1)
    assert np.allclose(w1[low], 0.5) and np.allclose(w1[high], 1.0)
    np.testing.assert_allclose(np.unique(t1), [0.0, 0.7, 1.0], rtol=1e-6)


def test_hard_negative_windows_are_centred_outside_the_aoi():
    from sandwatch.train.sampler import plan_scenes

    g = make_utm_grid(200, 200)
    x0, y1 = g.transform.c, g.transform.f
    aoi = box(x0, y1 - 2000, x0 + 500, y1)            # the left quarter of the scene
    (plan,) = plan_scenes([aoi], [g], lambda a: 1, hard_negatives=0.3)
    centres = [plan.window(0, 0, 0, k, 32)[0] for k in range(2000)]
    outside = np.mean([w.col + 16 > 50 for w in centres])
    assert outside == pytest.approx(0.3, abs=0.04)
    (plain,) = plan_scenes([aoi], [g], lambda a: 1)
    assert max(plain.window(0, 0, 0, k, 32)[0].col + 16 for k in range(500)) <= 51


def test_photometric_augmentation_is_a_pure_function_of_the_item():
    from sandwatch.train.augment import airlight, photometric
    from sandwatch.train.config import AugmentConfig

    cfg = AugmentConfig(photometric=True, p=1.0)
    rng = np.random.default_rng(0)
    x = (0.05 + 0.3 * rng.random((3, 32, 32))).astype(np.float32)
    valid = np.ones((32, 32), bool)
    valid[:4] = False
    a = photometric(x, valid, np.random.default_rng([1, 2, 3]), cfg, ["R", "G", "B"])
    b = photometric(x, valid, np.random.default_rng([1, 2, 3]), cfg, ["R", "G", "B"])
    c = photometric(x, valid, np.random.default_rng([1, 2, 4]), cfg, ["R", "G", "B"])
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 and np.abs(a - x)[:, 4:].mean() > 1e-3
    np.testing.assert_array_equal(a[:, :4], x[:, :4])          # nodata untouched
    assert a.min() >= 0
    off = AugmentConfig(photometric=True, p=0.0)
    np.testing.assert_array_equal(photometric(x, valid, np.random.default_rng(0), off, ["R", "G", "B"]), x)
    h = airlight(["B02", "B04", "B12", "R"])
    assert h[0] > h[1] > h[2] and h[3] == pytest.approx(h[1])     # haze is bluish; R stands at 665 nm


def test_augmented_training_windows_repeat_exactly():
    from sandwatch.bands import Normalization
    from sandwatch.train.config import AugmentConfig
    from sandwatch.train.data import TrainWindows
    from sandwatch.train.sampler import plan_scenes

    src = scene("a", 1)
    plans = plan_scenes([src.aoi], [src.grid], lambda a: 4)
    ds = TrainWindows([src], plans, Normalization.constant(3), size=32, augment=AugmentConfig(photometric=True, p=1),
                      bands=BANDS)
    plain = TrainWindows([src], plans, Normalization.constant(3), size=32)
    one, two = ds[(0, 0, 1)], ds[(0, 0, 1)]
    assert torch.equal(one["image"], two["image"])
    assert not torch.equal(one["image"], plain[(0, 0, 1)]["image"])
    assert torch.equal(one["target"], plain[(0, 0, 1)]["target"])   # labels are not touched


# ---- losses ------------------------------------------------------------------------------------
def test_focal_and_lovasz_terms():
    from sandwatch.train.loss import SegmentationLoss, lovasz_hinge, weighted_bce

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    assert weighted_bce(logits, target, focal_gamma=0.0) == pytest.approx(float(weighted_bce(logits, target)))
    assert float(weighted_bce(logits, target, focal_gamma=2.0)) < float(weighted_bce(logits, target))
    perfect = (target * 2 - 1) * 5.0                     # right side of the margin everywhere
    assert float(lovasz_hinge(perfect, target)) == pytest.approx(0.0)
    assert float(lovasz_hinge(-perfect, target)) > 1.0
    ignored = torch.zeros_like(target)                     # weight 0 everywhere: nothing counts
    assert float(lovasz_hinge(-perfect, target, ignored)) == 0.0
    loss = SegmentationLoss(6.0, dice_weight=1.0, focal_gamma=0.0, lovasz_weight=0.5)
    assert float(loss(logits, target)) > float(SegmentationLoss(6.0, dice_weight=1.0)(logits, target))
    logits.requires_grad_(True)
    loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---- per-scene statistics -------------------------------------------------------------------
def test_scene_statistics_inside_the_aoi():
    from sandwatch.scenestats import sample_windows, scene_normalization, scene_statistics

    g = make_utm_grid(300, 200)
    rng = np.random.default_rng(1)
    data = rng.random((2, 200, 300)).astype(np.float32)
    data[:, :, 150:] += 5.0                                        # the right half is far brighter
    valid = np.ones((200, 300), bool)
    valid[:10] = False

    def read(w):
        return data[:, w.row:w.row_stop, w.col:w.col_stop], valid[w.row:w.row_stop, w.col:w.col_stop]

    x0, y1 = g.transform.c, g.transform.f
    left = box(x0, y1 - 2000, x0 + 1500, y1)                       # columns 0..149
    mean, std = scene_statistics(read, g, left, size=64)
    inside = data[:, 10:, :150]
    np.testing.assert_allclose(mean, inside.reshape(2, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(std, inside.reshape(2, -1).std(1), rtol=1e-4)
    whole, _ = scene_statistics(read, g, None)
    assert whole[0] > 2.0
    spoilt = data.copy()
    spoilt[0, 50:60, 20:30] = np.nan                               # marked valid by a careless reader
    spoilt[1, 70, 40] = np.inf
    m2, _ = scene_statistics(lambda w: (spoilt[:, w.row:w.row_stop, w.col:w.col_stop],
                                        valid[w.row:w.row_stop, w.col:w.col_stop]), g, left, size=64)
    keep = np.isfinite(spoilt[:, 10:, :150]).all(0)
    np.testing.assert_allclose(m2, spoilt[:, 10:, :150][:, keep].mean(1), rtol=1e-5)
    assert all(w.col < 150 for w in sample_windows(left, g, 64))
    assert len(sample_windows(None, g, 16, max_windows=10)) == 10
    n = scene_normalization(read, g, left, k=2.0)
    assert n.low[0] == pytest.approx(mean[0] - 2 * std[0]) and not n.per_scene
    with pytest.raises(SandwatchError, match="no valid pixel"):
        scene_statistics(lambda w: (data[:, :w.height, :w.width], np.zeros(w.shape, bool)), g, left)


# ---- true-colour scenes, band names, --set null -------------------------------------------------
def _manifest(tmp_path, scene_path) -> str:
    obs = [{"id": "a", "site": "a", "date": "2020-01-01", "scene": str(scene_path),
            "annotations": str(tmp_path / "mining.geojson"), "aoi": str(tmp_path / "aoi.geojson"), "split": "train"}]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"observations": obs}))
    return str(tmp_path / "m.yaml")


def _cfg_file(tmp_path, manifest, **model) -> str:
    data = {"manifest": manifest, "run_dir": str(tmp_path / "run"), "profile": "cpu",
            "model": {"arch": "unet", "options": {"width": 4}, **model},
            "data": {"window": 64, "windows_per_scene": 4, "num_workers": 0},
            "optim": {"epochs": 1, "batch_size": 4}, "trainer": {"progress_bar": False},
            "tracking": {"backend": "none"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    return str(tmp_path / "c.yaml")


def test_true_colour_scenes_train_on_rgb_without_setting_bands(tmp_path, capsys):
    _, path = _obs_files(tmp_path)
    cfg = _cfg_file(tmp_path, _manifest(tmp_path, path))
    assert main(["train", cfg]) == 0
    assert "training on bands R,G,B" in capsys.readouterr().err
    assert Checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt").bands == ("R", "G", "B")


def test_sentinel2_band_names_on_a_true_colour_file_are_refused(tmp_path, capsys):
    _, path = _obs_files(tmp_path)
    cfg = _cfg_file(tmp_path, _manifest(tmp_path, path), bands=["B04", "B03", "B02"])
    assert main(["train", cfg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rgb.tif" in err and "true-colour" in err and "model.bands=[R,G,B]" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()


def test_missing_bands_fail_before_any_worker_naming_model_bands(tmp_path, capsys):
    _, path = _obs_files(tmp_path, rgb=False)
    cfg = _cfg_file(tmp_path, _manifest(tmp_path, path))           # the U-Net's default: 13 bands
    assert main(["train", cfg, "--set", "data.num_workers=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s2.tif" in err and "lacks band(s) B01" in err and "model.bands" in err


def test_set_null_removes_an_option():
    base = {"manifest": "m.yaml", "model": {"arch": "unet", "options": {"width": 16}}, "profile": "cpu"}
    assert config_from_dict(base).model.options == {"width": 16}
    assert config_from_dict(base, ["model.options.width=null"]).model.options == {}
    cfg = config_from_dict(base, ["optim.lr=null", "optim.batch_size=null"])
    assert cfg.optim.lr is None and cfg.lr == 5e-4          # a typed setting: null means its default
    assert cfg.optim.batch_size is None and cfg.batch_size == 128
    with pytest.raises(SandwatchError, match="data.window"):
        config_from_dict(base, ["data.window=null"])


def test_shipped_real_rgb_config():
    from pathlib import Path

    from sandwatch.train.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "real-rgb.yaml",
                      ["manifest=m.yaml", "run_dir=r"])
    assert cfg.model.bands == ["R", "G", "B"] and cfg.calibration.enabled and cfg.optim.steps
    assert cfg.data.epoch_windows and cfg.optim.schedule == "cosine"


def test_per_scene_normalisation_reaches_predict_in_its_region(tmp_path):
    """The checkpoint says where a scene is measured (its AOI, or the whole scene); predict
    measures every new scene there, whatever AOI it predicts in."""
    from shapely.geometry import box as shp_box

    from sandwatch.bands import Normalization
    from sandwatch.imagery import open_scene
    from sandwatch.predict import Predictor, scene_normalized
    from sandwatch.scenestats import scene_statistics

    g = make_utm_grid(120, 80)
    rng = np.random.default_rng(2)
    data = rng.integers(10, 100, (3, 80, 120)).astype("uint8")
    data[:, :, 60:] += 120                                  # the right half is brighter
    path = write_tif(tmp_path / "s.tif", g, data, "uint8", ["R", "G", "B"])
    scene = open_scene(path)
    x0, y1 = g.transform.c, g.transform.f
    left = shp_box(x0, y1 - 800, x0 + 600, y1)

    def read(w):
        return scene.read(w, bands=("R", "G", "B"))

    for region, geom in (("aoi", left), ("scene", None)):
        norm = Normalization((0.0,) * 3, (1.0,) * 3, True, per_scene_k=2.0, per_scene_region=region)
        assert Normalization.from_dict(norm.to_dict()) == norm
        pred = Predictor(lambda b: b[:, 0], ("R", "G", "B"), 32, per_scene_k=2.0, per_scene_region=region)
        got = scene_normalized(pred, scene, left, warn=False).normalize
        mean, std = scene_statistics(read, g, geom)
        np.testing.assert_allclose(got.low, mean - 2 * std, rtol=1e-6)
        np.testing.assert_allclose(got.high, mean + 2 * std, rtol=1e-6)
