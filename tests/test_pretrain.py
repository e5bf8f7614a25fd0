"""sandwatch pretrain on small synthetic river scenes: MoCo (SSL4EO ResNet18) and MAE (SatMAE),
losses that fall, files in the published layouts that the zoo and train read, exact resume."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.models import build_model, read_weights
from sandwatch.pretrain import pretrain, pretrain_config

torch.set_num_threads(2)
TINY_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 4, "channel_embed": 16}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Two synthetic river sites, two dates each (13-band L1C-like GeoTIFFs, rivers, polygons)."""
    from sandwatch.synthetic.demo import DemoConfig, write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo"), config=DemoConfig(sites=2, size=128, seed=0, s1=False))


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def moco_config(manifest, run_dir, **over):
    data = {"manifest": str(manifest), "run_dir": str(run_dir), "model": {"arch": "ssl4eo-resnet18"},
            "data": {"window": 32, "epoch_windows": 48, "num_workers": 0},
            "moco": {"queue": 64, "hidden": 64, "dim": 32},
            "optim": {"epochs": 4, "batch_size": 8, "lr": 0.05},
            "trainer": {"accelerator": "cpu", "seed": 1, "progress_bar": False, "deterministic": True},
            "tracking": {"backend": "csv"}}
    for k, v in over.items():
        section, key = k.split("__")
        data.setdefault(section, {})[key] = v
    return pretrain_config(data)


def mae_config(manifest, run_dir, **over):
    cfg = moco_config(manifest, run_dir, **over).model_dump()
    cfg["model"] = {"arch": "satmae-base", "options": dict(TINY_VIT), "weights": cfg["model"]["weights"]}
    cfg["mae"] = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4, "decoder_channel_embed": 8}
    cfg["optim"]["lr"] = 1e-3
    return pretrain_config(cfg)


def fixed_pairs(cfg, n=16):
    """The two views of the first ``n`` windows of epoch 0 (the same for any model)."""
    from sandwatch.pretrain.runner import prepare

    task, loader, _ = prepare(cfg)
    items = [loader.dataset[(0, s, k)] for s, c in enumerate(loader.dataset.counts) for k in range(c)][:n]
    return task, torch.stack([it["image"] for it in items]), torch.stack([it["image2"] for it in items])


@pytest.fixture(scope="module")
def moco_run(demo, tmp_path_factory):
    """A 2-epoch MoCo v2 run (12 steps) that several tests look at."""
    return pretrain(moco_config(demo, tmp_path_factory.mktemp("moco") / "run", optim__epochs=2))


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_moco_loss_decreases_on_river_windows(demo, tmp_path, version):
    """The MoCo loss of 16 fixed windows of the synthetic river scenes (two views each: crops,
    colour, rotation, the other date of the site) falls as the encoder learns them. v2: after
    the queue holds real keys (step 4 on), the loss against them falls; v3: in-batch."""
    torch.manual_seed(0)                 # the random encoder it starts from (seeds 0-2 fall by 0.4-0.8 in v2)
    task, x1, x2 = fixed_pairs(moco_config(demo, tmp_path / "r", moco__version=version), 16 if version == "v2" else 8)
    task.train()
    opt = (torch.optim.SGD(task.trainable(), lr=0.05, momentum=0.9) if version == "v2"
           else torch.optim.AdamW(task.trainable(), lr=1e-3))
    losses = []
    for _ in range(30 if version == "v2" else 15):
        loss, extra = task.loss({"image": x1, "image2": x2})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if version == "v2":
        assert np.mean(losses[-5:]) < np.mean(losses[4:9]) - 0.2, losses
        assert int(task.queue_ptr) == (30 * 16) % 64
    else:
        assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
        assert float(extra["train_acc"]) > 0.5


