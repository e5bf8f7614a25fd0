"""The optional cosine learning-rate schedule (optim.schedule)."""

from __future__ import annotations

import pytest
import torch

from sandwatch.bands import BandSpec
from sandwatch.train.config import config_from_dict
from sandwatch.train.module import SegmentationTask


def task(schedule: str, total_steps: int = 4, warmup: float = 0.0) -> SegmentationTask:
    model = torch.nn.Conv2d(3, 1, 1)
    return SegmentationTask(model, arch="unet", band_spec=BandSpec(("R", "G", "B")), lr=1e-3,
                            schedule=schedule, total_steps=total_steps, warmup=warmup)


def lrs_of(out, steps: int) -> list[float]:
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert out["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs + [opt.param_groups[0]["lr"]]


def test_constant_is_the_published_default():
    cfg = config_from_dict({"manifest": "m.yaml"})
    assert cfg.optim.schedule == "constant" and cfg.optim.warmup == 0
    assert isinstance(task("constant").configure_optimizers(), torch.optim.AdamW)


def test_cosine_decays_to_zero_over_the_runs_steps():
    lrs = lrs_of(task("cosine", total_steps=4).configure_optimizers(), 4)
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)
    assert lrs[2] == pytest.approx(0.5e-3)            # half-way down the cosine
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_warmup_then_cosine_and_warmup_then_constant():
    lrs = lrs_of(task("cosine", total_steps=20, warmup=0.25).configure_optimizers(), 20)
    assert lrs[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])   # 5 warm-up steps, linear
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    flat = lrs_of(task("constant", total_steps=10, warmup=0.2).configure_optimizers(), 10)
    assert flat == pytest.approx([5e-4] + [1e-3] * 10)


def test_unknown_schedule_is_rejected():
    from sandwatch.errors import SandwatchError

    with pytest.raises((SandwatchError, ValueError)):
        config_from_dict({"manifest": "m.yaml", "optim": {"schedule": "linear"}})
