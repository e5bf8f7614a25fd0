"""Window sampler: centres uniform inside the AOI polygon (not its bbox), deterministic."""

from __future__ import annotations


import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import LineString, Point, Polygon, box

from sandwatch.grid import Grid, Window
from sandwatch.train.sampler import (
    PolygonSampler,
    epoch_items,
    grid_windows,
    plan_scenes,
    to_pixel_coords,
    window_at,
)

# a 10 m UTM grid, 2000 x 1500 pixels
GRID = Grid("EPSG:32644", Affine(10, 0, 500_000, 0, -10, 2_300_000), 2000, 1500)


def river(width_m=300.0):
    """A sinuous diagonal river 300 m wide: a thin AOI whose bbox is mostly land."""
    t = np.linspace(0, 1, 200)
    x = 500_000 + 1_000 + t * 18_000
    y = 2_300_000 - 1_000 - t * 13_000 + 600 * np.sin(t * 12)
    return LineString(np.c_[x, y]).buffer(width_m / 2)


def test_thin_river_centres_inside_polygon():
    aoi = river()
    px = to_pixel_coords(aoi, GRID)
    s = PolygonSampler(px)
    assert s.area == pytest.approx(px.area, rel=1e-9)
    assert px.area / box(*px.bounds).area < 0.05  # the bbox is > 95 % outside
    pts = s.sample(np.random.default_rng(0), 5000)
    inside = shapely.contains_xy(px, pts[:, 0], pts[:, 1])
    assert inside.all()
    # windows centred there: window centre within half a pixel of the point, in map coordinates inside the AOI
    for x, y in pts[:50]:
        w = window_at(x, y, 160)
        cx, cy = w.col + 80, w.row + 80
        assert abs(cx - x) <= 0.5 and abs(cy - y) <= 0.5
        mx, my = GRID.transform * (x, y)
        assert aoi.buffer(1e-6).contains(Point(mx, my))


def test_uniform_by_area_and_holes_stay_empty():
    outer = Polygon([(0, 0), (1000, 0), (1000, 400), (0, 400)])
    hole = Polygon([(100, 100), (500, 100), (500, 300), (100, 300)])
    poly = Polygon(outer.exterior.coords, [hole.exterior.coords])
    s = PolygonSampler(poly)
    assert s.area == pytest.approx(400_000 - 80_000)
    pts = s.sample(np.random.default_rng(1), 40_000)
    assert not shapely.contains_xy(hole, pts[:, 0], pts[:, 1]).any()
    assert shapely.intersects_xy(poly, pts[:, 0], pts[:, 1]).all()
    # uniform: share of points right of x = 500 equals its share of the area (200000 / 320000)
    share = (pts[:, 0] > 500).mean()
    assert share == pytest.approx(200_000 / 320_000, abs=0.01)


def test_multipolygon_and_clipping_to_grid():
    g = Grid("EPSG:32644", Affine(10, 0, 0, 0, -10, 1000), 100, 100)
    a = box(-500, 0, 200, 1000)  # half outside the grid (x < 0)
    b = box(800, 800, 900, 900)
    px = to_pixel_coords(shapely.union(a, b), g)
    assert px.area == pytest.approx(20 * 100 + 10 * 10)
    pts = PolygonSampler(px).sample(np.random.default_rng(2), 3000)
    assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= 100).all()
    in_b = (pts[:, 0] > 50).mean()
    assert in_b == pytest.approx(100 / 2100, abs=0.02)


def test_deterministic_per_seed_epoch_and_item():
    plans = plan_scenes([river()], [GRID], lambda px: 10)
    p = plans[0]
    a = [p.window(7, 3, 0, k, 160) for k in range(10)]
    b = [p.window(7, 3, 0, k, 160) for k in reversed(range(10))][::-1]
    assert a == b  # order independent: a pure function of (seed, epoch, scene, k)
    c = [p.window(7, 4, 0, k, 160) for k in range(10)]
    d = [p.window(8, 3, 0, k, 160) for k in range(10)]
    assert a != c and a != d
    assert all(0 <= v < 8 for _, v in a)
    assert {v for _, v in (p.window(0, 0, 0, k, 160) for k in range(200))} == set(range(8))
    # augmentation switches: no rot90 -> only variants 0 and 4; neither -> 0
    assert {p.window(0, 0, 0, k, 160, rot90=False)[1] for k in range(100)} == {0, 4}
    assert {p.window(0, 0, 0, k, 160, rot90=False, flip=False)[1] for k in range(50)} == {0}


def test_small_aoi_skipped_with_warning_others_kept():
    g_small = Grid("EPSG:32644", Affine(10, 0, 0, 0, -10, 1000), 100, 100)
    with pytest.warns(UserWarning, match="tiny: AOI covers"):
        plans = plan_scenes([box(0, 990, 10, 1000), river(), Polygon()], [g_small, GRID, g_small],
                            lambda px: int(np.ceil(px / 160**2) * 2), min_aoi_pixels=100,
                            names=["tiny", "river", "empty"])
    assert plans[0] is None and plans[2] is None
    assert plans[1].n_windows == int(np.ceil(plans[1].aoi_pixels / 160**2) * 2)
    items = epoch_items([0, plans[1].n_windows, 0], seed=0, epoch=0)
    assert len(items) == plans[1].n_windows and set(items[:, 0]) == {1}


def test_epoch_items_shuffled_and_sharded():
    counts = [3, 5, 2]
    a = epoch_items(counts, 0, 0)
    assert sorted(map(tuple, a)) == [(s, k) for s, n in enumerate(counts) for k in range(n)]
    assert not np.array_equal(a, epoch_items(counts, 0, 1))
    np.testing.assert_array_equal(a, epoch_items(counts, 0, 0))
    shards = [epoch_items(counts, 0, 0, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # ceil(10 / 3), padded by wrapping
    seen = {tuple(x) for s in shards for x in s}
    assert len(seen) == 10


def test_grid_windows_cover_aoi_and_skip_land():
    aoi = river()
    wins = grid_windows(aoi, GRID, 160)
    px = to_pixel_coords(aoi, GRID)
    assert all(px.intersects(box(w.col, w.row, w.col_stop, w.row_stop)) for w in wins)
    covered = shapely.union_all([box(w.col, w.row, w.col_stop, w.row_stop) for w in wins])
    assert covered.contains(px.buffer(-1e-6))
    all_tiles = (np.ceil(px.bounds[2] / 160) - np.floor(px.bounds[0] / 160)) * (
        np.ceil(px.bounds[3] / 160) - np.floor(px.bounds[1] / 160))
    assert len(wins) < 0.5 * all_tiles
    assert all(w.shape == (160, 160) for w in wins)
    assert isinstance(wins[0], Window)