def test_moco_writes_the_ssl4eo_layout_that_zoo_and_train_read(demo, moco_run, tmp_path, capsys):
    result = moco_run
    assert [h["global_step"] for h in result.history] == [6, 12] and all(np.isfinite(result.losses))
    # the contrastive top-1 accuracy of each epoch is recorded beside the loss (metrics.json too)
    assert all(0 <= h["train_acc"] <= 1 for h in result.history)
    saved_metrics = json.loads((result.run_dir / "metrics.json").read_text())["epochs"]
    assert [h["train_acc"] for h in saved_metrics] == [h["train_acc"] for h in result.history]
    wf = read_weights(result.weights)
    assert (wf.layout, wf.arch, wf.n_bands) == ("ssl4eo-moco", "ssl4eo-resnet18", 13)
    assert {"module.queue", "module.queue_ptr"} <= set(wf.ignored)
    assert any(k.startswith("module.encoder_k.") for k in wf.ignored)
    assert any(k.startswith("module.encoder_q.fc.") for k in wf.ignored)
    saved = torch.load(result.weights, weights_only=True)
    assert saved["sandwatch_pretrain"]["seasonal_pairs"] == 4     # both sites: two dates on one grid
    assert saved["sandwatch_pretrain"]["global_step"] == 12
    # the zoo's loader takes it into the segmentation model, encoder bit for bit, frozen
    model = build_model("ssl4eo-resnet18", weights=result.weights)
    assert model.encoder_frozen
    assert torch.equal(model.encoder.layer3[0].conv1.weight, saved["state_dict"]["module.encoder_q.layer3.0.conv1.weight"])
    assert main(["models", "inspect", str(result.weights)]) == 0
    out = capsys.readouterr().out
    assert "ssl4eo-moco" in out and "ssl4eo-resnet18" in out
    # train with a frozen encoder and the feature cache takes the file unchanged
    from sandwatch.dataset.manifest import load_manifest, save_manifest
    from sandwatch.models.checkpoint import Checkpoint
    from sandwatch.train.config import config_from_dict
    from sandwatch.train.runner import train

    m = load_manifest(demo)
    for o in m.observations:
        o.split = "train"
    manifest = save_manifest(m, tmp_path / "all-train.yaml")
    tcfg = config_from_dict({
        "manifest": str(manifest), "run_dir": str(tmp_path / "probe"),
        "model": {"arch": "ssl4eo-resnet18", "weights": str(result.weights), "freeze_encoder": True,
                  "options": {"decoder_channels": [8, 8, 8, 8]}},
        "data": {"window": 32, "windows_per_scene": 2, "num_workers": 0, "val_split": None},
        "optim": {"epochs": 1, "batch_size": 8},
        "trainer": {"accelerator": "cpu", "progress_bar": False}, "tracking": {"backend": "none"}})
    assert tcfg.use_cache
    probe = Checkpoint.load(train(tcfg).last)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(probe.state_dict[f"encoder.{k}"], v), k


def test_resume_after_kill_continues_the_same_step(demo, moco_run, tmp_path):
    part = moco_config(demo, tmp_path / "part", optim__epochs=2, tracking__backend="mlflow")
    pretrain(part, max_epochs=1)                                   # "killed" after epoch 1
    run_id = json.loads((tmp_path / "part" / "tracking.json").read_text())["mlflow_run_id"]
    killed = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    assert killed["global_step"] == 6 and killed["epoch"] == 0      # epoch 0 finished
    with pytest.raises(SandwatchError, match="already holds"):
        pretrain(part)
    resumed = pretrain(part, resume=True)
    assert [h["global_step"] for h in resumed.history] == [6, 12]
    assert json.loads((tmp_path / "part" / "tracking.json").read_text())["mlflow_run_id"] == run_id  # same MLflow run
    assert (tmp_path / "part" / "mlflow.db").is_file()
    assert resumed.history[1]["loss"] == pytest.approx(moco_run.history[1]["loss"], abs=1e-6)
    a = torch.load(moco_run.weights, weights_only=True)["state_dict"]
    b = torch.load(resumed.weights, weights_only=True)["state_dict"]
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_moco_continues_head_momentum_encoder_and_queue_of_its_start_file(demo, moco_run, tmp_path, monkeypatch):
    start = torch.load(moco_run.weights, weights_only=True)["state_dict"]
    from sandwatch.pretrain.runner import prepare

    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **kw: reads.append(str(path)) or real_load(path, *a, **kw))
    task = prepare(moco_config(demo, tmp_path / "b", model__weights=str(moco_run.weights)))[0]
    assert reads.count(str(moco_run.weights)) == 1     # the start file is read once (encoder + head/queue)
    monkeypatch.undo()
    assert torch.equal(task.queue, torch.nn.functional.normalize(start["module.queue"], dim=0))
    assert torch.equal(task.key.encoder.conv1.weight, start["module.encoder_k.conv1.weight"])
    assert not torch.equal(start["module.encoder_k.conv1.weight"], start["module.encoder_q.conv1.weight"])
    assert torch.equal(task.query.fc[2].weight, start["module.encoder_q.fc.2.weight"])
    assert torch.equal(task.query.encoder.layer4[1].conv2.weight, start["module.encoder_q.layer4.1.conv2.weight"])
    # a head of another size: the encoder continues, the rest starts afresh (with a warning)
    with pytest.warns(UserWarning, match="start afresh"):
        task = prepare(moco_config(demo, tmp_path / "c", model__weights=str(moco_run.weights), moco__dim=16))[0]
    assert torch.equal(task.query.encoder.conv1.weight, start["module.encoder_q.conv1.weight"])
    assert torch.equal(task.key.encoder.conv1.weight, start["module.encoder_q.conv1.weight"])


