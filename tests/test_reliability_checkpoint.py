"""Checkpoints are validated on load: every crafted or damaged field is one line naming the file
and the field (exit 2, nothing written), a window of 1e9 is refused before anything is
allocated, empty/truncated/malicious files are one line, and so is a bad ``last.ckpt`` on
``train --resume``."""

from __future__ import annotations

import copy
import os
import resource
import sys
import time
from pathlib import Path

import pytest
import torch

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.models.checkpoint import Checkpoint, check_weights

sys.path.insert(0, str(Path(__file__).parent))
from test_predict_e2e import tiny_checkpoint, write_scene  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tiny_checkpoint(root / "good.pt", window=64)
    write_scene(root / "scene.tif", 120, 100)
    return root


def crafted(files, tmp_path, change) -> Path:
    d = torch.load(files / "good.pt", weights_only=True)
    d = copy.deepcopy(d)
    change(d)
    path = tmp_path / "crafted.pt"
    torch.save(d, path)
    return path


def predict(capfd, ckpt, files, tmp_path) -> tuple[int, str]:
    out = tmp_path / "maps"
    code = main(["predict", str(ckpt), str(files / "scene.tif"), "-o", str(out), "--edge", "12", "-q"])
    _, err = capfd.readouterr()
    assert "Traceback" not in err
    assert not out.exists()          # refused before any output
    return code, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def set_norm(key, n):
    return lambda d: d["normalization"].__setitem__(key, d["normalization"][key][:n])


def three_bands(d):
    d["bands"] = d["bands"][:3]
    d["normalization"]["low"] = d["normalization"]["low"][:3]
    d["normalization"]["high"] = d["normalization"]["high"][:3]


