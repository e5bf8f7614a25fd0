"""A prediction killed mid-scene resumes from its last finished row block, with the pixels of
a run never killed; a progress file of other settings is never reused.

The model stand-in depends on its batch (its size and each window's place in it), like a
model whose float rounding depends on the batch: a resumed run that batched its windows
differently from a whole run would give other pixels.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sandwatch.grid import Window
from sandwatch.predict import Predictor, predict_scene, tiled_inference
from sandwatch.predict.resume import progress_path

sys.path.insert(0, str(Path(__file__).parent))
from test_predict import make_scene, mean5  # noqa: E402
from test_predict_e2e import tiny_checkpoint, write_scene  # noqa: E402

BANDS = ("B02", "B03", "B04")


@pytest.fixture(autouse=True)
def checkpoint_every_block(monkeypatch):
    """Save progress after every finished block (the library saves at most one a second in
    between, which would make where a stopped test run resumes depend on the machine's speed)."""
    import sandwatch.predict.core as core

    monkeypatch.setattr(core, "CHECKPOINT_SECONDS", 0.0)


def batchy(batch: np.ndarray) -> np.ndarray:
    """5 x 5 mean of band 0, plus a term that depends on the batch's size and each window's
    place in it (changes the 4th decimal: visible in uint8 maps too)."""
    n = len(batch)
    return mean5(batch) + (n * 1e-3 + np.arange(n, dtype=np.float32)[:, None, None] * 3e-3)


def predictor(forward=batchy, fingerprint="batchy-1", **kw) -> Predictor:
    return Predictor(forward, BANDS, 40, kw.pop("threshold", 0.5), name="batchy", fingerprint=fingerprint, **kw)


def stopping_after(calls: int, forward=batchy):
    """``forward`` that stops the run (Ctrl-C) at its ``calls + 1``-th batch."""
    n = {"calls": 0}

    def fwd(batch):
        n["calls"] += 1
        if n["calls"] > calls:
            raise KeyboardInterrupt
        return forward(batch)
    return fwd


def counting(forward=batchy):
    n = {"windows": 0}

    def fwd(batch):
        n["windows"] += len(batch)
        return forward(batch)
    return fwd, n


def read_maps(folder: Path, name: str):
    out = {}
    for key in ("prob", "mask"):
        with rasterio.open(folder / f"{name}.{key}.tif") as ds:
            out[key] = (ds.read(1), ds.tags())
    return out


def assert_same_maps(a: dict, b: dict) -> None:
    for key in ("prob", "mask"):
        assert np.array_equal(a[key][0], b[key][0], equal_nan=a[key][0].dtype.kind == "f"), key
        assert a[key][1] == b[key][1], key


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- the arithmetic: tiled_inference(start_row=...) --------------------------------------------------
@pytest.mark.parametrize("blend", ["none", "cosine"])
@pytest.mark.parametrize("batch_size", [3, 8])
def test_start_row_gives_the_tail_of_a_whole_run_bit_for_bit(blend, batch_size):
    rng = np.random.default_rng(5)
    img = rng.random((1, 173, 131)).astype(np.float32)
    valid = np.ones(img.shape[1:], bool)
    valid[60:64, 10:50] = False

    def read(w):
        return img[:, w.row:w.row_stop, w.col:w.col_stop], valid[w.row:w.row_stop, w.col:w.col_stop]

    def run(**kw):
        fwd, n = counting()
        stats = {}
        blocks = list(tiled_inference(fwd, read, valid.shape, 40, 8, blend=blend, batch_size=batch_size, stats=stats,
                                      **kw))
        return blocks, n["windows"], stats

    whole_blocks, whole_windows, _ = run()
    whole = np.concatenate([p for _, p in whole_blocks])
    for start in (1, 23, 24, 47, 100, 172):
        blocks, windows, stats = run(start_row=start)
        assert blocks[0][0].row == start and blocks[-1][0].row_stop == 173
        tail = np.concatenate([p for _, p in blocks])
        assert np.array_equal(tail, whole[start:], equal_nan=True), start
        # only the windows from the batch of the first one still needed are predicted again
        assert windows == whole_windows - stats["resumed_windows"]
        if start >= 100:                     # four rows of windows are done
            assert stats["resumed_windows"] > 0
    blocks, windows, _ = run(start_row=173)          # everything was done: nothing to predict
    assert blocks == [] and windows == 0


# ---- predict_scene: stopped, then run again --------------------------------------------------------
@pytest.mark.parametrize("case", ["whole", "cosine", "aoi", "float32"])
def test_a_stopped_scene_resumes_with_the_pixels_of_a_whole_run(tmp_path, case):
    from shapely.geometry import box

    scene = make_scene(height=330, width=200, seed=4)
    kw = {"edge": 8, "progress": False, "batch_size": 3}
    if case == "cosine":
        kw["blend"] = "cosine"
    if case == "float32":
        kw["dtype"] = "float32"
    if case == "aoi":
        left, bottom, right, top = scene.grid.bounds
        kw["aoi"] = box(left + 300, bottom + 200, left + 900, top - 400)
    ref = predict_scene(predictor(), scene, tmp_path / "ref", **kw)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):          # about half way through
        predict_scene(predictor(stopping_after(ref.stats["windows"] // 6)), scene, out, **kw)
    progress = json.loads(progress_path(out / "fake.prob.tif").read_text())
    assert 0 < progress["rows"] < 330
    assert not (out / "fake.prob.tif").exists() and not (out / ".fake.lock").exists()
    assert sorted(progress["streams"].values()) == [n for n in leftovers(out) if n.endswith(".tif")]

    fwd, n = counting()
    res = predict_scene(predictor(fwd), scene, out, **kw)
    assert res.stats["resumed_rows"] == progress["rows"] and res.stats["resumed_windows"] > 0
    assert n["windows"] == res.stats["windows"] - res.stats["resumed_windows"] < res.stats["windows"]
    assert_same_maps(read_maps(out, "fake"), read_maps(tmp_path / "ref", "fake"))
    for key in ("mine_pixels", "predicted_pixels", "windows", "polygons"):
        assert res.stats[key] == ref.stats[key], key
    assert leftovers(out) == []                      # no progress, stream or lock file left


@pytest.mark.parametrize("change", ["checkpoint", "threshold", "edge", "tta"])
def test_progress_of_another_checkpoint_threshold_edge_or_tta_is_not_reused(tmp_path, change):
    scene = make_scene(height=330, width=200, seed=6)
    kw = {"edge": 8, "progress": False, "batch_size": 3}
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(predictor(stopping_after(12)), scene, out, **kw)
    old = json.loads(progress_path(out / "fake.prob.tif").read_text())
    assert old["rows"] > 0

    other_kw, pred = dict(kw), predictor
    if change == "checkpoint":
        pred = lambda fwd=batchy: predictor(fwd, fingerprint="batchy-2")   # noqa: E731 - other weights
    elif change == "threshold":
        other_kw["threshold"] = 0.3
    elif change == "edge":
        other_kw["edge"] = 10
    else:
        other_kw["tta"] = True
    fwd, n = counting()
    res = predict_scene(pred(fwd), scene, out, **other_kw)
    assert "resumed_rows" not in res.stats and n["windows"] == res.stats["windows"] * (8 if change == "tta" else 1)
    predict_scene(pred(), scene, tmp_path / "fresh", **other_kw)
    assert_same_maps(read_maps(out, "fake"), read_maps(tmp_path / "fresh", "fake"))
    assert leftovers(out) == []                      # the old progress and stream files are gone


def test_progress_is_saved_after_the_first_block_then_at_most_once_per_interval(tmp_path, monkeypatch):
    import sandwatch.predict.core as core
    from sandwatch.predict.writer import StreamingCOGWriter

    saves = []
    real = StreamingCOGWriter.checkpoint
    monkeypatch.setattr(StreamingCOGWriter, "checkpoint", lambda self: (saves.append(self.path.name), real(self)))
    monkeypatch.setattr(core, "CHECKPOINT_SECONDS", 3600.0)
    scene = make_scene(height=330, width=200, seed=10)
    res = predict_scene(predictor(), scene, tmp_path, edge=8, progress=False, batch_size=3)
    assert res.stats["windows"] > 60 and saves == ["fake.prob.tif", "fake.mask.tif"] * 2   # first and last block
    with pytest.raises(KeyboardInterrupt):
        predict_scene(predictor(stopping_after(15)), scene, tmp_path / "stopped", edge=8, progress=False, batch_size=3)
    assert json.loads(progress_path(tmp_path / "stopped" / "fake.prob.tif").read_text())["rows"] == 24  # block 1


def test_a_model_without_fingerprint_is_never_resumed(tmp_path):
    scene = make_scene(height=330, width=200, seed=7)
    with pytest.raises(KeyboardInterrupt):
        predict_scene(predictor(stopping_after(12), fingerprint=None), scene, tmp_path, edge=8, progress=False)
    assert not progress_path(tmp_path / "fake.prob.tif").exists()
    res = predict_scene(predictor(fingerprint=None), scene, tmp_path, edge=8, progress=False)
    assert "resumed_rows" not in res.stats and leftovers(tmp_path) == []


def test_a_progress_file_whose_streams_are_gone_or_damaged_starts_afresh(tmp_path):
    scene = make_scene(height=330, width=200, seed=8)
    kw = {"edge": 8, "progress": False, "batch_size": 3}
    predict_scene(predictor(), scene, tmp_path / "ref", **kw)
    for damage in ("delete", "garbage"):
        out = tmp_path / damage
        with pytest.raises(KeyboardInterrupt):
            predict_scene(predictor(stopping_after(12)), scene, out, **kw)
        stream = out / json.loads(progress_path(out / "fake.prob.tif").read_text())["streams"]["mask"]
        if damage == "delete":
            stream.unlink()
        else:
            stream.write_bytes(b"not a tiff")
        res = predict_scene(predictor(), scene, out, **kw)
        assert "resumed_rows" not in res.stats
        assert_same_maps(read_maps(out, "fake"), read_maps(tmp_path / "ref", "fake"))
        assert leftovers(out) == []


# ---- the CLI, killed for real --------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_scene_then_rerun_gives_the_pixels_of_an_uninterrupted_run(tmp_path):
    """A real ``sandwatch predict`` is SIGKILLed after its first finished row blocks; the same
    command again resumes there and its maps equal, bit for bit, those of a run never killed.
    The same killed state with another --threshold starts from row 0."""
    from sandwatch.cli.main import main

    ckpt = tmp_path / "m.pt"
    tiny_checkpoint(ckpt, window=64, seed=1)
    scene = tmp_path / "scene.tif"
    write_scene(scene, height=960, width=640, seed=2)
    args = [str(ckpt), str(scene), "--edge", "12", "-q"]
    assert main(["predict", *args, "-o", str(tmp_path / "ref")]) == 0

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sandwatch.cli.main", "predict", *args, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    progress = progress_path(out / "scene.prob.tif")
    try:
        deadline = time.monotonic() + 300
        while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-scene"
    rows = json.loads(progress.read_text())["rows"]
    assert 0 < rows < 960 and not (out / "scene.prob.tif").exists()
    assert (out / ".scene.lock").exists()            # left by the killed run: its PID is dead now
    killed = {p.name: p.read_bytes() for p in out.iterdir()}

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed at row {rows}," in rerun.stdout, rerun.stdout
    assert "took over the lock of process" in rerun.stderr and "no longer running" in rerun.stderr
    assert_same_maps(read_maps(out, "scene"), read_maps(tmp_path / "ref", "scene"))
    assert leftovers(out) == []

    other = tmp_path / "other"                        # the same killed state, another threshold
    other.mkdir()
    for name, data in killed.items():
        (other / name).write_bytes(data)
    assert main(["predict", *args, "--threshold", "0.3", "-o", str(other)]) == 0
    assert main(["predict", *args, "--threshold", "0.3", "-o", str(tmp_path / "ref03")]) == 0
    assert_same_maps(read_maps(other, "scene"), read_maps(tmp_path / "ref03", "scene"))
    assert leftovers(other) == []


def test_window_blocks_of_a_resumed_run_cover_the_rest(tmp_path):
    """The stream files of a stopped run hold the finished rows: reading them back gives the
    whole run's pixels above the resume row (what the resumed run keeps)."""
    scene = make_scene(height=330, width=200, seed=9)
    kw = {"edge": 8, "progress": False, "batch_size": 3}
    predict_scene(predictor(), scene, tmp_path / "ref", **kw)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(predictor(stopping_after(20)), scene, out, **kw)
    state = json.loads(progress_path(out / "fake.prob.tif").read_text())
    rows = state["rows"]
    ref = read_maps(tmp_path / "ref", "fake")
    for key, name in (("prob", "probability"), ("mask", "mask")):
        with rasterio.open(out / state["streams"][name]) as ds:
            done = ds.read(1, window=Window(0, 0, rows, 200).to_rasterio())
        assert np.array_equal(done, ref[key][0][:rows], equal_nan=done.dtype.kind == "f"), key