@pytest.fixture(scope="module")
def mae_run(demo, tmp_path_factory):
    return pretrain(mae_config(demo, tmp_path_factory.mktemp("mae") / "run", optim__epochs=3))


def test_mae_learns_and_writes_the_satmae_layout(mae_run):
    result = mae_run
    losses = result.losses
    assert losses[-1] < 0.7 * losses[0], losses
    obj = torch.load(result.weights, weights_only=False)   # our own file, only to see the Namespace
    assert isinstance(obj["args"], argparse.Namespace) and obj["args"].grouped_bands == [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]
    wf = read_weights(result.weights)
    assert (wf.layout, wf.arch, wf.n_bands) == ("satmae", "satmae-base", 10)
    assert {"mask_token", "decoder_embed.weight", "decoder_pred.0.weight"} <= set(wf.ignored)
    assert (wf.options["embed_dim"], wf.options["depth"], wf.options["channel_embed"]) == (64, 2, 16)
    model = build_model("satmae-base", weights=result.weights, **TINY_VIT)
    assert torch.equal(model.encoder.pos_embed, obj["model"]["pos_embed"])
    assert torch.equal(model.encoder.blocks[1].attn.qkv.weight, obj["model"]["blocks.1.attn.qkv.weight"])


def test_mae_masking_is_the_published_one(demo, tmp_path):
    from sandwatch.pretrain.runner import prepare

    task = prepare(mae_config(demo, tmp_path / "m"))[0]
    keep = task.mask(2, 3, 144, "cpu")
    assert keep.shape == (2, 3, 36)                         # 25 % of 12 x 12 patches visible per group
    assert not torch.equal(keep[:, 0].sort(-1).values, keep[:, 1].sort(-1).values)   # independent per group
    task.spatial_mask = True
    keep = task.mask(2, 3, 144, "cpu")
    assert torch.equal(keep[:, 0], keep[:, 2])


def test_mae_recreates_a_missing_decoder_and_continues_a_present_one(demo, mae_run, tmp_path):
    from sandwatch.pretrain.runner import prepare

    first = mae_run
    obj = torch.load(first.weights, weights_only=False)
    task = prepare(mae_config(demo, tmp_path / "b", model__weights=str(first.weights)))[0]
    assert torch.equal(task.head.decoder_embed.weight, obj["model"]["decoder_embed.weight"])
    bare = tmp_path / "encoder-only.pth"    # a published file without its decoder
    torch.save({"model": {k: v for k, v in obj["model"].items() if not k.startswith(("decoder_", "mask_token"))},
                "args": obj["args"], "epoch": 0}, bare)
    with pytest.warns(UserWarning, match="decoder is created afresh"):
        task = prepare(mae_config(demo, tmp_path / "c", model__weights=str(bare)))[0]
    assert torch.equal(task.encoder.blocks[0].mlp.fc1.weight, obj["model"]["blocks.0.mlp.fc1.weight"])
    assert not torch.equal(task.head.decoder_embed.weight, obj["model"]["decoder_embed.weight"])


