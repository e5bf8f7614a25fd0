"""Streaming tiled inference: one pure function from a window reader and a batch model to
finished blocks of probabilities.

In the spirit of terratorch's tiled inference, but streaming: windows are read and predicted
one *row of windows* at a time, and each row of output pixels is handed back (yielded) as
soon as no later window can touch it. Only one row of windows is ever in memory (input strips
of at most ``strip_windows`` windows, the model's outputs for them, and a rolling accumulator
``stride + 2 * margin`` rows high), so memory does not grow with the scene's height, and grows
with its width only through that accumulator (a few MB for a 10980 px wide tile).

Reading overlaps prediction: a background thread reads the next strips (at most ``prefetch``
of them) while the model works on the current ones, and keeps reading while the caller writes
a finished block. Reads release the GIL (GDAL decompression), so on a CPU the reads and
writes hide in the gaps of the model's threads.

Nothing here touches files or torch: ``read`` and ``predict_batch`` are callables, so the
stitching is tested on numpy arrays.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from sandwatch.grid import Window
from sandwatch.predict.windows import (
    WindowPair, blend_weights, check_window_edge, default_margin, reflect_read, window_grid, window_rows,
)

Reader = Callable[[Window], "tuple[np.ndarray, np.ndarray]"]
BatchFn = Callable[[np.ndarray], np.ndarray]

BLENDS = ("none", "cosine")


def _runs(pairs: list[WindowPair], limit: int) -> list[list[WindowPair]]:
    """Split a row of windows into runs of horizontally adjacent windows, at most ``limit`` long."""
    out: list[list[WindowPair]] = []
    for pair in pairs:
        if out and len(out[-1]) < limit and out[-1][-1][1].col_stop == pair[1].col:
            out[-1].append(pair)
        else:
            out.append([pair])
    return out


def prefetch(items: Iterable, depth: int, *, name: str = "sandwatch-prefetch") -> Iterator:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Order is kept. An exception raised while producing an item is raised to the consumer in
    its place. When the consumer stops early (``close()``, an exception, garbage collection)
    the thread stops before it produces another item, and closes ``items`` itself (a
    generator's ``finally`` runs in the producing thread, however the iteration ends).
    ``depth <= 0``: no thread at all.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=int(depth))
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        it = iter(items)
        try:
            for item in it:
                if not put((None, item)):
                    return
            put((None, end))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put((err, None))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            err, item = q.get()
            if err is not None:
                raise err
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _strips(read: Reader, rows: list[list[WindowPair]], grid_shape: tuple[int, int], window: int,
            limit: int, done: Callable[[], None] | None = None
            ) -> Iterator[tuple[int, bool, list[WindowPair], np.ndarray, np.ndarray]]:
    """Read each run of adjacent windows as one strip: ``(row index, last run of its row, run,
    data float32 (C, window, strip width), valid)``, rows top to bottom. ``done()`` is called
    in the reading thread when reading ends, however it ends."""
    try:
        for ri, row in enumerate(rows):
            runs = _runs(row, max(1, int(limit)))
            for k, run in enumerate(runs):
                first = run[0][0]
                strip = Window(first.row, first.col, window, run[-1][0].col_stop - first.col)
                data, valid = reflect_read(read, strip, grid_shape)
                yield ri, k == len(runs) - 1, run, np.asarray(data, dtype=np.float32), valid
    finally:
        if done is not None:
            done()


def select_windows(grid_shape: tuple[int, int], window: int, edge: int, *, region: Window | None = None,
                   margin: int = 0, include: Callable[[Window], bool] | None = None
                   ) -> tuple[list[list[WindowPair]], int]:
    """Rows of the windows that contribute to ``region``, and how many were left out by ``include``."""
    full = Window(0, 0, *grid_shape)
    region = full if region is None else region.clip(*grid_shape)
    rows, skipped = [], 0
    if region is None:
        return [], 0
    for row in window_rows(window_grid(grid_shape, window, edge)):
        chosen = []
        for read_w, keep in row:
            ext = keep.pad(margin) if margin else keep
            if ext.intersection(region) is None:
                continue
            if include is not None and not include(keep):
                skipped += 1
                continue
            chosen.append((read_w, keep))
        if chosen:
            rows.append(chosen)
    return rows, skipped


def _windows_before(rows: list[list[WindowPair]], grid_shape: tuple[int, int], window: int, edge: int, margin: int,
                    include) -> int:
    """How many windows of the whole grid's selection come before the first of ``rows``."""
    first = rows[0][0][1]
    if first.row == 0 and first.col == 0:
        return 0
    every, _ = select_windows(grid_shape, window, edge, margin=margin, include=include)
    n = 0
    for row in every:
        for _, keep in row:
            if keep.row == first.row and keep.col >= first.col or keep.row > first.row:
                return n
            n += 1
    return n