CASES = {
    # name: (change, field named in the message, words in the message)
    "window 1e9": (lambda d: d.__setitem__("window", 10**9), "'window'", "outside 32..2048"),
    "window negative": (lambda d: d.__setitem__("window", -160), "'window'", "outside"),
    "window fraction": (lambda d: d.__setitem__("window", 64.5), "'window'", "whole number"),
    "window text": (lambda d: d.__setitem__("window", "big"), "'window'", "whole number"),
    "unknown band": (lambda d: d.__setitem__("bands", ["B02", "B99"] + d["bands"][2:]), "'bands'", "B99"),
    "repeated band": (lambda d: d.__setitem__("bands", ["B02"] * 13), "'bands'", "repeats"),
    "normalisation length": (set_norm("low", 3), "'normalization.low'", "3 values for 13 bands"),
    "normalisation NaN": (lambda d: d["normalization"]["high"].__setitem__(0, float("nan")),
                          "'normalization.high'", "finite"),
    "threshold above 1": (lambda d: d.__setitem__("threshold", 1.5), "'threshold'", "0..1"),
    "threshold NaN": (lambda d: d.__setitem__("threshold", float("nan")), "'threshold'", "0..1"),
    "temperature 0": (lambda d: d.__setitem__("temperature", 0.0), "'temperature'", "positive"),
    "unknown arch": (lambda d: d.__setitem__("arch", "resnet999"), "'arch'", "not a known architecture"),
    "unknown option": (lambda d: d.__setitem__("options", {"depth": 3}), "'options'", "depth"),
    "width vs weights": (lambda d: d.__setitem__("options", {"width": 8}), "'options' (width=8)",
                         "does not match the weights"),
    "absurd width": (lambda d: d.__setitem__("options", {"width": 10**9}), "'options'", "cannot build unet"),
    "bands vs weights": (three_bands, "'bands' (3 bands)", "does not match the weights"),
    "weights missing": (lambda d: d["state_dict"].pop(next(iter(d["state_dict"]))), "'state_dict'", "missing"),
    "weights not tensors": (lambda d: d.__setitem__("state_dict", {"a": 1}), "'state_dict'", "tensors"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_field_is_one_line_naming_it(files, tmp_path, capfd, case):
    change, field, words = CASES[case]
    path = crafted(files, tmp_path, change)
    code, err = predict(capfd, path, files, tmp_path)
    line = one_line(err)
    assert code == 2
    assert str(path) in line and f"field {field}" in line and words in line, line


def test_window_of_1e9_is_refused_before_allocating(files, tmp_path):
    path = crafted(files, tmp_path, lambda d: d.__setitem__("window", 10**9))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(SandwatchError, match="field 'window'"):
        Checkpoint.load(path)
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024   # KiB: nothing big allocated


def test_memory_bound_from_the_checkpoints_numbers(files):
    """A window the range allows but whose forward pass would not fit: the estimate is made on the
    meta device (nothing allocated) and compared with the memory there is."""
    ckpt = Checkpoint.load(files / "good.pt")
    big = Checkpoint(ckpt.arch, ckpt.band_spec, ckpt.state_dict, ckpt.options, 2048, 0.5)
    with pytest.raises(SandwatchError, match=r"field 'window' is 2048 px: one window of unet needs about [\d.]+ GiB, "
                                             r"more than this machine's 0.5 GiB"):
        check_weights(big, "big.pt", memory_limit=2**29)
    check_weights(ckpt, "good.pt", memory_limit=2**29)    # the 64 px window fits


def test_valid_checkpoints_still_load_with_per_scene_normalisation(files, tmp_path):
    path = crafted(files, tmp_path, lambda d: d["normalization"].__setitem__("per_scene_k", 2.0))
    ckpt = Checkpoint.load(path)
    assert ckpt.band_spec.normalization.per_scene_k == 2.0 and ckpt.window == 64
    path = crafted(files, tmp_path, lambda d: d["normalization"].__setitem__("per_scene_k", -1.0))
    with pytest.raises(SandwatchError, match="per_scene_k"):
        Checkpoint.load(path)


def test_empty_truncated_and_foreign_files(files, tmp_path, capfd):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    data = (files / "good.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes\n")
    for path, words in ((empty, "is empty (0 bytes)"), (cut, "is truncated"), (text, "is not a torch checkpoint")):
        code, err = predict(capfd, path, files, tmp_path)
        line = one_line(err)
        assert code == 2 and str(path) in line and words in line, line
        assert "EOFError" not in line


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_runs_nothing(files, tmp_path, capfd):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": "sandwatch-checkpoint/1", "arch": _Evil(marker)}, path)
    code, err = predict(capfd, path, files, tmp_path)
    line = one_line(err)
    assert code == 2 and "posix.system" in line and "refused without running them" in line
    assert not marker.exists()


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo-data", str(root), "--sites", "2", "--size", "64"]) == 0
    return root / "manifest.yaml"


def resume(capfd, demo_manifest, run_dir) -> tuple[int, str]:
    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    code = main(["train", str(config), "--set", f"manifest={demo_manifest}", "--set", f"run_dir={run_dir}",
                 "--resume"])
    return code, capfd.readouterr().err


def test_malicious_last_ckpt_on_resume_is_one_line(demo_manifest, tmp_path, capfd):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "PWNED"
    last = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"epoch": 3, "state_dict": {}, "sandwatch": {"format": "sandwatch-checkpoint/1"},
                "loops": _Evil(marker)}, last)
    code, err = resume(capfd, demo_manifest, run_dir)
    line = one_line(err)
    assert code == 2 and str(last) in line and "refused without running them" in line
    assert not marker.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints"]      # nothing written


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", "plain dict"])
def test_damaged_last_ckpt_on_resume_is_one_line(demo_manifest, tmp_path, capfd, content):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    if content == "plain dict":
        torch.save({"weights": torch.zeros(3)}, last)
        words = "is not a Lightning checkpoint written by `sandwatch train`"
    else:
        last.write_bytes(content)
        words = "is empty" if not content else "is truncated"
    code, err = resume(capfd, demo_manifest, run_dir)
    line = one_line(err)
    assert code == 2 and str(last) in line and words in line, line
