"""Calibrated prediction: the checkpoint's temperature and threshold reach every stage that
predicts, and test-time augmentation over D4 (8 rotations/flips) is the mean it claims to be.

The D4 expectations are written out element by element (identity, 3 rotations, 2 flips,
2 diagonal reflections) rather than with the code's own (quarter turns, flip) loop, so an
error there cannot cancel itself. Models are numpy functions that depend on position and
orientation, or a tiny random U-Net (random 3x3 kernels are not symmetric, so it is not
equivariant either).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import rasterio
import torch

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.grid import Window
from sandwatch.imagery import open_scene
from sandwatch.models import build_model
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.predict import D4, Predictor, TorchForward, d4_apply, d4_invert, predict_scene, tta_numpy, with_tta
from conftest import make_utm_grid, write_tif

BANDS = ("B02", "B03", "B04")
SIZE = 100           # scene height and width
WINDOW, EDGE = 64, 12
# With stride 40 the read window (28, 28, 64, 64) lies inside the scene; it alone writes (40:80, 40:80).
INNER_READ, INNER_KEEP = Window(28, 28, WINDOW, WINDOW), Window(40, 40, 40, 40)

#: D4 spelt out: (transform of the input, its inverse for the output), on the last two axes.
ELEMENTS = {
    "identity": (lambda x: x, lambda y: y),
    "rot90": (lambda x: np.rot90(x, 1, (-2, -1)), lambda y: np.rot90(y, 3, (-2, -1))),
    "rot180": (lambda x: np.rot90(x, 2, (-2, -1)), lambda y: np.rot90(y, 2, (-2, -1))),
    "rot270": (lambda x: np.rot90(x, 3, (-2, -1)), lambda y: np.rot90(y, 1, (-2, -1))),
    "flip_lr": (lambda x: x[..., ::-1], lambda y: y[..., ::-1]),
    "flip_ud": (lambda x: x[..., ::-1, :], lambda y: y[..., ::-1, :]),
    "transpose": (lambda x: np.swapaxes(x, -1, -2), lambda y: np.swapaxes(y, -1, -2)),
    "anti_transpose": (lambda x: np.swapaxes(x[..., ::-1, ::-1], -1, -2),
                       lambda y: np.swapaxes(y[..., ::-1, ::-1], -1, -2)),
}


def expected_tta(forward, batch: np.ndarray) -> np.ndarray:
    """Mean over the 8 elements of forward(g x) turned back by g^-1, in float64."""
    outs = [inv(np.asarray(forward(np.ascontiguousarray(g(batch))), np.float64)) for g, inv in ELEMENTS.values()]
    return np.mean(outs, axis=0)


def skewed(batch: np.ndarray) -> np.ndarray:
    """Not equivariant: weights ramp down the rows and across the columns, plus a shift to the right."""
    s = batch.shape[-1]
    rows = np.linspace(0.0, 1.0, s)[:, None]
    cols = np.linspace(-1.0, 2.0, s)[None, :]
    z = 30 * batch[:, 0] * rows + 20 * batch[:, 1] * cols + 10 * np.roll(batch[:, 2], 1, axis=-1) - 3.0
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def pointwise(batch: np.ndarray) -> np.ndarray:
    """Equivariant: each pixel from its own band values only."""
    return (1 / (1 + np.exp(-(20 * batch[:, 0] - 10 * batch[:, 1] + 0.5)))).astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def write_scene(path, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(300, 3000, size=(3, SIZE, SIZE)).astype(np.uint16)
    data[0, 20:45, 55:90] = 2800                        # a bright patch off the diagonals
    return write_tif(path, make_utm_grid(SIZE, SIZE), data, "uint16", descriptions=BANDS)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model("unet", bands=list(BANDS), width=4)


def read_raster(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


# ---- D4 itself ----------------------------------------------------------------------------------
def test_d4_has_eight_distinct_invertible_elements_matching_the_spelt_out_group():
    x = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    mine = [d4_apply(x, k, f) for k, f in D4]
    theirs = [g(x) for g, _ in ELEMENTS.values()]
    assert len(D4) == 8
    assert len({a.tobytes() for a in mine}) == 8
    assert {a.tobytes() for a in mine} == {a.tobytes() for a in theirs}
    for k, f in D4:
        assert np.array_equal(d4_invert(d4_apply(x, k, f), k, f), x)
        assert np.array_equal(d4_invert(d4_apply(x[:, 0], k, f), k, f), x[:, 0])   # (N, H, W) outputs too


# ---- TTA on numpy batch functions -------------------------------------------------------------------
def test_tta_is_the_mean_of_the_eight_turned_back_predictions():
    batch = np.random.default_rng(1).random((3, 3, 24, 24)).astype(np.float32) * 0.3
    got = tta_numpy(skewed)(batch)
    want = expected_tta(skewed, batch)
    assert got.shape == (3, 24, 24) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # and it is not the plain prediction: the function really depends on orientation
    assert np.abs(got - skewed(batch)).max() > 0.05
    # with_tta wraps any hand-built batch function the same way
    np.testing.assert_allclose(with_tta(skewed)(batch), got, rtol=0, atol=0)


def test_tta_of_an_equivariant_forward_changes_nothing():
    batch = np.random.default_rng(2).random((4, 3, 16, 16)).astype(np.float32) * 0.3
    plain = pointwise(batch)
    np.testing.assert_allclose(tta_numpy(pointwise)(batch), plain, rtol=0, atol=1e-6)
    assert 0.05 < plain.min() and plain.max() < 0.999     # not saturated, so the check means something


def test_torch_tta_on_the_device_equals_the_numpy_mean_with_the_temperature():
    model = tiny_model()
    x = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    fwd = TorchForward(model, device="cpu", temperature=2.0)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x))[:, 0].numpy()
    np.testing.assert_allclose(fwd(x), sigmoid(logits / 2.0), rtol=0, atol=1e-6)   # temperature applied
    calls = fwd.calls
    got = fwd.predict(x, tta=True)
    assert fwd.calls == calls + 1 and fwd.batch_sizes[-1] == 2   # one TTA call counts as one batch of 2
    np.testing.assert_allclose(got, expected_tta(fwd, x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(with_tta(fwd)(x), got, rtol=0, atol=0)
    assert np.abs(got - fwd(x)).max() > 1e-3            # a random U-Net is not equivariant


def test_predict_scene_tta_with_a_hand_built_predictor(tmp_path):
    scene_path = write_scene(tmp_path / "scene.tif")
    pred = Predictor(skewed, BANDS, WINDOW, threshold=0.5, name="skewed")
    plain = predict_scene(pred, scene_path, tmp_path / "plain", edge=EDGE, dtype="float32", progress=False)
    res = predict_scene(pred, scene_path, tmp_path / "tta", edge=EDGE, dtype="float32", progress=False, tta=True)
    prob, tags = read_raster(res.paths["probability"])
    plain_prob, plain_tags = read_raster(plain.paths["probability"])
    assert (tags["sandwatch_tta"], plain_tags["sandwatch_tta"]) == ("d4", "none")
    assert res.stats["tta"] is True and plain.stats["tta"] is False
    # the window inside the scene: its kept pixels are the D4 mean of its own prediction
    data, _ = open_scene(str(scene_path)).read(INNER_READ, bands=BANDS)
    want = expected_tta(skewed, data[None])[0][EDGE:EDGE + 40, EDGE:EDGE + 40]
    np.testing.assert_allclose(prob[INNER_KEEP.slices()], want, rtol=0, atol=1e-6)
    assert np.abs(prob - plain_prob).max() > 0.05


# ---- the checkpoint's threshold and temperature --------------------------------------------------------
def calibrated_checkpoints(tmp_path, scene_path, threshold=0.3, temperature=2.0):
    """Two checkpoints of one tiny U-Net (temperature 1 and ``temperature``), its 1x1 head scaled
    and shifted so the inner window's logits / ``temperature`` have median logit(``threshold``)
    and spread 2 (a random U-Net's logits hardly vary)."""
    model = tiny_model()
    sd = model.state_dict()
    probe = Checkpoint("unet", model.band_spec, sd, {"width": 4}, WINDOW)
    data, _ = open_scene(str(scene_path)).read(INNER_READ, bands=BANDS)
    with torch.inference_mode():
        logits = probe.build_model()(torch.from_numpy(probe.normalize(data)[None]))[0, 0].numpy()
    gain = 2.0 * temperature / float(logits.std())
    bias = float(sd["decoder.head.bias"][0])
    sd["decoder.head.weight"] *= gain
    centre = temperature * math.log(threshold / (1 - threshold))
    sd["decoder.head.bias"][0] = centre - gain * (float(np.median(logits)) - bias)
    one = Checkpoint("unet", model.band_spec, sd, {"width": 4}, WINDOW, threshold=threshold)
    hot = Checkpoint("unet", model.band_spec, sd, {"width": 4}, WINDOW, threshold=threshold, temperature=temperature)
    return one.save(tmp_path / "t1.ckpt"), hot.save(tmp_path / "t2.ckpt"), data


def test_checkpoint_threshold_and_temperature_shape_the_outputs(tmp_path):
    scene_path = write_scene(tmp_path / "scene.tif")
    t1_path, t2_path, inner = calibrated_checkpoints(tmp_path, scene_path)
    ckpt = Checkpoint.load(t2_path)
    assert (ckpt.threshold, ckpt.temperature) == (0.3, 2.0)
    r1 = predict_scene(t1_path, scene_path, tmp_path / "t1", edge=EDGE, dtype="float32", progress=False)
    r2 = predict_scene(t2_path, scene_path, tmp_path / "t2", edge=EDGE, dtype="float32", progress=False)
    p1, _ = read_raster(r1.paths["probability"])
    p2, tags = read_raster(r2.paths["probability"])
    mask, mask_tags = read_raster(r2.paths["mask"])
    assert not np.isnan(p2).any()
    assert tags["sandwatch_threshold"] == mask_tags["sandwatch_threshold"] == "0.3"
    assert tags["sandwatch_temperature"] == "2.0" and tags["sandwatch_tta"] == "none"
    assert (r2.stats["threshold"], r2.stats["temperature"]) == (0.3, 2.0)

    # probability = sigmoid(logit / 2): directly on the inner window ...
    with torch.inference_mode():
        logits = ckpt.build_model()(torch.from_numpy(ckpt.normalize(inner)[None]))[0, 0].numpy()
    want = sigmoid(logits / 2.0)[EDGE:EDGE + 40, EDGE:EDGE + 40]
    np.testing.assert_allclose(p2[INNER_KEEP.slices()], want, rtol=0, atol=1e-6)
    # ... and everywhere, against the temperature-1 run of the same weights
    np.testing.assert_allclose(p2, sigmoid(np.log(p1 / (1 - p1)) / 2.0), rtol=0, atol=1e-5)

    # the mask's mine pixels are exactly those with probability >= 0.3
    assert set(np.unique(mask)) <= {0, 1}
    assert np.array_equal(mask == 1, p2 >= 0.3)
    between = (p2 >= 0.3) & (p2 < 0.5)                  # mine at 0.3, not at the default 0.5
    assert between.sum() > 100 and (p2 < 0.3).sum() > 100


# ---- the CLI ------------------------------------------------------------------------------------------------
def test_cli_tta_flag_reaches_predict(tmp_path, capsys):
    scene_path = write_scene(tmp_path / "scene.tif")
    _, t2_path, _ = calibrated_checkpoints(tmp_path, scene_path)
    common = [str(t2_path), str(scene_path), "--edge", str(EDGE), "--dtype", "float32", "-q"]
    assert main(["predict", *common, "-o", str(tmp_path / "plain")]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "tta"), "--tta"]) == 0
    plain, plain_tags = read_raster(tmp_path / "plain" / "scene.prob.tif")
    tta, tags = read_raster(tmp_path / "tta" / "scene.prob.tif")
    assert (plain_tags["sandwatch_tta"], tags["sandwatch_tta"]) == ("none", "d4")
    assert tags["sandwatch_temperature"] == "2.0" and tags["sandwatch_threshold"] == "0.3"
    assert np.abs(tta - plain).max() > 1e-3
    lib = predict_scene(t2_path, scene_path, tmp_path / "lib", edge=EDGE, dtype="float32", progress=False, tta=True)
    np.testing.assert_allclose(tta, read_raster(lib.paths["probability"])[0], rtol=0, atol=1e-6)
    # the inner window is the D4 mean of its temperature-2 probabilities
    data, _ = open_scene(str(scene_path)).read(INNER_READ, bands=BANDS)
    ckpt = Checkpoint.load(t2_path)
    fwd = TorchForward(ckpt.build_model(), normalize=ckpt.normalize, device="cpu", temperature=2.0)
    want = expected_tta(fwd, data[None])[0][EDGE:EDGE + 40, EDGE:EDGE + 40]
    np.testing.assert_allclose(tta[INNER_KEEP.slices()], want, rtol=0, atol=1e-6)
    mask, _ = read_raster(tmp_path / "tta" / "scene.mask.tif")
    assert np.array_equal(mask == 1, tta >= 0.3)


