"""Photometric augmentation that imitates season and atmosphere (``augment.photometric``).

A river seen in another month or through another atmosphere differs mostly in colour and
brightness: wet or dry sand, turbid or clear water, green or bare banks, haze. The geometry of
a mine (pits, ponds, tracks) does not change. So each training window may get, on reflectance
before normalisation, with probability ``p``:

* a per-band gain (a colour shift), log-uniform in ``+-band_gain``;
* a contrast change around the window's per-band mean, log-uniform in ``+-contrast``;
* a brightness offset, uniform in ``+-brightness`` x the window's mean;
* a gamma on [0, 1] reflectance, log-uniform in ``+-gamma``;
* haze: a blend towards a bright airlight, ``(1 - a) x + a h`` with ``a`` uniform in
  ``[0, haze]`` and ``h`` falling with wavelength (Rayleigh-like: about 0.3 in blue, 0.03 in
  SWIR), scaled per window.

Everything draws from the generator it is given, so a window's augmentation is a pure function
of ``(seed, epoch, scene, k)`` like its position (exact resume, stateless workers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sandwatch.bands import BANDS


def airlight(bands: Sequence[str]) -> np.ndarray:
    """Relative airlight per optical band: 0.3 x (490 nm / wavelength)^2 (true-colour channels at
    the wavelength of the Sentinel-2 band they stand for)."""
    return np.asarray([0.3 * (490.0 / BANDS[b].centre_nm) ** 2 for b in bands], np.float32)


def photometric(x: np.ndarray, valid: np.ndarray, rng: np.random.Generator, cfg, bands: Sequence[str]) -> np.ndarray:
    """Augmented copy of reflectance ``x`` (C, h, w); ``cfg`` an :class:`AugmentConfig`;
    nodata pixels (``valid`` False) are left as they are. Only optical bands change: radar
    backscatter (dB) has no haze, gamma or illumination to imitate."""
    optical = np.array([BANDS[b].centre_nm is not None for b in bands])
    if not optical.all():
        out = np.array(x, np.float32, copy=True)
        if optical.any():
            out[optical] = photometric(out[optical], valid, rng, cfg, [b for b, o in zip(bands, optical) if o])
        return out
    if rng.random() >= cfg.p:
        return x
    x = np.asarray(x, np.float32)
    c = x.shape[0]
    v = np.asarray(valid, bool)
    if not v.any():
        return x
    mean = x[:, v].mean(axis=1).astype(np.float32)[:, None, None]
    gain = np.exp(rng.uniform(-cfg.band_gain, cfg.band_gain, c)).astype(np.float32)[:, None, None]
    contrast = np.float32(np.exp(rng.uniform(-cfg.contrast, cfg.contrast)))
    shift = np.float32(rng.uniform(-cfg.brightness, cfg.brightness) * float(mean.mean()))
    gamma = np.float32(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    a = np.float32(rng.uniform(0.0, cfg.haze))
    h = airlight(bands)[:, None, None] * np.float32(rng.uniform(0.5, 1.5))
    y = gain * (mean + contrast * (x - mean)) + shift
    y = np.clip(y, 0.0, None) ** gamma
    y = (1 - a) * y + a * h
    return np.where(v[None], y, x).astype(np.float32)
