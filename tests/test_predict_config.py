"""PredictConfig: one typed object for how a scene is predicted (defaults = the published
method), loadable from YAML, overridden by keywords and by the options given on the CLI."""

from __future__ import annotations

import dataclasses

import pytest

from sandwatch.errors import SandwatchError
from sandwatch.predict import PredictConfig, predict_config
from sandwatch.published import AOI_BUFFER_M, EDGE_PX


def test_defaults_are_the_published_method():
    cfg = PredictConfig()
    assert (cfg.edge, cfg.aoi_buffer_m, cfg.threshold, cfg.tta, cfg.dtype) == (EDGE_PX, AOI_BUFFER_M, None, False, "uint8")
    assert predict_config(None, edge=8).edge == 8 and predict_config(cfg) is cfg


@pytest.mark.parametrize("field, value, option", [
    ("dtype", "int16", "--dtype"), ("blend", "gauss", "--blend"), ("batch_size", 0, "--batch-size"),
    ("threshold", 50.0, "--threshold"), ("edge", -1, "--edge"), ("aoi_buffer_m", -5.0, "--aoi-buffer"),
])
def test_each_bad_field_is_one_line_naming_its_option(field, value, option):
    with pytest.raises(SandwatchError, match=f"^{option}: "):
        PredictConfig(**{field: value})


def test_yaml_then_keywords(tmp_path):
    path = tmp_path / "predict.yaml"
    path.write_text("edge: 12\ntta: true\nbatch_size: 4\n")
    cfg = PredictConfig.from_yaml(path, batch_size=2)
    assert (cfg.edge, cfg.tta, cfg.batch_size) == (12, True, 2)
    assert dataclasses.replace(cfg) == cfg
    path.write_text("edg: 12\n")
    with pytest.raises(SandwatchError, match="unknown setting 'edg'"):
        PredictConfig.from_yaml(path)
    path.write_text("- 1\n")
    with pytest.raises(SandwatchError, match="not a mapping"):
        PredictConfig.from_yaml(path)
    with pytest.raises(SandwatchError, match="no such predict config"):
        PredictConfig.from_yaml(tmp_path / "missing.yaml")


def test_cli_config_file_and_given_options(tmp_path, monkeypatch):
    """`predict --config F` takes F's settings, and only the options typed on the command line
    override them (an option left at its default does not)."""
    import sandwatch.predict as predict_pkg
    from sandwatch.cli.main import main
    from sandwatch.models.checkpoint import Checkpoint

    seen = {}

    def fake_predict_scenes(ckpt, scenes, out_dir, config, **kw):
        seen["config"] = config
        return []

    monkeypatch.setattr(predict_pkg, "predict_scenes", fake_predict_scenes)
    monkeypatch.setattr(Checkpoint, "load", staticmethod(lambda path: object()))
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("edge: 12\nbatch_size: 4\ntta: true\n")
    code = main(["predict", str(tmp_path / "m.pt"), "scene.tif", "-o", str(tmp_path / "out"),
                 "--config", str(cfg_file), "--batch-size", "2", "-q"])
    assert code == 0
    cfg = seen["config"]
    assert (cfg.edge, cfg.batch_size, cfg.tta, cfg.progress) == (12, 2, True, False)
    code = main(["predict", str(tmp_path / "m.pt"), "scene.tif", "-o", str(tmp_path / "out"), "--edge", "20"])
    assert code == 0 and seen["config"].edge == 20 and seen["config"].batch_size == 8
