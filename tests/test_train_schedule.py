"""The optional cosine learning-rate schedule (optim.schedule)."""

from __future__ import annotations

import pytest
import torch

from sandwatch.bands import BandSpec
from sandwatch.train.config import config_from_dict
from sandwatch.train.module import SegmentationTask


def task(schedule: str, epochs: int = 4) -> SegmentationTask:
    model = torch.nn.Conv2d(3, 1, 1)
    return SegmentationTask(model, arch="unet", band_spec=BandSpec(("R", "G", "B")), lr=1e-3,
                            schedule=schedule, epochs=epochs)


def test_constant_is_the_published_default():
    cfg = config_from_dict({"manifest": "m.yaml"})
    assert cfg.optim.schedule == "constant"
    assert isinstance(task("constant").configure_optimizers(), torch.optim.AdamW)


def test_cosine_decays_to_zero_over_the_epochs():
    out = task("cosine", epochs=4).configure_optimizers()
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule_is_rejected():
    from sandwatch.errors import SandwatchError

    with pytest.raises((SandwatchError, ValueError)):
        config_from_dict({"manifest": "m.yaml", "optim": {"schedule": "linear"}})
