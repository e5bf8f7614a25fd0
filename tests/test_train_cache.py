"""Frozen encoder + feature cache: bit-identical encoder, bounded LRU cache, cached decoding exact, MLflow."""

from __future__ import annotations

import json

import pytest
import torch

from sandwatch.models.checkpoint import Checkpoint
from sandwatch.train.runner import train
from test_train_run import BANDS, _restore_determinism, config, sources, unet  # noqa: F401 (autouse fixture)


@pytest.mark.slow
def test_frozen_encoder_with_feature_cache(tmp_path):
    model = unet()
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    cfg = config(tmp_path, "frozen", model__freeze_encoder=True, optim__epochs=3, cache__dtype="float32",
                 data__windows_per_scene=8, tracking__backend="mlflow")
    res = train(cfg, sources=sources(), model=model)
    last = Checkpoint.load(res.last)
    enc_after = {k[len("encoder."):]: v for k, v in last.state_dict.items() if k.startswith("encoder.")}
    assert enc_after.keys() == enc_before.keys()
    for k in enc_before:  # bit-identical, batch-norm running statistics included
        assert torch.equal(enc_before[k], enc_after[k]), k
    moved = max(float((dec_before[k[len("decoder."):]] - v).abs().max())
                for k, v in last.state_dict.items() if k.startswith("decoder.") and v.is_floating_point())
    assert moved > 1e-4
    metrics = json.loads((tmp_path / "frozen" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 3
    # pool = ceil(8 / 8) = 1 window per scene x 8 variants = one epoch: epoch 0 fills the cache
    # (16 misses), epochs 1 and 2 only hit it (32 hits)
    assert (tmp_path / "frozen" / "mlflow.db").is_file()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'frozen' / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "frozen" / "tracking.json").read_text())["mlflow_run_id"]
    hist = client.get_metric_history(run_id, "val_ap")
    assert len(hist) == 3
    assert client.get_run(run_id).data.params["model.freeze_encoder"] == "True"
    hits = client.get_metric_history(run_id, "cache_hit_rate")
    assert hits[-1].value == pytest.approx(32 / 48)
    assert [h.value for h in client.get_metric_history(run_id, "cache_entries")][-1] == 16
    arts = [a.path for a in client.list_artifacts(run_id, "plots")]
    assert any("pr_curve" in a for a in arts)


def test_feature_cache_is_bounded_lru_and_exact(tmp_path):
    from sandwatch.train.cache import FeatureCache

    t = [torch.arange(100, dtype=torch.float32).reshape(4, 25) / 7, torch.ones(1, 5, 5)]
    one = sum(x.numel() * 4 for x in t)
    for storage in ("memory", "disk"):
        c = FeatureCache(max_bytes=3 * one, storage=storage, directory=tmp_path / storage, dtype=torch.float32)
        for k in range(3):
            c.put((0, k, 0), t)
        assert len(c) == 3 and c.bytes == 3 * one
        assert c.get((0, 0, 0)) is not None      # touch: (0, 1, 0) is now the least recent
        c.put((0, 3, 0), t)
        assert len(c) == 3 and (0, 1, 0) not in c and (0, 0, 0) in c and c.evictions == 1
        got = c.get((0, 3, 0))
        assert all(torch.equal(a, b) for a, b in zip(got, t))  # float32: exact
    again = FeatureCache(max_bytes=3 * one, storage="disk", directory=tmp_path / "disk", dtype=torch.float32)
    assert again.keys() == c.keys()               # a resumed run finds the disk cache
    half = FeatureCache(max_bytes=10 * one, dtype=torch.float16)
    half.put((1, 0, 0), t)
    assert half.bytes == one // 2 and half.get((1, 0, 0))[0].dtype == torch.float16


def test_cached_decoder_equals_full_model(tmp_path):
    """The cache path of the module (features from the cache, decoder only) gives the same logits
    as the whole model, for hits and misses in one batch."""
    from sandwatch.bands import BandSpec
    from sandwatch.models import set_trainable
    from sandwatch.train.cache import FeatureCache
    from sandwatch.train.module import SegmentationTask

    model = set_trainable(unet(), True).eval()
    task = SegmentationTask(model, arch="unet", band_spec=BandSpec(tuple(BANDS)), window=32,
                            cache=FeatureCache(10**9, dtype=torch.float32))
    x = torch.rand(3, 3, 32, 32)
    target = (torch.rand(3, 1, 32, 32) > 0.5).float()
    weight = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        # item 0 is cached already, with its labels
        task.cache.put((0, 0, 0), [f[0] for f in model.encoder(x[:1])],
                       exact=[target[0].to(torch.uint8), weight[0]])
        batch = {"key": torch.tensor([[0, 0, 0], [0, 1, 0], [0, 2, 3]]), "miss": torch.tensor([False, True, True]),
                 "image": x[1:], "target": target[1:], "weight": weight[1:]}
        logits, t, w = task._cached_logits(batch)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert len(task.cache) == 3
    assert torch.equal(t, target) and torch.equal(w, weight)   # labels come back exactly, hits and misses
    # an all-hit batch carries keys only: nothing is read
    with torch.no_grad():
        logits2, t2, w2 = task._cached_logits({"key": batch["key"], "miss": torch.zeros(3, dtype=torch.bool),
                                               "image": None, "target": None, "weight": None})
    assert torch.equal(logits2, logits) and torch.equal(t2, target) and torch.equal(w2, weight)
