"""End to end on small in-memory scenes: checkpoints, exact resume, frozen encoder + cache, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from affine import Affine
from shapely.geometry import box

from sandwatch.grid import Grid
from sandwatch.models import build_model
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.train.config import config_from_dict
from sandwatch.train.data import ArraySource
from sandwatch.train.runner import train

BANDS = ["B02", "B03", "B04"]


def scene(name: str, seed: int, size: int = 128) -> ArraySource:
    """Dark water/land with bright square 'pits'; mine = the squares (learnable from band B04)."""
    rng = np.random.default_rng(seed)
    grid = Grid("EPSG:32644", Affine(10, 0, 600_000 + seed * 10_000, 0, -10, 2_000_000), size, size)
    image = (0.05 + 0.05 * rng.random((3, size, size))).astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(6):
        r, c = rng.integers(0, size - 12, 2)
        mask[r:r + 10, c:c + 10] = 1
    image[2][mask == 1] += 0.3
    weight = np.ones((size, size), np.float32)
    valid = np.ones((size, size), bool)
    valid[:, :4] = False
    x0, y1 = grid.transform.c, grid.transform.f
    aoi = box(x0 + 50, y1 - 10 * size + 200, x0 + 10 * size - 50, y1 - 200)
    return ArraySource(name, grid, image, mask, weight, valid, aoi)


def sources():
    return [scene("a", 1), scene("b", 2)], [scene("v", 3)]


def config(tmp_path, name="run", **over):
    data = {
        "manifest": str(tmp_path / "none.yaml"), "run_dir": str(tmp_path / name),
        "model": {"arch": "unet", "bands": BANDS, "options": {"width": 4}},
        "data": {"window": 64, "windows_per_scene": 6, "num_workers": 0},
        "optim": {"epochs": 3, "batch_size": 4, "lr": 5e-3},
        "trainer": {"accelerator": "cpu", "deterministic": True, "seed": 11, "progress_bar": False},
        "tracking": {"backend": "csv", "overlays": 1},
    }
    for k, v in over.items():
        section, key = k.split("__")
        data.setdefault(section, {})[key] = v
    return config_from_dict(data)


def unet():
    torch.manual_seed(0)
    return build_model("unet", bands=BANDS, width=4)


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_resume_after_interruption_is_exact(tmp_path):
    full = train(config(tmp_path, "full", optim__epochs=2), sources=sources(), model=unet())
    part = config(tmp_path, "part", optim__epochs=2)
    train(part, sources=sources(), model=unet(), max_epochs=1)      # "killed" after epoch 1
    first = Checkpoint.load(tmp_path / "part" / "checkpoints" / "last.ckpt")
    assert first.metadata["epoch"] == 0
    resumed = train(part, resume=True, sources=sources(), model=unet())
    a = Checkpoint.load(full.last).state_dict
    b = Checkpoint.load(resumed.last).state_dict
    assert a.keys() == b.keys()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert diff <= 1e-6
    assert Checkpoint.load(resumed.last).metadata["global_step"] == Checkpoint.load(full.last).metadata["global_step"]
    # the weights did move
    c = unet().state_dict()
    assert max(float((a[k].double() - c[k].double()).abs().max()) for k in a if a[k].is_floating_point()) > 1e-3
    # validation history continues: 3 epochs recorded, the same AP as the full run
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[-1]["val_ap"] == pytest.approx(full.history[-1]["val_ap"], abs=1e-6)


@pytest.mark.slow
def test_checkpoints_load_alone_and_learn(tmp_path):
    cfg = config(tmp_path, "learn", optim__epochs=3, data__windows_per_scene=12)
    res = train(cfg, sources=sources(), model=unet())
    ck = tmp_path / "learn" / "checkpoints"
    for name in ("best.pt", "last.pt", "best.ckpt", "last.ckpt"):
        c = Checkpoint.load(ck / name)
        assert c.arch == "unet" and c.bands == tuple(BANDS) and c.window == 64 and c.options["width"] == 4
    best = Checkpoint.load(ck / "best.pt")
    assert best.metadata["val_ap"] == pytest.approx(max(h["val_ap"] for h in res.history))
    model = best.build_model()
    # the trained model separates the bright squares: AP well above the positive rate
    assert res.best_ap > 0.5
    metrics = json.loads((tmp_path / "learn" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 3 and metrics["throughput"][0]["windows"] == 24
    assert 0 <= metrics["throughput"][0]["data_wait_share"] < 1
    assert any((tmp_path / "learn" / "plots").glob("pr_curve_epoch*.png"))
    assert any((tmp_path / "learn" / "plots").glob("overlays_epoch*.png"))
    x = torch.from_numpy(best.normalize(scene("v", 3).image[None, :, :64, :64]))
    with torch.no_grad():
        assert model(x).shape == (1, 1, 64, 64)


def test_confidence_weights_reach_the_loss(tmp_path):
    """A scene whose mines all weigh 0 trains exactly like a scene without those mines."""
    a, b = scene("a", 1), scene("a", 1)
    a.weight[a.mask == 1] = 0.0         # low confidence, weight 0 -> ignored
    b.mask[:] = 0                       # no mines at all ...
    b.weight[scene("a", 1).mask == 1] = 0.0  # ... and the same pixels ignored
    c = scene("a", 1)                   # the mines counted
    runs = []
    for i, src in enumerate((a, b, c)):
        cfg = config(tmp_path, f"w{i}", optim__epochs=1, data__windows_per_scene=4)
        runs.append(Checkpoint.load(train(cfg, sources=([src], []), model=unet()).last).state_dict)
    diff_ab = max(float((runs[0][k] - runs[1][k]).abs().max()) for k in runs[0] if runs[0][k].is_floating_point())
    diff_ac = max(float((runs[0][k] - runs[2][k]).abs().max()) for k in runs[0] if runs[0][k].is_floating_point())
    assert diff_ab == 0.0
    assert diff_ac > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_tensorboard_and_offline_wandb_record_the_run(tmp_path, backend, monkeypatch):
    """The two other tracking back-ends: metrics per epoch and the PR-curve figure land in the
    run directory (W&B offline: no account, no network)."""
    pytest.importorskip("tensorboardX" if backend == "tensorboard" else "wandb",
                        reason=f"{backend} is not installed (pip install -e '.[dev]')")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / backend
    train(config(tmp_path, backend, optim__epochs=2, tracking__backend=backend), sources=sources(), model=unet())
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    if backend == "tensorboard":
        events = [p for p in files if p.name.startswith("events.out.tfevents")]
        assert events, files
        import struct

        from tensorboardX.proto import event_pb2

        tags, images = set(), set()
        for ev_file in events:
            data = ev_file.read_bytes()
            pos = 0
            while pos < len(data):        # TFRecord: length, crc, payload, crc
                (n,) = struct.unpack("<Q", data[pos:pos + 8])
                ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
                pos += 12 + n + 4
                for v in ev.summary.value:
                    (images if v.HasField("image") else tags).add(v.tag)
        assert {"val_ap", "val_f1"} <= tags and any("pr_curve" in t for t in images), (tags, images)
    else:
        runs = list(run_dir.rglob("offline-run-*"))
        assert runs, files
        wandb_files = [p for p in runs[0].rglob("*.wandb")]
        assert wandb_files and wandb_files[0].stat().st_size > 0
        record = wandb_files[0].read_bytes()       # the offline run's history, for `wandb sync`
        assert b"val_ap" in record and b"val_f1" in record and b"train_loss" in record
        assert list((runs[0] / "files" / "media" / "images").glob("pr_curve*.png"))
        run_id = json.loads((run_dir / "tracking.json").read_text())["wandb_id"]
        assert runs[0].name.endswith(run_id)       # the id a --resume will continue
