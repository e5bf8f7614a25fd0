"""Handing freed memory back to the system between batches (glibc ``malloc_trim``), so a
full tile's rows keep a flat RSS."""

from __future__ import annotations

import time


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            trim = libc.malloc_trim
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            _TRIM = trim
        except (OSError, AttributeError):
            pass
    return _TRIM or None


_TRIM = None


#: (when the last trim ended, how long it took)
_last_trim = [0.0, 0.0]


def release_free_memory(share: float = 0.0) -> None:
    """Give the memory freed since the last call back to the system (glibc ``malloc_trim``;
    nothing elsewhere). ``share`` > 0: skip the call while less time than the last call took,
    divided by ``share``, has passed since it (spend at most that share of the time on it).

    ``_predict_rasters`` calls it before each batch (``share`` 2 %): a batch's model
    activations (hundreds of MB for a ResNet U-Net) are freed into malloc's arenas, and the
    reading and writing threads free their strips and blocks into theirs; the arenas keep much
    of it (their tops, and holes between live blocks) and the next batch's activations land
    beside rather than in it, so without this the peak RSS of each window row of a 10980 px
    tile crept up by about 5 MB a row."""
    trim = _malloc_trim()
    if trim is None:
        return
    t0 = time.monotonic()
    if share > 0 and t0 - _last_trim[0] < _last_trim[1] / share:
        return
    trim(0)
    t1 = time.monotonic()
    _last_trim[:] = [t1, t1 - t0]
