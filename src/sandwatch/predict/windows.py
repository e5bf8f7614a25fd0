"""Pure arithmetic of sliding-window prediction: the window grid, reflect indices, blend weights.

The published inference (field guide section 2) slides windows of the model's size over the
scene, discards ``edge`` pixels on each side of every window and keeps the interior; windows
step by ``stride = window - 2 * edge`` so the interiors ("keep" windows) tile the scene
exactly: every pixel is predicted from exactly one window's interior, with at least ``edge``
pixels of context on every side. At the scene's borders the context comes from the scene
mirrored about its border pixel (``numpy.pad(mode="reflect")`` semantics, see
:func:`reflect_indices`), so border pixels get full context too.

With ``blend="cosine"`` each window also contributes ``margin`` pixels beyond its interior
(into its discarded edge) with a squared-cosine taper; neighbouring tapers sum to one, so the
blend is a partition of unity and each blended pixel still has ``edge - margin`` pixels of
context.

Nothing here reads files; everything is tested on small arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from sandwatch.errors import SandwatchError
from sandwatch.grid import Window

WindowPair = tuple[Window, Window]


def check_window_edge(window: int, edge: int) -> int:
    """The stride for a window size and edge; a :class:`SandwatchError` when they do not fit."""
    if int(window) <= 0:
        raise SandwatchError.about("checkpoint", f"window size {window} is not positive", "retrain or fix the checkpoint")
    if int(edge) < 0 or window - 2 * edge < 1:
        raise SandwatchError.about(
            "--edge", f"{edge} pixels discarded on each side leaves nothing of a {window} px window",
            f"use an edge between 0 and {(window - 1) // 2}")
    return int(window) - 2 * int(edge)


def _starts(n: int, stride: int) -> list[int]:
    return list(range(0, n, stride))


def window_grid(grid_shape: tuple[int, int], window: int, edge: int) -> list[WindowPair]:
    """Sliding windows over a grid of ``grid_shape`` (height, width), row-major.

    Returns ``(read, keep)`` pairs: ``read`` is the ``window`` x ``window`` model input (it may
    reach outside the grid: read it boundless with reflect padding), ``keep`` is the part of
    its interior whose predictions are kept (``read`` shrunk by ``edge`` on each side, cut at
    the grid's bottom/right border). The keep windows tile the grid without gaps or overlaps.
    """
    height, width = (int(v) for v in grid_shape)
    stride = check_window_edge(window, edge)
    out = []
    for r in _starts(height, stride):
        kh = min(stride, height - r)
        for c in _starts(width, stride):
            kw = min(stride, width - c)
            out.append((Window(r - edge, c - edge, window, window), Window(r, c, kh, kw)))
    return out


def window_rows(pairs: Iterable[WindowPair]) -> list[list[WindowPair]]:
    """Group a row-major window grid into rows of windows sharing their keep rows."""
    rows: list[list[WindowPair]] = []
    for pair in pairs:
        if rows and rows[-1][0][1].row == pair[1].row:
            rows[-1].append(pair)
        else:
            rows.append([pair])
    return rows


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Source indices in ``[0, n)`` for positions ``start..stop-1`` of a line of ``n`` pixels
    mirrored about its end pixels (the infinite extension of ``numpy.pad(mode="reflect")``)."""
    idx = np.arange(start, stop, dtype=np.int64)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def reflect_read(read: Callable[[Window], tuple[np.ndarray, np.ndarray]], window: Window,
                 grid_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (which may reach outside the grid) with reflect padding.

    ``read(w)`` must return ``(data (C, h, w), valid (h, w))`` for a window ``w`` inside the
    grid. One call is made, for the smallest window holding every source pixel. The result is
    the same slice of the one mirrored infinite image whatever window is asked for, so strips
    and single windows agree pixel for pixel.
    """
    height, width = grid_shape
    ri = reflect_indices(window.row, window.row_stop, height)
    ci = reflect_indices(window.col, window.col_stop, width)
    r0, r1 = int(ri.min()), int(ri.max()) + 1
    c0, c1 = int(ci.min()), int(ci.max()) + 1
    src = Window(r0, c0, r1 - r0, c1 - c0)
    data, valid = read(src)
    if src == window:
        return data, valid
    rr, cc = ri - r0, ci - c0
    # one axis at a time (np.take) is several times faster than one 2-D fancy index
    if not np.array_equal(rr, np.arange(src.height)):
        data, valid = np.take(data, rr, axis=1), np.take(valid, rr, axis=0)
    if not np.array_equal(cc, np.arange(src.width)):
        data, valid = np.take(data, cc, axis=2), np.take(valid, cc, axis=1)
    return data, valid


def taper_1d(start: int, stop: int, keep_start: int, keep_stop: int, margin: int, n: int) -> np.ndarray:
    """Blend weights for positions ``start..stop-1`` of a window whose interior is
    ``[keep_start, keep_stop)`` on a line of ``n`` pixels.

    1 inside the interior away from seams; a squared-cosine ramp over ``2 * margin`` pixels
    centred on each seam with a neighbour (none at the line's ends, where no neighbour
    exists); 0 outside ``[keep_start - margin, keep_stop + margin)``. The ramps of two
    neighbours sharing a seam add up to exactly one (``sin^2 + cos^2``).
    """
    x = np.arange(start, stop, dtype=np.float64)
    w = ((x >= keep_start) & (x < keep_stop)).astype(np.float64)
    if margin > 0:
        if keep_start > 0:
            t = (x - (keep_start - margin) + 0.5) / (2 * margin)
            ramp = np.sin(0.5 * math.pi * t) ** 2
            sel = (x >= keep_start - margin) & (x < keep_start + margin)
            w = np.where(sel, ramp, w)
        if keep_stop < n:
            t = (x - (keep_stop - margin) + 0.5) / (2 * margin)
            ramp = np.cos(0.5 * math.pi * t) ** 2
            sel = (x >= keep_stop - margin) & (x < keep_stop + margin)
            w = np.where(sel, ramp, w)
    return w.astype(np.float32)


def blend_extent(keep: Window, margin: int, grid_shape: tuple[int, int]) -> Window:
    """The pixels a window contributes to when blending: its interior grown by ``margin``,
    cut to the grid."""
    grown = keep.pad(margin) if margin else keep
    clipped = grown.clip(*grid_shape)
    assert clipped is not None
    return clipped


def blend_weights(keep: Window, margin: int, grid_shape: tuple[int, int]) -> tuple[Window, np.ndarray]:
    """``(extent, weights (h, w) float32)`` of a window's contribution to a cosine blend."""
    ext = blend_extent(keep, margin, grid_shape)
    wr = taper_1d(ext.row, ext.row_stop, keep.row, keep.row_stop, margin, grid_shape[0])
    wc = taper_1d(ext.col, ext.col_stop, keep.col, keep.col_stop, margin, grid_shape[1])
    return ext, np.outer(wr, wc).astype(np.float32)


def default_margin(window: int, edge: int) -> int:
    """Blend margin used by ``blend="cosine"`` unless given: half the edge, at most half the stride."""
    return max(0, min(edge // 2, (window - 2 * edge) // 2))