def tiled_inference(predict_batch: BatchFn, read: Reader, grid_shape: tuple[int, int], window: int, edge: int, *,
                    region: Window | None = None, blend: str = "none", margin: int | None = None,
                    batch_size: int = 8, include: Callable[[Window], bool] | None = None,
                    strip_windows: int = 32, progress: Callable[[int], None] | None = None,
                    stats: dict | None = None, prefetch_strips: int = 2,
                    read_done: Callable[[], None] | None = None,
                    start_row: int | None = None) -> Iterator[tuple[Window, np.ndarray]]:
    """Predict a grid (or a ``region`` of it) window by window and yield finished row blocks.

    Parameters
    ----------
    predict_batch:
        ``(N, C, window, window)`` float32 input (as returned by ``read``) ->
        ``(N, window, window)`` probabilities. Must treat each window independently.
    read:
        ``read(w) -> (data (C, h, w), valid bool (h, w))`` for a window ``w`` inside the grid.
        Windows reaching outside the grid are mirrored (:func:`reflect_read`).
    grid_shape, window, edge:
        Grid (height, width), model window size, pixels discarded on each side of a window.
    region:
        Only produce this part of the grid (default: all). The windows are those of the whole
        grid, so a region's pixels equal the same pixels of a whole-grid run.
    blend:
        ``"none"``: each pixel comes from the one window whose interior holds it.
        ``"cosine"``: interiors grown by ``margin`` (default :func:`default_margin`) are
        averaged with squared-cosine weights across seams.
    include:
        ``include(keep) -> bool``; windows for which it is False are not predicted (AOI mode).
    strip_windows:
        At most this many adjacent windows are read with one call to ``read``.
    prefetch_strips:
        Strips read ahead in a background thread (0: read in the calling thread). ``read``
        is then called from that one thread, one call at a time, in the same order.
    read_done:
        Called in the reading thread once it stops reading (to release per-thread handles).
    progress:
        Called with the number of windows just predicted.
    stats:
        A dict that receives ``windows`` (selected), ``skipped_windows`` (left out by
        ``include``) and, with ``start_row``, ``resumed_windows`` (not predicted again).
    start_row:
        Resume: rows of the region above this grid row are finished already (an earlier run
        wrote them) and are not yielded again. Windows that only reach those rows are not
        predicted, except the ones that share a batch with the first window still needed, so
        every batch is the one a whole run makes and the pixels are a whole run's.

    Yields
    ------
    ``(block, prob)``: ``block`` a :class:`Window` spanning the region's columns, ``prob``
    float32 ``block.shape``, NaN where nothing was predicted (outside windows that were
    included, or where the input is not valid). Blocks come top to bottom and tile the region.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, not {blend!r}")
    stride = check_window_edge(window, edge)
    height, width = (int(v) for v in grid_shape)
    full = Window(0, 0, height, width)
    region = full if region is None else region.clip(height, width)
    if region is None:
        return
    if blend == "none":
        m = 0
    else:
        m = default_margin(window, edge) if margin is None else int(margin)
        if m < 0 or m > edge or 2 * m > stride:
            raise ValueError(f"blend margin {m} must lie in [0, min(edge, stride / 2)] = [0, {min(edge, stride // 2)}]")
    rows, skipped = select_windows((height, width), window, edge, region=region, margin=m, include=include)
    if stats is not None:
        stats["windows"] = stats.get("windows", 0) + sum(len(r) for r in rows)
        stats["skipped_windows"] = stats.get("skipped_windows", 0) + skipped

    # Batches are consecutive windows of the *whole grid's* row-major sequence of selected
    # windows (they may span rows), so a row band of the grid is batched exactly as in a whole
    # run: even a model whose float rounding depends on the batch gives identical pixels.
    index = _windows_before(rows, (height, width), window, edge, m, include) if rows else 0
    r_top, c0, r_stop, rw = region.row, region.col, region.row_stop, region.width
    if start_row is not None and start_row > r_top:
        r_top = min(int(start_row), r_stop)
        flat = [pair for row in rows for pair in row]
        first = next((i for i, (_, keep) in enumerate(flat) if min(keep.row_stop + m, r_stop) > r_top), len(flat))
        cut = len(flat) if first == len(flat) else max(0, first - (index + first) % batch_size)   # its batch
        rows = window_rows(flat[cut:])
        index += cut
        if stats is not None:
            stats["resumed_windows"] = stats.get("resumed_windows", 0) + cut
    acc = np.zeros((0, rw), np.float32)    # weighted sum of probabilities, rows [buf0, buf0 + len)
    wsum = np.zeros((0, rw), np.float32)   # sum of weights
    buf0 = r_top

    def grow(until: int):
        nonlocal acc, wsum
        need = min(until, r_stop) - buf0 - acc.shape[0]
        if need > 0:
            acc = np.concatenate([acc, np.zeros((need, rw), np.float32)])
            wsum = np.concatenate([wsum, np.zeros((need, rw), np.float32)])

    def emit(until: int):
        nonlocal acc, wsum, buf0
        until = min(until, r_stop)
        if until <= buf0:
            return None
        grow(until)
        n = until - buf0
        a, s = acc[:n], wsum[:n]
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(s > 0, a / np.where(s > 0, s, 1), np.nan).astype(np.float32)
        block = Window(buf0, c0, n, rw)
        acc, wsum, buf0 = acc[n:], wsum[n:], until
        return block, prob

    ones_cache: dict[tuple[int, int], np.ndarray] = {}
    pending: list[tuple[WindowPair, np.ndarray, np.ndarray]] = []   # (pair, input, valid) awaiting a batch

    def flush():
        batch = np.stack([x for _, x, _ in pending])
        probs = np.asarray(predict_batch(batch), dtype=np.float32).reshape(len(pending), window, window)
        for ((read_w, keep), _, valid_w), p in zip(pending, probs):
            if m:
                ext, wts = blend_weights(keep, m, (height, width))
            else:
                ext = keep
                wts = ones_cache.get(keep.shape)
                if wts is None:
                    wts = ones_cache[keep.shape] = np.ones(keep.shape, np.float32)
            target = ext.intersection(Window(buf0, c0, acc.shape[0], rw))
            if target is None:
                continue
            src = target.relative_to(read_w)
            w = wts[target.relative_to(ext).slices()] * valid_w[src.slices()]
            dst = target.shift(-buf0, -c0)
            acc[dst.slices()] += p[src.slices()] * w
            wsum[dst.slices()] += w
        if progress is not None:
            progress(len(pending))
        pending.clear()

    strips = prefetch(_strips(read, rows, (height, width), window, strip_windows, read_done), prefetch_strips,
                      name="sandwatch-read")
    try:
        row_started = -1
        for ri, last_of_row, run, data, valid in strips:
            keep_row = rows[ri][0][1]
            if ri != row_started:
                grow(keep_row.row_stop + m)
                row_started = ri
            first = run[0][0]
            for pair in run:
                off = pair[0].col - first.col
                # views: the strip lives until its last window is batched (np.stack copies)
                pending.append((pair, data[:, :, off:off + window], valid[:, off:off + window]))
                index += 1
                if index % batch_size == 0:
                    flush()
            del data, valid
            if not last_of_row:
                continue
            if pending:                  # rows from the oldest waiting window down are not final
                done = pending[0][0][1].row - m
            else:
                done = r_stop if keep_row.row_stop >= height else keep_row.row_stop - m
            out = emit(done)
            if out is not None:
                yield out
    finally:
        strips.close()
    if pending:
        flush()
    out = emit(r_stop)
    if out is not None:
        yield out