def test_bad_input_is_one_line(demo, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'r'}\n")
    assert main(["pretrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest" in err and "scenes" in err
    cfg.write_text(f"manifest: {demo}\nrun_dir: {tmp_path / 'r'}\nmodel: {{arch: unet}}\n")
    assert main(["pretrain", str(cfg)]) == 2
    assert "MoCo" in capsys.readouterr().err
    cfg.write_text(f"manifest: {demo}\nrun_dir: {tmp_path / 'r'}\n")
    assert main(["pretrain", str(cfg), "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(["pretrain", str(cfg), "--print-config", "--set", "model.arch=satmae-base"]) == 0
    out = capsys.readouterr().out
    assert "mask_ratio: 0.75" in out and "window: 96" in out


def test_configs_in_the_repository_are_valid():
    from pathlib import Path

    from sandwatch.pretrain import load_pretrain_config

    root = Path(__file__).resolve().parents[1] / "configs"
    cpu = load_pretrain_config(root / "pretrain-cpu.yaml")
    gpu = load_pretrain_config(root / "pretrain.yaml")
    assert (cpu.model.arch, cpu.kind, cpu.window, cpu.batch_size, cpu.optim.steps) == ("ssl4eo-resnet18", "mim", 64, 32, 960)
    assert np.isclose(cpu.lr, 1e-3)
    moco = load_pretrain_config(root / "pretrain-cpu.yaml", ["method=moco", "optim.lr=0.03"])   # as its comment says
    assert (moco.kind, moco.recipe, moco.moco.queue, moco.lr) == ("moco", "moco-v2", 4096, 0.03)
    assert (gpu.model.arch, gpu.window, gpu.batch_size, gpu.moco.queue) == ("ssl4eo-resnet50", 224, 256, 65536)
    assert np.isclose(gpu.lr, 0.03)


def test_each_moco_version_takes_its_own_optimiser_defaults(demo, tmp_path):
    """v2 trains with SGD (base LR 0.03), v3 with AdamW (MoCo v3: base LR 1.5e-4, weight decay
    0.1): an SGD learning rate handed to AdamW would be 200 times too large."""
    v2 = moco_config(demo, tmp_path, optim__lr=None, optim__batch_size=64)
    v3 = moco_config(demo, tmp_path, optim__lr=None, optim__batch_size=64, moco__version="v3")
    assert (v2.lr, v2.weight_decay) == (pytest.approx(0.0075), 1e-4)
    assert (v3.lr, v3.weight_decay) == (pytest.approx(3.75e-5), 0.1)
    assert moco_config(demo, tmp_path, moco__version="v3", optim__lr=1e-3, optim__weight_decay=1e-4).lr == 1e-3


def test_a_scene_folder_takes_dates_by_the_imagery_rule(tmp_path):
    from sandwatch.pretrain.data import folder_observations

    for name in ("a/2021-01-15.tif", "b/S2A_MSIL2A_20230216T102101.tif", "c/2023-02-30.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    dates = {o.site: o.date.isoformat() for o in folder_observations(tmp_path)}
    # an impossible date is no date (no traceback); compact dates are read too
    assert dates == {"a/2021-01-15": "2021-01-15", "b/S2A_MSIL2A_20230216T102101": "2023-02-16",
                     "c/2023-02-30": "1970-01-01"}


def mim_config(manifest, run_dir, **over):
    cfg = moco_config(manifest, run_dir, **over).model_dump()
    cfg["method"] = "mim"
    cfg["mim"] = {"patch": 8, "mask_ratio": 0.5, "decoder_channels": [8, 8, 16, 16]}
    cfg["optim"]["lr"] = 3e-3
    return pretrain_config(cfg)


def test_mim_learns_and_writes_the_ssl4eo_layout_that_the_zoo_reads(demo, tmp_path):
    """SimMIM on the ResNet: the masked-pixel error falls, the file is an SSL4EO MoCo file with the
    query encoder only (no head, key encoder or queue), which the zoo loads bit for bit, frozen."""
    result = pretrain(mim_config(demo, tmp_path / "run", optim__epochs=3))
    assert [h["global_step"] for h in result.history] == [6, 12, 18]
    assert result.losses[-1] < 0.7 * result.losses[0], result.losses
    saved = torch.load(result.weights, weights_only=True)
    assert saved["sandwatch_pretrain"]["method"] == "mim" and saved["arch"] == "resnet18"
    assert all(k.startswith("module.encoder_q.") and ".fc." not in k for k in saved["state_dict"])
    wf = read_weights(result.weights)
    assert (wf.layout, wf.arch, wf.n_bands, wf.ignored) == ("ssl4eo-moco", "ssl4eo-resnet18", 13, [])
    model = build_model("ssl4eo-resnet18", weights=result.weights)
    assert model.encoder_frozen
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, saved["state_dict"]["module.encoder_q." + k]), k


def test_mim_masks_squares_and_keeps_the_statistics_of_real_windows(demo, tmp_path):
    """Exactly round(ratio x squares) squares masked per window, constant inside each square; the
    BatchNorm running statistics after a step are those of the unmasked windows (the masked
    forward leaves them), so a frozen encoder is normalised for real scenes."""
    import copy

    from sandwatch.pretrain.runner import prepare

    task, loader, _ = prepare(mim_config(demo, tmp_path / "m"))
    m = task.mask(3, 32, 40, "cpu")                  # 4 x 5 squares of 8 px, the last column cut
    assert m.shape == (3, 1, 32, 40)
    squares = m[:, 0, ::8, ::8]
    assert squares.shape == (3, 4, 5) and (squares.sum(dim=(1, 2)) == 10).all()
    assert torch.equal(m, squares.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None, :32, :40])
    assert not torch.equal(squares[0], squares[1])
    x = next(iter(loader))["image"]
    task.train()
    reference = copy.deepcopy(task.encoder)
    reference(x)                                     # running statistics of the unmasked batch
    loss, _ = task.loss({"image": x})
    assert torch.isfinite(loss) and loss > 0
    for (name, a), b in zip(task.encoder.named_buffers(), reference.buffers()):
        if "running" in name:
            assert torch.allclose(a, b, atol=1e-6), name


def test_mim_suits_the_resnets_only(demo, tmp_path):
    with pytest.raises(SandwatchError, match="does not suit satmae-base"):
        pretrain_config({"manifest": str(demo), "method": "mim", "model": {"arch": "satmae-base"}})
    with pytest.raises(SandwatchError, match="use moco or mim"):
        pretrain_config({"manifest": str(demo), "method": "mae", "model": {"arch": "ssl4eo-resnet18"}})
    with pytest.raises(SandwatchError, match="4 positive widths"):
        pretrain_config({"manifest": str(demo), "method": "mim", "mim": {"decoder_channels": [8, 16, 32]}})
    cfg = pretrain_config({"manifest": str(demo), "method": "mim", "model": {"arch": "ssl4eo-resnet18"}})
    assert (cfg.kind, cfg.window, cfg.batch_size, cfg.weight_decay) == ("mim", 96, 64, 0.05)
    assert np.isclose(cfg.lr, 1e-4 * 64 / 256)


@pytest.mark.parametrize("method", ["mim", "mae"])
def test_masked_methods_resume_after_kill_to_the_same_weights(demo, tmp_path, method):
    """Masks, the extra statistics forward and the decoder continue exactly: a run killed after
    epoch 1 and resumed ends with the weights of a run without the kill, bit for bit (masks
    drawn from the global generator differed: it is also drawn by the loader and Lightning)."""
    config = mim_config if method == "mim" else mae_config
    whole = pretrain(config(demo, tmp_path / "whole", optim__epochs=2))
    part = config(demo, tmp_path / "part", optim__epochs=2)
    pretrain(part, max_epochs=1)
    resumed = pretrain(part, resume=True)
    assert [h["global_step"] for h in resumed.history] == [6, 12]
    key = "state_dict" if method == "mim" else "model"
    from sandwatch.models.weights import safe_load     # MAE's file holds an argparse.Namespace

    a, b = safe_load(whole.weights)[key], safe_load(resumed.weights)[key]
    assert set(a) == set(b) and (method == "mae" or any("running_mean" in k for k in a))
    for k in a:
        assert torch.equal(a[k], b[k]), k