def test_cli_help_says_what_tta_costs(capsys):
    for cmd in (["predict", "--help"], ["monitor", "--help"], ["evaluate", "--help"]):
        assert main(cmd) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--tta" in text and "8 rotations/flips" in text and "8x the forward time" in text, cmd


def test_monitor_applies_tta_temperature_and_threshold(tmp_path, capsys):
    from shapely.geometry import LineString

    from sandwatch.synthetic import make_scene, utm_grid, write_lines

    grid = utm_grid(85.85, 20.30, size=96)
    scene = tmp_path / "site_20210105.tif"
    make_scene(scene, grid, date=dt.date(2021, 1, 5), seed=0)
    left, bottom, right, top = grid.bounds
    x = (left + right) / 2
    rivers = write_lines(tmp_path / "rivers.geojson", [LineString([(x, bottom - 50), (x, top + 50)])], grid.crs)
    model = tiny_model()
    ck = Checkpoint("unet", model.band_spec, model.state_dict(), {"width": 4}, WINDOW, threshold=0.3,
                    temperature=2.0).save(tmp_path / "c.ckpt")
    out = tmp_path / "mon"
    assert main(["monitor", "--checkpoint", str(ck), "--site", "s", "--rivers", str(rivers), "--scenes", str(scene),
                 "-o", str(out), "-q", "--edge", "8", "--tta"]) == 0, capsys.readouterr()
    (prob_path,) = (out / "predictions").glob("*.prob.tif")
    _, tags = read_raster(prob_path)
    assert (tags["sandwatch_tta"], tags["sandwatch_temperature"], tags["sandwatch_threshold"]) == ("d4", "2.0", "0.3")


