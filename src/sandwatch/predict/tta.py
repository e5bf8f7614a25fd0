"""Test-time augmentation over the dihedral group D4 (the 8 rotations and flips of a square).

A batch of windows is predicted in each of the 8 orientations, each output is turned back to
the original orientation, and the 8 probabilities are averaged. River mining has no preferred
orientation (rivers run any way across a tile, the sun's azimuth aside), so a model should
not depend on it; averaging over D4 removes what it learnt by chance from the orientations of
the training windows, at 8 times the forward time.

The transforms act on the last two axes, so one definition serves inputs (N, C, H, W) and
outputs (N, H, W). Windows are square, so every transform keeps the shape. Nothing here
touches torch: :class:`~sandwatch.predict.predictor.TorchForward` runs the same 8 transforms in
torch on its device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The 8 elements of D4 as ``(quarter turns, flip)``: first flip left-right (when ``flip``),
#: then rotate ``quarter turns`` times by 90 degrees counter-clockwise.
D4: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def d4_apply(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``x`` (..., H, W) in orientation ``(k, flip)`` of :data:`D4`."""
    if flip:
        x = x[..., ::-1]
    return np.rot90(x, k, axes=(-2, -1))


def d4_invert(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Undo :func:`d4_apply`: ``d4_invert(d4_apply(x, k, flip), k, flip) == x``."""
    y = np.rot90(y, -k, axes=(-2, -1))
    if flip:
        y = y[..., ::-1]
    return y


def tta_numpy(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A batch function that averages ``forward`` over :data:`D4`.

    ``forward``: (N, C, S, S) -> probabilities (N, S, S), any callable (it sees contiguous
    copies of the transformed batch, so it may assume C order). The mean is of the 8
    probabilities, not of logits: each orientation's output is already a calibrated
    probability (the temperature applied inside ``forward``).
    """

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        n, s = batch.shape[0], batch.shape[-1]
        if batch.shape[-2] != s:
            raise ValueError(f"test-time augmentation needs square windows, got {batch.shape[-2:]}")
        total = np.zeros((n, s, s), np.float32)
        for k, flip in D4:
            out = np.asarray(forward(np.ascontiguousarray(d4_apply(batch, k, flip))), np.float32)
            total += d4_invert(out.reshape(n, s, s), k, flip)
        return total / np.float32(len(D4))

    return predict
