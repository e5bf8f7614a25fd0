"""True colour for people: the one stretch of red, green and blue reflectance to 8 bits.

Per band a dark-object (haze) offset at the 1st percentile, then one common gain for the three
bands up to the 99.5th percentile of the pooled offset values (colours keep their balance),
then gamma 1.3. Used by the demo data's quicklooks (:func:`stretch_true_colour`), the map's
tiles and ``sandwatch export quicklook`` (:mod:`sandwatch.serve.quicklook` measures it once per
scene with :func:`fit_stretch` and applies it tile by tile with :func:`apply_stretch`).
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (1.0, 99.5)
GAMMA = 1.3
#: pixels a stretch is measured on at most (a regular sample of bigger images)
SAMPLE_PX = 250_000


def fit_stretch(pixels: np.ndarray, percentiles=PERCENTILES) -> tuple[tuple[float, float, float], float]:
    """``(low per band, high)`` from (3, n) valid reflectance values (red, green, blue)."""
    px = np.asarray(pixels, np.float32)
    low = tuple(float(np.percentile(b, percentiles[0])) for b in px)
    high = float(np.percentile(px - np.asarray(low, np.float32)[:, None], percentiles[1]))
    return low, max(high, 1e-6)


def apply_stretch(refl: np.ndarray, low, high: float, gamma: float = GAMMA) -> np.ndarray:
    """(3, ...) reflectance -> (3, ...) uint8 with a fitted stretch."""
    refl = np.asarray(refl, np.float32)
    lo = np.asarray(low, np.float32).reshape((3,) + (1,) * (refl.ndim - 1))
    return np.rint(np.clip((refl - lo) / high, 0, 1) ** (1.0 / gamma) * 255).astype(np.uint8)


def stretch_true_colour(red: np.ndarray, green: np.ndarray, blue: np.ndarray, *, percentiles=PERCENTILES,
                        gamma: float = GAMMA, valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, 3) from three reflectance bands, the stretch measured on the image itself
    (on a regular sample of at most :data:`SAMPLE_PX` pixels); nodata (``valid`` False, by
    default any band <= 0) is black."""
    bands = np.stack([np.asarray(b, np.float32) for b in (red, green, blue)])
    if valid is None:
        valid = (bands > 0).all(axis=0)
    if not valid.any():
        return np.zeros(bands.shape[1:] + (3,), np.uint8)
    step = max(1, int(np.sqrt(valid.size / SAMPLE_PX)))
    low, high = fit_stretch(bands[:, ::step, ::step][:, valid[::step, ::step]], percentiles)
    rgb = np.moveaxis(apply_stretch(bands, low, high, gamma), 0, -1)
    rgb[~valid] = 0
    return rgb