def test_predict_split_and_evaluate_cli_pass_tta(tmp_path, monkeypatch, capsys):
    import sandwatch.evaluate
    from sandwatch.dataset.manifest import Manifest, Observation
    from sandwatch.evaluate import predict_split

    scene_path = write_scene(tmp_path / "scene.tif")
    _, t2_path, _ = calibrated_checkpoints(tmp_path, scene_path)
    manifest = Manifest(observations=[Observation(id="o1", site="s", date="2021-01-05", scene=str(scene_path),
                                                  bands=list(BANDS), split="val")])
    found, _, arch = predict_split(t2_path, manifest, tmp_path / "pred", edge=EDGE, progress=False, tta=True)
    _, tags = read_raster(found["o1"])
    assert arch == "unet"
    assert (tags["sandwatch_tta"], tags["sandwatch_temperature"], tags["sandwatch_threshold"]) == ("d4", "2.0", "0.3")

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise SandwatchError("stopped by the test")

    monkeypatch.setattr(sandwatch.evaluate, "predict_split", spy)
    manifest_path = tmp_path / "m.yaml"
    manifest_path.write_text("observations: []\n")
    assert main(["evaluate", "--checkpoint", str(t2_path), str(manifest_path), "-o", str(tmp_path / "r"),
                 "--tta"]) == 2
    assert seen.get("tta") is True
    assert "stopped by the test" in capsys.readouterr().err


