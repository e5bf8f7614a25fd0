"""Pretrained weights from local files: the three published layouts, clear failures, safe loading,
and the `sandwatch models` command."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.models import build_model, detect_layout, inspect_weights, load_pretrained, read_weights

torch.set_num_threads(2)

TINY_SATMAE = {"embed_dim": 64, "depth": 2, "num_heads": 4, "channel_embed": 16}


def random_like(sd, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if v.dtype.is_floating_point:
            t = torch.randn(v.shape, generator=g) * 0.05
            out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
        else:
            out[k] = v.clone()
    return out


def moco_file(path, arch="ssl4eo-resnet18", seed=1):
    enc = random_like(build_model(arch).encoder.state_dict(), seed)
    sd = {f"module.encoder_q.{k}": v for k, v in enc.items()}
    sd["module.encoder_q.fc.0.weight"] = torch.randn(8, 512)   # MoCo projection head
    sd["module.encoder_q.fc.2.weight"] = torch.randn(4, 8)
    sd["module.encoder_k.conv1.weight"] = torch.randn(64, 13, 7, 7)  # momentum encoder
    sd["module.queue"] = torch.randn(4, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 99, "arch": "resnet18", "state_dict": sd,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return enc


def timm_file(path, arch="ssl4eo-resnet50", seed=2):
    enc = random_like(build_model(arch).encoder.state_dict(), seed)
    torch.save({**enc, "fc.weight": torch.randn(1000, 2048), "fc.bias": torch.zeros(1000)}, path)
    return enc


def satmae_file(path, seed=3, grid=12):
    enc = random_like(build_model("satmae-base", **TINY_SATMAE).encoder.state_dict(), seed)
    enc["pos_embed"] = torch.randn(1, grid * grid + 1, 64 - 16)
    extras = {"mask_token": torch.randn(1, 1, 64), "decoder_embed.weight": torch.randn(32, 64),
              "decoder_pos_embed": torch.randn(1, 145, 16), "decoder_pred.weight": torch.randn(64, 32)}
    args = argparse.Namespace(model="mae_vit_base_patch16", input_size=96, patch_size=8, grouped_bands=[[0, 1, 2, 6]])
    torch.save({"model": {**enc, **extras}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 199,
                "args": args}, path)
    return enc


def test_ssl4eo_moco_layout_loads_exactly_and_freezes(tmp_path):
    path = tmp_path / "B13_rn18_moco_0099_ckpt.pth"
    enc = moco_file(path)
    wf = read_weights(path)
    assert (wf.layout, wf.arch, wf.n_bands) == ("ssl4eo-moco", "ssl4eo-resnet18", 13)
    assert sorted(wf.ignored) == ["module.encoder_k.conv1.weight", "module.encoder_q.fc.0.weight",
                                  "module.encoder_q.fc.2.weight", "module.queue", "module.queue_ptr"]
    torch.manual_seed(0)
    fresh = build_model("ssl4eo-resnet18").eval()
    torch.manual_seed(0)
    model = build_model("ssl4eo-resnet18", weights=path).eval()
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc[k]), k
    # decoder untouched by loading (same seed), outputs changed by the encoder weights
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, fresh.decoder.state_dict()[k])
    x = torch.rand(1, 13, 64, 64)
    with torch.no_grad():
        assert (model(x) - fresh(x)).abs().max() > 1e-3
    assert model.encoder_frozen
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert "weights" not in model.options  # a checkpoint will not point at this file
    assert not build_model("ssl4eo-resnet18", weights=path, freeze_encoder=False).encoder_frozen


def test_torchgeo_timm_layout_recognises_resnet50(tmp_path):
    path = tmp_path / "resnet50_sentinel2_all_moco-df8b932e.pth"
    enc = timm_file(path)
    wf = read_weights(path)
    assert (wf.layout, wf.arch, wf.n_bands, wf.ignored) == ("timm", "ssl4eo-resnet50", 13, ["fc.bias", "fc.weight"]) or \
        (wf.layout, wf.arch, wf.n_bands, sorted(wf.ignored)) == ("timm", "ssl4eo-resnet50", 13, ["fc.bias", "fc.weight"])
    model = build_model("ssl4eo-resnet50", weights=path, decoder_channels=[8, 8, 8, 8])
    assert torch.equal(model.encoder.layer4[2].conv3.weight, enc["layer4.2.conv3.weight"])
    assert torch.equal(model.encoder.bn1.running_var, enc["bn1.running_var"])


def test_satmae_layout_with_namespace_args_loads(tmp_path):
    path = tmp_path / "pretrain-vit-base-e199.pth"
    enc = satmae_file(path)
    with pytest.raises(Exception):  # the file really needs the allow-list
        torch.load(path, weights_only=True)
    wf = read_weights(path)
    assert wf.layout == "satmae" and wf.arch == "satmae-base" and wf.n_bands == 10
    assert wf.info["epoch"] == 199 and wf.info["args"]["input_size"] == 96
    assert {"mask_token", "decoder_embed.weight", "decoder_pos_embed", "decoder_pred.weight"} == set(wf.ignored)
    assert wf.options["embed_dim"] == 64 and wf.options["depth"] == 2 and wf.options["channel_embed"] == 16
    torch.manual_seed(0)
    fresh = build_model("satmae-base", **TINY_SATMAE).eval()
    torch.manual_seed(0)
    model = build_model("satmae-base", weights=path, **TINY_SATMAE).eval()
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc[k]), k
    x = torch.rand(1, 10, 160, 160)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 1, 160, 160)
        assert (y - fresh(x)).abs().max() > 1e-3


def test_satmae_pos_embed_of_another_grid_is_resampled(tmp_path):
    path = tmp_path / "vit-224.pth"
    satmae_file(path, grid=14)  # a 112 px pretraining grid
    model = build_model("satmae-base", **TINY_SATMAE)
    load_pretrained(model, path)
    assert model.encoder.pos_embed.shape == (1, 145, 48)
    # the CLS row is carried over untouched
    raw = torch.load(path, weights_only=False)["model"]["pos_embed"]
    assert torch.equal(model.encoder.pos_embed[0, 0], raw[0, 0])


def test_wrong_layouts_fail_with_one_clear_message(tmp_path):
    r18 = tmp_path / "rn18.pth"
    moco_file(r18)
    with pytest.raises(SandwatchError) as err:
        build_model("ssl4eo-resnet50", weights=r18)
    msg = str(err.value)
    assert "\n" not in msg and "rn18.pth" in msg
    assert "missing [layer1.0.conv3.weight" in msg and "wrong-shape" in msg and "ssl4eo-resnet18" in msg
    # a renamed key: listed by name as missing and unexpected
    enc = build_model("ssl4eo-resnet18").encoder.state_dict()
    enc["layer1.0.conv1.kernel"] = enc.pop("layer1.0.conv1.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(enc, bad)
    with pytest.raises(SandwatchError, match=r"1 missing \[layer1.0.conv1.weight\]; 1 unexpected \[layer1.0.conv1.kernel\]"):
        build_model("ssl4eo-resnet18", weights=bad)
    # a SatMAE file for a ResNet: refused by layout
    sat = tmp_path / "sat.pth"
    satmae_file(sat)
    with pytest.raises(SandwatchError, match="holds satmae weights for satmae-base.*--arch satmae-base"):
        build_model("ssl4eo-resnet18", weights=sat)
    # 13-band weights into a 3-band ResNet: a shape mismatch on conv1
    with pytest.raises(SandwatchError, match=r"conv1.weight: file \(64, 13, 7, 7\) vs model \(64, 3, 7, 7\)"):
        build_model("ssl4eo-resnet18", bands=["B04", "B03", "B02"], weights=r18)
    # not weights at all
    junk = tmp_path / "notes.pth"
    junk.write_text("hello")
    with pytest.raises(SandwatchError, match="notes.pth: is not a readable PyTorch file"):
        read_weights(junk)
    other = tmp_path / "other.pth"
    torch.save({"foo": 1}, other)
    with pytest.raises(SandwatchError, match="not a known weights layout"):
        read_weights(other)


def _make_dir(path):  # what an unsafe pickle would run
    os.mkdir(path)


class Booby:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_unsafe_pickles_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Booby(marker)}, path)
    with pytest.raises(SandwatchError, match=r"evil.pth: needs unsafe unpickling \(posix.mkdir\); refused"):
        read_weights(path)
    assert not marker.exists()
    assert main(["models", "inspect", str(path)]) == 2
    assert not marker.exists()


def test_detect_layout():
    t = torch.zeros(1)
    assert detect_layout({"state_dict": {"module.encoder_q.conv1.weight": t}}) == "ssl4eo-moco"
    assert detect_layout({"conv1.weight": t, "bn1.weight": t}) == "timm"
    assert detect_layout({"model": {"patch_embed.0.proj.weight": t, "pos_embed": t}}) == "satmae"
    assert detect_layout({"format": "sandwatch-checkpoint/1"}) == "sandwatch"
    assert detect_layout({"weights": [1, 2]}) is None and detect_layout([t]) is None


# --- the CLI ---------------------------------------------------------------------------------

def test_models_lists_the_zoo_as_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["unet", "ssl4eo-resnet18", "ssl4eo-resnet50", "satmae-base", "satmae-large"]
    assert rows["satmae-large"]["bands"][0] == "B02" and len(rows["satmae-large"]["bands"]) == 10
    assert rows["satmae-base"]["trainable"] == 590_849
    assert rows["ssl4eo-resnet18"]["encoder_parameters"] == 11_207_872
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "31.04 M" in out and "303.87 M" in out


def test_models_inspect_reports_and_exits(tmp_path, capsys):
    path = tmp_path / "B13_rn18_moco_0099_ckpt.pth"
    moco_file(path)
    assert main(["models", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout:      ssl4eo-moco" in out and "architecture: ssl4eo-resnet18" in out
    assert "loaded:      120 tensors" in out and "ignored:     5" in out and "OK, loads into ssl4eo-resnet18" in out
    assert main(["models", "inspect", str(path), "--arch", "ssl4eo-resnet50"]) == 1
    out = capsys.readouterr().out
    assert "WOULD NOT LOAD" in out and "  - layer1.0.conv3.weight" in out
    assert main(["models", "inspect", str(path), "--arch", "satmae-base", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and "cls_token" in rep["missing"] and "conv1.weight" in rep["unexpected"]
    sat = tmp_path / "pretrain-vit-base-e199.pth"
    satmae_file(sat)
    assert main(["models", "inspect", str(sat), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["layout"], rep["arch"], rep["n_bands"], rep["missing"]) == ("satmae", "satmae-base", 10, [])
    assert main(["models", "inspect", str(tmp_path / "absent.pth")]) == 2
    assert "absent.pth: no such weights file" in capsys.readouterr().err


def test_inspect_a_sandwatch_checkpoint(tmp_path):
    from sandwatch.models import Checkpoint

    model = build_model("unet", bands=["R", "G", "B"], width=8)
    path = Checkpoint.from_model(model).save(tmp_path / "best.pt")
    result = inspect_weights(path)
    assert result.weights.layout == "sandwatch" and result.arch == "unet" and result.bands == ("R", "G", "B")
    assert result.report.ok and len(result.report.loaded) == len(model.state_dict())
