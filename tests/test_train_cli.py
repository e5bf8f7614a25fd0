"""`sandwatch train`: help, errors, and end to end on synthetic and real scenes (incl. SIGKILL + --resume)."""

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
import torch
import yaml

from conftest import shared_path
from sandwatch.cli.main import main
from sandwatch.models.checkpoint import Checkpoint

TINY = {
    "profile": "cpu",
    "model": {"arch": "unet", "options": {"width": 4}},
    "data": {"window": 64, "windows_per_scene": 4, "num_workers": 1},
    "optim": {"epochs": 2, "batch_size": 4},
    "trainer": {"progress_bar": False, "seed": 0},
    "tracking": {"backend": "csv", "overlays": 1},
}


def test_help_teaches(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "sandwatch train configs/default.yaml" in out and "--resume" in out and "--set" in out


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("manifest: m.yaml\noptim: {epochs: -1}\n")
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.epochs" in err and "c.yaml" in err
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"observations": []}))
    (tmp_path / "d.yaml").write_text("manifest: m.yaml\nrun_dir: r\n")
    assert main(["train", str(tmp_path / "d.yaml")]) == 2
    assert "split" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_print_config_fills_defaults(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("manifest: m.yaml\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--print-config", "--set", "optim.epochs=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["epochs"] == 7 and cfg["data"]["window"] == 160 and cfg["loss"]["pos_weight"] == 6.0


def test_shipped_configs_are_valid_and_published():
    from sandwatch.train.config import TrainConfig, load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    d = load_config(root / "default.yaml")
    assert d == TrainConfig(manifest=d.manifest, run_dir=d.run_dir)  # the file states the code's defaults
    c = load_config(root / "cpu.yaml")
    assert c.trainer.accelerator == "cpu" and c.batch_size < d.batch_size and c.data.window == 160
    p = load_config(root / "linear-probe.yaml")
    assert p.model.freeze_encoder and p.use_cache and p.model.options["decoder_channels"] == [8, 16, 32, 64]
    from sandwatch.models import build_model

    model = build_model(p.model.arch, **p.model.options)          # the options build the model they name
    assert sum(q.numel() for q in model.decoder.parameters()) < 1.5e6


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sandwatch.dataset.manifest import load_manifest, save_manifest
    from sandwatch.synthetic import write_demo_data

    root = tmp_path_factory.mktemp("demo")
    path = write_demo_data(root, sites=2, size=128, seed=0, progress=False)
    m = load_manifest(path)
    first = m.sites()[0]
    for o in m.observations:
        o.split = "train" if o.site == first else "val"
    return save_manifest(m, path)


def _write_config(path: Path, manifest: Path, run_dir: Path, **over) -> Path:
    data = json.loads(json.dumps(TINY))
    data.update({"manifest": str(manifest), "run_dir": str(run_dir)})
    for k, v in over.items():
        data[k].update(v)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_demo_end_to_end_through_the_contracts(demo, tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", demo, tmp_path / "run")
    assert main(["train", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "best checkpoint" in out
    best = Checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best.arch == "unet" and len(best.bands) == 13 and best.window == 64
    assert len(best.metadata["train_observations"]) == 2 and len(best.metadata["val_observations"]) == 2
    hist = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1]
    assert all(0 <= e["val_ap"] <= 1 for e in hist["epochs"])
    assert hist["throughput"][0]["windows"] == 8  # 4 windows x 2 training scenes
    # the same run dir again without --resume: refused, nothing overwritten
    assert main(["train", str(cfg)]) == 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_through_the_cli(demo, tmp_path):
    """`strategy: ddp` with 2 CPU devices, as a user runs it: Lightning starts a second process
    (gloo), each rank trains on its half of every epoch, rank 0 writes one checkpoint."""
    cfg = _write_config(tmp_path / "c.yaml", demo, tmp_path / "run",
                        trainer={"strategy": "ddp", "devices": 2, "accelerator": "cpu"}, data={"num_workers": 0})
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(20000 + os.getpid() % 20000))
    proc = subprocess.run([sys.executable, "-m", "sandwatch", "train", str(cfg)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hist = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1] and all(0 <= e["val_ap"] <= 1 for e in hist["epochs"])
    assert [t["windows"] for t in hist["throughput"]] == [4, 4]    # rank 0: half of 4 windows x 2 scenes
    best = Checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert best.metadata["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in best.state_dict.values() if v.is_floating_point())


@pytest.mark.slow
def test_sigkill_then_resume_loses_at_most_one_epoch(demo, tmp_path):
    # enough epochs that the run is still going when the poller sees epoch 1 (tiny epochs take
    # well under a second)
    cfg = _write_config(tmp_path / "c.yaml", demo, tmp_path / "run", optim={"epochs": 10})
    cmd = [sys.executable, "-m", "sandwatch", "train", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # poll the file --resume reads (Lightning's last.ckpt): the exported last.pt is written a
    # moment earlier in the same epoch end, so a kill right after seeing it can still find
    # last.ckpt one epoch behind
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and Checkpoint.load(last).metadata["epoch"] >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    killed_at = Checkpoint.load(tmp_path / "run" / "checkpoints" / "last.ckpt").metadata["epoch"]
    assert killed_at >= 1  # a whole finished epoch survived the kill
    assert not list((tmp_path / "run" / "checkpoints").glob("*.partial*"))
    assert main(["train", str(cfg), "--resume"]) == 0
    hist = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == list(range(10))
    assert Checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt").metadata["epoch"] == 9


@pytest.mark.slow
@pytest.mark.realdata
def test_real_rgb_recipe_on_real_indian_sand_mining(tmp_path, capsys):
    """configs/real-rgb.yaml as a user runs it, on a small budget: train on the Bhargavi scene
    (2018-12), validate on the Wainganga scene (2023-05, another river, another season). The
    model must rank mine pixels far above the constant baseline (AP = the positive rate)."""
    root = shared_path("india-sandmining")
    obs = []
    for name, split in (("bhargavi-khordha-2018-12", "train"), ("wainganga-gondiya-2023-05", "val")):
        d = root / name
        obs.append({"id": name, "site": name.rsplit("-", 2)[0], "date": f"{name[-7:]}-15", "scene": str(d / "rgb.tif"),
                    "annotations": str(d / "annotations.geojson"), "aoi": str(d / "rivers.geojson"), "split": split})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"observations": obs}))
    recipe = Path(__file__).resolve().parents[1] / "configs" / "real-rgb.yaml"
    assert main(["train", str(recipe), "--set", f"manifest={tmp_path / 'm.yaml'}", "--set", f"run_dir={tmp_path / 'run'}",
                 "--set", "optim.steps=64", "--set", "trainer.progress_bar=false", "--set", "tracking.backend=none"]) == 0
    out = capsys.readouterr().out
    assert f"best checkpoint: {tmp_path / 'run' / 'checkpoints' / 'best.pt'}" in out
    best = Checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best.bands == ("R", "G", "B") and best.band_spec.normalization.per_scene
    meta = best.metadata
    with rasterio.open(root / "wainganga-gondiya-2023-05" / "labels_mask.tif") as ds:
        mine = ds.read(1) > 0
    with rasterio.open(root / "wainganga-gondiya-2023-05" / "rivers_mask.tif") as ds:
        aoi = ds.read(1) > 0
    positive_rate = float(mine[aoi].mean())                   # about 0.04
    assert meta["val_ap"] > 4 * positive_rate, (meta["val_ap"], positive_rate)
    # calibrated on validation: F1 at the stored threshold is the best F1 there
    assert best.threshold == pytest.approx(meta["val_calibrated_threshold"])
    assert meta["val_f1_at_threshold"] >= meta["val_best_f1"] - 0.03
    assert np.isfinite(best.temperature) and 0.25 <= best.temperature <= 4
