"""Where training and validation windows go.

Training windows have their centre drawn **uniformly inside the AOI polygon itself**, not in
its bounding box (torchgeo's ROI sampler draws in the box; for a thin river at an angle most of
the box is land far from any river). The polygon is moved to pixel coordinates, cut into
triangles with a constrained Delaunay triangulation (holes stay holes), a triangle is chosen
with probability proportional to its area and a point is drawn uniformly inside it.

Everything is a pure function of ``(seed, epoch, scene, k)``: the k-th window of a scene in an
epoch, and its dihedral augmentation, are the same in any process, in any order, after any
restart. That is what makes ``--resume`` exact and DataLoader workers stateless.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from sandwatch.grid import Grid, Window


def to_pixel_coords(geom: BaseGeometry, grid: Grid) -> BaseGeometry:
    """A geometry in the grid's CRS moved to pixel coordinates (x = column, y = row), cut to the grid."""
    inv = ~grid.transform
    px = shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    px = shapely.make_valid(px) if not px.is_valid else px
    return px.intersection(box(0, 0, grid.width, grid.height))


def _polygons(geom: BaseGeometry) -> list[BaseGeometry]:
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


class PolygonSampler:
    """Uniform points inside a polygon (pixel coordinates), via area-weighted triangles."""

    def __init__(self, geom_px: BaseGeometry):
        tris = []
        for poly in _polygons(geom_px):
            if poly.area <= 0:
                continue
            parts = shapely.constrained_delaunay_triangles(poly)
            tris.extend(g for g in parts.geoms if g.area > 0)
        if tris:
            coords = np.array([np.asarray(t.exterior.coords)[:3] for t in tris], dtype=np.float64)
        else:
            coords = np.zeros((0, 3, 2))
        self.triangles = coords  # (T, 3, 2): x=col, y=row
        a, b, c = coords[:, 0], coords[:, 1], coords[:, 2]
        areas = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))
        self.area = float(areas.sum())
        self._cum = np.cumsum(areas) / self.area if self.area > 0 else areas

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` points (x, y) in pixel coordinates, uniform inside the polygon."""
        if self.area <= 0:
            raise ValueError("cannot sample inside an empty polygon")
        idx = np.minimum(np.searchsorted(self._cum, rng.random(n), side="right"), len(self._cum) - 1)
        r1, r2 = rng.random(n), rng.random(n)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        t = self.triangles[idx]
        return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def window_at(x: float, y: float, size: int) -> Window:
    """The ``size`` x ``size`` window whose centre is nearest to pixel coordinates (x, y)."""
    half = size / 2.0
    return Window(int(math.floor(y - half + 0.5)), int(math.floor(x - half + 0.5)), size, size)


def item_rng(seed: int, epoch: int, scene: int, k: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(scene), int(k)])


@dataclass
class SceneWindows:
    """The AOI of one scene, ready to draw windows from.

    With ``hard_negatives`` > 0 that share of the windows is centred outside the AOI (drawn
    uniformly in ``outside``, the rest of the scene): land far from the river that a model
    predicting whole scenes must learn to leave alone."""

    grid: Grid
    sampler: PolygonSampler
    n_windows: int
    outside: PolygonSampler | None = None
    hard_negatives: float = 0.0

    @property
    def aoi_pixels(self) -> float:
        return self.sampler.area

    def window(self, seed: int, epoch: int, scene: int, k: int, size: int, *, rot90: bool = True,
               flip: bool = True) -> tuple[Window, int]:
        """The k-th window of this scene in ``epoch`` and its dihedral variant (0..7)."""
        rng = item_rng(seed, epoch, scene, k)
        sampler = self.sampler
        if self.hard_negatives > 0 and self.outside is not None and rng.random() < self.hard_negatives:
            sampler = self.outside
        (x, y), = sampler.sample(rng, 1)
        d = int(rng.integers(0, 8))
        if not rot90:
            d = d & 4  # keep only the flip bit
        if not flip:
            d = d & 3
        return window_at(x, y, size), d


def aoi_pixel_sampler(aoi, grid: Grid) -> PolygonSampler:
    return PolygonSampler(to_pixel_coords(aoi, grid) if aoi is not None else box(0, 0, grid.width, grid.height))


def plan_scenes(aois: Sequence[BaseGeometry | None], grids: Sequence[Grid], windows_for, *,
                min_aoi_pixels: int = 1, names: Sequence[str] | None = None, hard_negatives: float = 0.0,
                epoch_windows: int | None = None) -> list[SceneWindows | None]:
    """One :class:`SceneWindows` per scene, or None (with a warning) when its AOI is too small.

    ``windows_for(aoi_pixels) -> int`` is the per-epoch count (published: ceil(px / 160^2) x 2);
    ``epoch_windows`` instead shares a fixed number of windows per epoch among the scenes in
    proportion to their AOI area (at least one each). ``hard_negatives``: see
    :class:`SceneWindows`.
    """
    out: list[SceneWindows | None] = []
    for i, (aoi, grid) in enumerate(zip(aois, grids)):
        name = names[i] if names else f"scene {i}"
        sampler = aoi_pixel_sampler(aoi, grid)
        if sampler.area < max(min_aoi_pixels, 1e-9):
            warnings.warn(f"{name}: AOI covers {sampler.area:.0f} pixels (< {min_aoi_pixels}); "
                          "scene skipped for training", stacklevel=2)
            out.append(None)
            continue
        outside = None
        if hard_negatives > 0 and aoi is not None:
            rest = box(0, 0, grid.width, grid.height).difference(to_pixel_coords(aoi, grid))
            outside = PolygonSampler(rest) if rest.area >= 1 else None
        out.append(SceneWindows(grid, sampler, int(windows_for(sampler.area)), outside, float(hard_negatives)))
    if epoch_windows is not None:
        live = [p for p in out if p is not None]
        total = sum(p.aoi_pixels for p in live)
        for p in live:
            p.n_windows = max(1, round(epoch_windows * p.aoi_pixels / total))
    return out


def epoch_items(counts: Sequence[int], seed: int, epoch: int, *, shuffle: bool = True,
                rank: int = 0, world_size: int = 1) -> np.ndarray:
    """All ``(scene, k)`` pairs of an epoch, shuffled by ``(seed, epoch)``, this rank's share.

    Shares are equal across ranks (the list is padded by wrapping), as DDP needs.
    """
    items = np.array([(s, k) for s, n in enumerate(counts) for k in range(n)], dtype=np.int64).reshape(-1, 2)
    if shuffle and len(items):
        items = items[np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 7919]).permutation(len(items))]
    if world_size > 1 and len(items):
        per = math.ceil(len(items) / world_size)
        pad = per * world_size - len(items)
        if pad:
            items = np.concatenate([items, items[:pad]])
        items = items[rank::world_size]
    return items


def grid_windows(aoi, grid: Grid, size: int, stride: int | None = None) -> list[Window]:
    """Validation windows: a regular grid of ``size`` px windows (step ``stride``) over the
    AOI's bounding box, keeping those that touch the AOI polygon."""
    stride = stride or size
    geom = to_pixel_coords(aoi, grid) if aoi is not None else box(0, 0, grid.width, grid.height)
    if geom.is_empty:
        return []
    x0, y0, x1, y1 = geom.bounds
    c0, r0 = int(math.floor(x0)), int(math.floor(y0))
    c1, r1 = int(math.ceil(x1)), int(math.ceil(y1))
    shapely.prepare(geom)
    out = []
    for r in range(r0, max(r0 + 1, r1 - size + stride), stride):
        for c in range(c0, max(c0 + 1, c1 - size + stride), stride):
            if geom.intersects(box(c, r, c + size, r + size)):
                out.append(Window(r, c, size, size))
    return out
