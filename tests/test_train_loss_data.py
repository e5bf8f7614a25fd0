"""Loss (pos_weight, per-pixel weights, Dice) and the window datasets (georeferencing, weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from shapely.geometry import box

from sandwatch.bands import Normalization
from sandwatch.grid import Grid
from sandwatch.train.data import ArraySource, EpochSampler, TrainWindows, ValWindows, dihedral
from sandwatch.train.loss import SegmentationLoss, soft_dice, weighted_bce
from sandwatch.train.sampler import plan_scenes


def test_bce_pos_weight_matches_formula():
    logits = torch.tensor([[[[0.3, -1.2], [2.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    manual = -(6 * target * torch.log(p) + (1 - target) * torch.log(1 - p))
    assert weighted_bce(logits, target, None, 6.0).item() == pytest.approx(manual.mean().item(), rel=1e-6)
    w = torch.tensor([[[[1.0, 0.5], [0.0, 2.0]]]])
    expect = (manual * w).sum() / w.sum()
    assert weighted_bce(logits, target, w, 6.0).item() == pytest.approx(expect.item(), rel=1e-6)
    # everything weighs 0: loss 0, not NaN
    assert weighted_bce(logits, target, torch.zeros_like(w)).item() == 0.0


def test_zero_weight_pixels_get_no_gradient_and_low_confidence_less():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.ones(1, 1, 2, 2)
    w = torch.tensor([[[[1.0, 0.5], [0.0, 1.0]]]])
    SegmentationLoss(6.0)(logits, target, w).backward()
    g = logits.grad[0, 0]
    assert g[1, 0] == 0.0
    assert g[0, 1] == pytest.approx(0.5 * g[0, 0].item())


def test_dice_adds_when_weighted():
    logits = torch.tensor([[[[5.0, -5.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    assert soft_dice(logits, target).item() < 0.01
    assert soft_dice(-logits, target).item() > 0.5
    a = SegmentationLoss(6.0, 0.0)(-logits, target)
    b = SegmentationLoss(6.0, 1.0)(-logits, target)
    assert b.item() == pytest.approx(a.item() + soft_dice(-logits, target).item(), rel=1e-6)


def make_source(name="s", size=128, nodata_rows=8, seed=0):
    rng = np.random.default_rng(seed)
    grid = Grid("EPSG:32644", Affine(10, 0, 600_000, 0, -10, 2_000_000), size, size)
    image = rng.random((3, size, size)).astype(np.float32)
    image[0] = np.arange(size)[None, :] / size        # band 0 = column / size, band 1 = row / size
    image[1] = np.arange(size)[:, None] / size
    mask = np.zeros((size, size), np.uint8)
    weight = np.ones((size, size), np.float32)
    mask[20:40, 20:40] = 1                              # high confidence mine
    mask[60:70, 60:70] = 1
    weight[60:70, 60:70] = 0.0                          # low confidence, ignored (weight 0)
    valid = np.ones((size, size), bool)
    valid[:nodata_rows] = False                         # nodata stripe
    aoi = box(600_000 + 100, 2_000_000 - 10 * size + 100, 600_000 + 10 * size - 100, 2_000_000 - 100)
    return ArraySource(name, grid, image, mask, weight, valid, aoi)


def test_dihedral_group():
    a = np.arange(12).reshape(1, 3, 4)
    variants = {dihedral(a, d).tobytes() + bytes(dihedral(a, d).shape) for d in range(8)}
    assert len(variants) == 8
    assert np.array_equal(dihedral(a, 0), a)
    assert np.array_equal(dihedral(a, 1), np.rot90(a, 1, axes=(1, 2)))


def test_train_windows_read_the_right_pixels_and_weights():
    src = make_source()
    plans = plan_scenes([src.aoi], [src.grid], lambda px: 16)
    ds = TrainWindows([src], plans, Normalization.constant(3), size=32, seed=3, rot90=False, flip=False)
    sampler = EpochSampler(ds.counts, seed=3)
    sampler.set_epoch(2)
    items = list(sampler)
    assert len(items) == 16 and all(e == 2 for e, _, _ in items)
    for item in items:
        b = ds[item]
        w, d = ds.window_of(*item)
        assert d == 0
        # band 0 holds column / size, band 1 row / size: the window read is at the window's place
        inner = w.clip(128, 128)
        rel = inner.relative_to(w)
        np.testing.assert_allclose(b["image"][0].numpy()[rel.slices()][-1], np.arange(inner.col, inner.col_stop) / 128,
                                   atol=1e-6)
        rows = np.arange(inner.row, inner.row_stop)
        expect = np.where(rows >= 8, rows / 128, 0.0)  # nodata rows read as 0
        np.testing.assert_allclose(b["image"][1].numpy()[rel.slices()][:, 0], expect, atol=1e-6)
        # weights: nodata 0, outside the grid 0, low-confidence 0, else 1
        full_w = np.zeros((w.height, w.width), np.float32)
        full_w[rel.slices()] = (src.weight * src.valid)[inner.slices()]
        np.testing.assert_array_equal(b["weight"][0].numpy(), full_w)
        assert b["target"].shape == (1, 32, 32) and b["image"].dtype == torch.float32
        # the centre of the window lies in the AOI
        cx, cy = src.grid.transform * (w.col + 16, w.row + 16)
        assert src.aoi.buffer(10).contains(box(cx, cy, cx, cy).centroid)


def test_augmentation_moves_image_and_labels_together():
    src = make_source()
    plans = plan_scenes([src.aoi], [src.grid], lambda px: 64)
    ds = TrainWindows([src], plans, Normalization.constant(3), size=32, seed=0)
    seen = set()
    for k in range(64):
        b = ds[(0, 0, k)]
        w, d = ds.window_of(0, 0, k)
        seen.add(d)
        ref_mask, _ = src.labels(w)
        np.testing.assert_array_equal(b["target"][0].numpy(), dihedral(ref_mask[None].astype(np.float32), d)[0])
        ref_img, ref_valid = src.read(w)
        np.testing.assert_allclose(b["image"][2].numpy(), dihedral((ref_img[2] * ref_valid)[None], d)[0], atol=1e-6)
    assert len(seen) >= 6


def test_val_windows_score_only_valid_aoi_pixels():
    src = make_source()
    ds = ValWindows([src], Normalization.constant(3), size=64)
    assert len(ds) == 4
    total = sum(int(ds[i]["eval"].sum()) for i in range(len(ds)))
    # AOI: 100 m (10 px) inside each edge -> 108 x 108 pixel centres; nodata rows 0..7 are outside it anyway
    assert total == 108 * 108


def test_binned_metrics_match_sklearn():
    from sklearn.metrics import average_precision_score, f1_score

    from sandwatch.train.metrics import BinnedPR

    rng = np.random.default_rng(0)
    t = rng.random(20_000) < 0.1
    p = np.clip(rng.normal(0.3 + 0.4 * t, 0.2), 0, 0.999)
    p = (np.floor(p * 1000) + 0.5) / 1000          # on bin centres: binning loses nothing
    m = BinnedPR(1000)
    for chunk in np.array_split(np.arange(len(p)), 7):  # several updates, like batches
        m.update(torch.from_numpy(p[chunk]), torch.from_numpy(t[chunk]))
    out = m.compute()
    assert out["ap"] == pytest.approx(average_precision_score(t, p), abs=1e-9)
    assert out["f1"] == pytest.approx(f1_score(t, p >= 0.5), abs=1e-9)
    assert out["pixels"] == 20_000 and out["positives"] == t.sum()
    assert m.pos.numel() == 1000  # memory independent of the number of pixels
