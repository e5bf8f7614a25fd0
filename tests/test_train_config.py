"""Training config: published defaults, YAML + --set overrides, CPU profile, clear errors."""

from __future__ import annotations

import pytest
import yaml

from sandwatch.errors import SandwatchError
from sandwatch.train.config import TrainConfig, config_from_dict, default_config_yaml, load_config


def test_published_defaults():
    cfg = TrainConfig(manifest="m.yaml")
    assert cfg.data.window == 160
    assert cfg.data.windows_factor == 2.0
    assert cfg.data.rot90 and cfg.data.flip
    assert cfg.loss.pos_weight == 6.0 and cfg.loss.dice_weight == 0.0
    assert cfg.optim.epochs == 20
    assert cfg.lr == pytest.approx(5e-4) and cfg.batch_size == 128
    sat = TrainConfig(manifest="m.yaml", model={"arch": "satmae-large"})
    assert sat.lr == pytest.approx(1e-3) and sat.batch_size == 64
    assert cfg.tracking.backend == "mlflow"
    # windows per scene per epoch = ceil(AOI px / 160^2) x 2
    assert cfg.windows_for(160 * 160) == 2
    assert cfg.windows_for(160 * 160 + 1) == 4
    assert cfg.windows_for(10) == 2
    assert cfg.windows_for(1_000_000) == 2 * 40  # ceil(39.06) = 40


def test_yaml_file_overrides_and_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "manifest": "data/manifest.yaml", "run_dir": "runs/a",
        "model": {"arch": "unet", "bands": ["R", "G", "B"], "options": {"width": 8}},
        "optim": {"epochs": 3}}))
    cfg = load_config(tmp_path / "c.yaml", ["optim.lr=1e-3", "data.window=64", "model.options.width=4",
                                             "data.rot90=false", "loss.dice_weight=0.5"])
    assert cfg.manifest == str(tmp_path / "data" / "manifest.yaml")
    assert cfg.run_dir == str(tmp_path / "runs" / "a")
    assert cfg.optim.epochs == 3 and cfg.lr == pytest.approx(1e-3)
    # a path given with --set is relative to the current directory, like any command-line path
    monkeypatch.chdir(tmp_path / "..")
    cfg2 = load_config(tmp_path / "c.yaml", ["manifest=elsewhere/m.yaml"])
    assert cfg2.manifest == str((tmp_path / ".." / "elsewhere" / "m.yaml").resolve())
    assert cfg2.run_dir == str(tmp_path / "runs" / "a")
    assert cfg.data.window == 64 and cfg.data.rot90 is False
    assert cfg.model.options == {"width": 4}
    assert cfg.loss.dice_weight == 0.5
    assert load_config(tmp_path / "c.yaml", ["model.bands=B04,B03,B02"]).model.bands == ["B04", "B03", "B02"]


def test_cpu_profile_is_smaller_but_user_wins():
    cpu = config_from_dict({"manifest": "m", "profile": "cpu"})
    assert cpu.batch_size == 16 and cpu.data.num_workers == 2 and cpu.trainer.accelerator == "cpu"
    assert cpu.data.window == 160 and cpu.optim.epochs == 20  # the method itself is unchanged
    mine = config_from_dict({"manifest": "m", "profile": "cpu", "optim": {"batch_size": 8}})
    assert mine.batch_size == 8 and mine.trainer.accelerator == "cpu"


def test_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(SandwatchError, match=r"optim.epochs") as e:
        config_from_dict({"manifest": "m"}, ["optim.epochs=0"])
    assert "\n" not in str(e.value)
    with pytest.raises(SandwatchError, match="data.windw"):
        config_from_dict({"manifest": "m"}, ["data.windw=3"])
    with pytest.raises(SandwatchError, match="key=value"):
        config_from_dict({"manifest": "m"}, ["optim.lr"])
    with pytest.raises(SandwatchError, match="no such config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(SandwatchError, match="freeze_encoder"):
        config_from_dict({"manifest": "m", "cache": {"enabled": True}})


def test_default_yaml_round_trips():
    data = yaml.safe_load(default_config_yaml("m.yaml", "runs/x"))
    cfg = config_from_dict(data)
    assert cfg == TrainConfig(manifest="m.yaml", run_dir="runs/x")