# ---- the checkpoint file -----------------------------------------------------------------------------------
def test_temperature_round_trips_and_old_files_load_with_one(tmp_path):
    model = tiny_model()
    path = Checkpoint.from_model(model, window=64, threshold=0.3, temperature=1.7).save(tmp_path / "new.pt")
    back = Checkpoint.load(path)
    assert (back.threshold, back.temperature) == (0.3, 1.7)
    old = back.to_dict()
    assert old["temperature"] == 1.7
    del old["temperature"]                              # a file written before the field existed
    torch.save(old, tmp_path / "old.pt")
    assert Checkpoint.load(tmp_path / "old.pt").temperature == 1.0
    torch.save({"sandwatch": old, "state_dict": {}}, tmp_path / "old.ckpt")   # Lightning layout
    assert Checkpoint.load(tmp_path / "old.ckpt").temperature == 1.0
    assert Predictor.from_checkpoint(tmp_path / "old.pt", device="cpu").temperature == 1.0


@pytest.mark.parametrize("bad", [0.0, float("nan"), -1.0, float("inf"), "warm"])
def test_a_bad_temperature_is_a_one_line_error_naming_file_and_field(tmp_path, bad):
    d = Checkpoint.from_model(tiny_model(), window=64).to_dict()
    d["temperature"] = bad
    path = tmp_path / "bad.pt"
    torch.save(d, path)
    with pytest.raises(SandwatchError) as err:
        Checkpoint.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "temperature" in msg
    with pytest.raises(SandwatchError, match="temperature"):
        Checkpoint.from_model(tiny_model(), window=64, temperature=bad)


def test_cli_reports_a_bad_temperature_in_one_line(tmp_path, capsys):
    scene_path = write_scene(tmp_path / "scene.tif")
    d = Checkpoint.from_model(tiny_model(), window=64).to_dict()
    d["temperature"] = 0.0
    torch.save(d, tmp_path / "zero.pt")
    assert main(["predict", str(tmp_path / "zero.pt"), str(scene_path), "-o", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zero.pt" in err and "temperature" in err
