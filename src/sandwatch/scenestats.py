"""Band statistics of one scene inside its area of interest: the rule behind per-scene
normalisation (``model.normalization: scene``), used the same way by training and prediction.

Why per scene: one season's river is not another's. A dry-season sand bed is bright, a
post-monsoon river dark and green; statistics measured on the training scenes and applied to
a scene of another season put it off-centre, and the model sees colours it never met.
Normalising each scene by its own statistics inside its river AOI maps both to the same range.

The estimator reads a regular grid of at most ``max_windows`` windows of ``size`` pixels over
the AOI's bounding box (the whole box when it is small), keeps valid pixels inside the AOI and
returns per-band mean and standard deviation. It is a pure function of the scene, the AOI and
these two numbers, so training and prediction get the same figures for the same scene.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import rasterio.features
import shapely
from shapely.geometry import box

from sandwatch.bands import Normalization
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window

Reader = Callable[[Window], "tuple[np.ndarray, np.ndarray]"]   # window -> (C, h, w) data, (h, w) valid


def _aoi_box(aoi, grid: Grid) -> Window:
    if aoi is None:
        return grid.full_window()
    if aoi.is_empty:
        return Window(0, 0, 0, 0)
    left, bottom, right, top = aoi.bounds
    w = grid.window_from_bounds(left, bottom, right, top)
    return w.clip(grid.height, grid.width) or Window(0, 0, 0, 0)


def sample_windows(aoi, grid: Grid, size: int = 256, max_windows: int = 64) -> list[Window]:
    """A regular grid of windows over the AOI's bounding box (in the grid), those touching the
    AOI; when the box holds more than ``max_windows`` windows they are spread evenly over it."""
    area = _aoi_box(aoi, grid)
    if area.size == 0:
        return []
    # a tiling without overlap (the last row and column of windows may be smaller): every pixel
    # of the box is counted once when all windows are read
    cells = [Window(r, c, min(size, area.row_stop - r), min(size, area.col_stop - c))
             for r in range(area.row, area.row_stop, size) for c in range(area.col, area.col_stop, size)]
    if aoi is not None:
        shapely.prepare(aoi)
        keep = []
        for w in cells:
            x0, y0 = grid.transform * (w.col, w.row)
            x1, y1 = grid.transform * (w.col_stop, w.row_stop)
            if aoi.intersects(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))):
                keep.append(w)
        cells = keep
    if len(cells) > max_windows:
        idx = np.linspace(0, len(cells) - 1, max_windows).round().astype(int)
        cells = [cells[i] for i in sorted(set(idx.tolist()))]
    return cells


def scene_statistics(read: Reader, grid: Grid, aoi=None, *, size: int = 256, max_windows: int = 64,
                     source: object = "scene") -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of the valid pixels inside ``aoi`` (grid CRS; None: whole scene)."""
    sums = sq = None
    n = 0
    for w in sample_windows(aoi, grid, size, max_windows):
        data, valid = read(w)
        data = np.asarray(data, np.float64)
        keep = np.asarray(valid, bool) & np.isfinite(data).all(axis=0)   # NaN/inf are never data
        if aoi is not None:
            keep &= rasterio.features.geometry_mask([aoi], out_shape=w.shape, transform=grid.window_transform(w),
                                                    invert=True)
        x = data[:, keep]
        if sums is None:
            sums, sq = np.zeros(data.shape[0]), np.zeros(data.shape[0])
        sums += x.sum(axis=1)
        sq += (x**2).sum(axis=1)
        n += x.shape[1]
    if not n:
        raise SandwatchError.about(source, "has no valid pixel inside its area of interest",
                                   "check the scene and its AOI (per-scene normalisation needs data to measure)")
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
    return mean, std


def scene_normalization(read: Reader, grid: Grid, aoi=None, *, k: float = 2.0, bands: Sequence[str] = (),
                        source: object = "scene") -> Normalization:
    """``[mean - k std, mean + k std]`` of this scene inside its AOI, per band, to [0, 1]."""
    mean, std = scene_statistics(read, grid, aoi, source=source)
    return Normalization.mean_std(mean, std, k=k)
