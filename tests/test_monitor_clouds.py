"""Observed pixels: the L1C cloud test on synthetic clouds, the L2A SCL classes, nodata."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sandwatch.bands import L2A_BANDS
from sandwatch.grid import Window
from sandwatch.imagery import open_scene
from sandwatch.monitor import L1CCloudTest, cloud_method, observed_mask, scl_not_observed
from sandwatch.synthetic import (Surface, cloud_opacity, make_scene, reflectance_to_dn, render_reflectance,
                                 utm_grid, with_clouds, write_scene)


def test_l1c_test_flags_clouds_not_bright_sand_or_roofs():
    # every surface type of the synthetic landscapes, rendered top-of-atmosphere
    codes = np.array([s for s in Surface if s != Surface.NODATA], np.uint8)
    surf = np.repeat(codes, 200).reshape(len(codes), 200)
    refl = render_reflectance(surf, seed=3)
    b02, b03, b04, b10 = (refl[i] for i in (1, 2, 3, 10))
    test = L1CCloudTest()
    assert not test(b02, b03, b04, b10).any()          # dry sand, stockpiles, built-up: clear
    cloudy = np.stack(list(with_clouds(list(refl), np.ones(surf.shape, np.float32))))
    assert test(*(cloudy[i] for i in (1, 2, 3)), cloudy[10]).all()
    # without B10 the bright-white test alone still finds thick cloud
    assert test(*(cloudy[i] for i in (1, 2, 3))).all()
    # cirrus alone: a thin veil raising B10 over the threshold
    assert test(b02, b03, b04, np.full_like(b10, 0.02)).all()


def test_observed_mask_l1c_scene_with_synthetic_clouds(tmp_path):
    grid = utm_grid(85.85, 20.30, size=96)
    op = cloud_opacity(grid.shape, 0.3, seed=4)
    make_scene(tmp_path / "c.tif", grid, clouds=op, seed=2)
    scene = open_scene(tmp_path / "c.tif")
    assert cloud_method(scene) == "l1c"
    obs, method = observed_mask(scene, grid.full_window())
    assert method == "l1c"
    thick, clear = op > 0.6, op == 0
    assert not obs[thick].any()                          # every thick-cloud pixel masked
    assert obs[clear].mean() > 0.99                      # clear land and water kept
    assert 0.25 < (~obs).mean() < 0.4
    # a window: same answer on that part
    w = Window(10, 20, 30, 40)
    obs_w, _ = observed_mask(scene, w)
    assert np.array_equal(obs_w, obs[w.slices()])
    none, m = observed_mask(scene, grid.full_window(), method="none")
    assert m == "none" and none.all()


def test_scl_classes_and_nodata_in_an_l2a_scene(tmp_path):
    grid = utm_grid(79.8, 21.1, size=64)
    rng = np.random.default_rng(0)
    refl = rng.uniform(0.05, 0.3, (len(L2A_BANDS),) + grid.shape).astype(np.float32)
    dn = reflectance_to_dn(refl)
    dn[:, :4, :] = 0                                     # nodata rows
    scl = np.full(grid.shape, 4, np.uint16)
    classes = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    for i, c in enumerate(classes):
        scl[10 + 4 * i:14 + 4 * i, 8:24] = c
    write_scene(tmp_path / "l2a.tif", np.concatenate([dn, scl[None]]), grid, bands=L2A_BANDS + ("SCL",),
                units="dn", level="L2A", date=dt.date(2021, 3, 1))
    scene = open_scene(tmp_path / "l2a.tif")
    assert scene.has_scl and cloud_method(scene) == "scl"
    obs, method = observed_mask(scene, grid.full_window())
    assert method == "scl"
    assert not obs[:4].any()
    for i, c in enumerate(classes):
        seen = obs[10 + 4 * i:14 + 4 * i, 8:24]
        assert seen.all() == (c not in (0, 1, 3, 8, 9, 10)), c
        assert seen.any() == seen.all()
    assert obs[10:, 30:].all()
    assert scl_not_observed(np.array([0, 1, 2, 3, 4, 8, 9, 10, 11])).tolist() == [
        True, True, False, True, False, True, True, True, False]


@pytest.mark.parametrize("cover", [0.0, 1.0])
def test_cloud_opacity_extremes(cover):
    op = cloud_opacity((32, 32), cover)
    assert float(op.mean()) == cover
