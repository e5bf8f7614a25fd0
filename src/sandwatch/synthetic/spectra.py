"""Surface types, their 13-band spectra, and rendering a surface map to L1C-like reflectance.

The spectra start from the rough surface reflectances of the field guide (bands B02 B03 B04
B08 B11 B12, red edge for vegetation) and fill in the other bands by interpolating over
wavelength (B05-B07, B8A, B09), extrapolating (B01) or modelling the atmosphere (B10 cirrus,
water-vapour absorption in B09). :func:`render_bands` turns a map of :class:`Surface` codes
(optionally mixed with a second surface) into top-of-atmosphere reflectance, one band at a
time so that memory stays bounded: shared brightness noise (correlated across bands), band
noise, a smooth illumination field, a point-spread blur, and coarser 20 m / 60 m bands.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage

from sandwatch.bands import L1C_BANDS, S2_BANDS


class Surface(IntEnum):
    """Codes of a surface map (uint8). 0 means nodata (rendered as DN 0)."""

    NODATA = 0
    CLEAR_WATER = 1
    TURBID_WATER = 2
    DRY_SAND = 3
    WET_SAND = 4
    VEGETATION = 5      # trees, riparian scrub
    CROP = 6            # green irrigated field
    BARE_SOIL = 7       # ploughed or fallow field
    GRASS = 8           # dry grass, sparse cover
    BUILT = 9           # roofs, concrete: bright
    ROAD = 10           # asphalt
    POND = 11           # village tank, algae-green water
    PIT_WATER = 12      # mining pit / pond: sediment-laden water
    DISTURBED_SAND = 13  # churned wet sand beside pits
    STOCKPILE = 14      # heaped dry sand near a bank
    TRACK = 15          # compacted dirt track or dirt road


# Surface reflectance at B02 B03 B04 B08 B11 B12 (+ optional red edge B05 B06 B07).
_SIX = (490, 560, 665, 842, 1610, 2190)
_BASE: dict[Surface, tuple[tuple[float, ...], tuple[float, float, float] | None]] = {
    Surface.CLEAR_WATER: ((0.06, 0.05, 0.03, 0.02, 0.01, 0.01), None),
    Surface.TURBID_WATER: ((0.09, 0.11, 0.10, 0.06, 0.02, 0.01), None),
    Surface.DRY_SAND: ((0.15, 0.20, 0.25, 0.30, 0.38, 0.32), None),
    Surface.WET_SAND: ((0.08, 0.11, 0.13, 0.16, 0.15, 0.11), None),
    Surface.VEGETATION: ((0.03, 0.06, 0.04, 0.35, 0.18, 0.09), (0.10, 0.25, 0.30)),
    Surface.CROP: ((0.03, 0.07, 0.04, 0.42, 0.20, 0.10), (0.11, 0.30, 0.38)),
    Surface.BARE_SOIL: ((0.08, 0.11, 0.14, 0.22, 0.28, 0.22), None),
    Surface.GRASS: ((0.05, 0.08, 0.10, 0.22, 0.27, 0.19), (0.13, 0.17, 0.20)),
    Surface.BUILT: ((0.14, 0.16, 0.18, 0.24, 0.30, 0.28), None),
    Surface.ROAD: ((0.08, 0.09, 0.10, 0.13, 0.15, 0.14), None),
    Surface.POND: ((0.04, 0.07, 0.04, 0.05, 0.012, 0.008), None),
    Surface.PIT_WATER: ((0.08, 0.10, 0.09, 0.05, 0.015, 0.01), None),
    Surface.DISTURBED_SAND: ((0.10, 0.13, 0.16, 0.19, 0.20, 0.16), None),
    Surface.STOCKPILE: ((0.17, 0.22, 0.27, 0.31, 0.40, 0.34), None),
    Surface.TRACK: ((0.11, 0.14, 0.17, 0.23, 0.29, 0.25), None),
}

#: Atmosphere of the L1C (top-of-atmosphere) rendering: path reflectance added and
#: transmittance multiplied, per band in canonical order B01..B12 (B10 handled apart).
PATH_REFLECTANCE = np.array([0.090, 0.065, 0.040, 0.025, 0.020, 0.015, 0.012, 0.010, 0.009, 0.006, 0.0,
                             0.003, 0.001], np.float32)
TRANSMITTANCE = np.array([0.80, 0.85, 0.90, 0.92, 0.93, 0.94, 0.94, 0.95, 0.95, 0.55, 0.0, 0.95, 0.92],
                         np.float32)


def surface_spectrum(surface: Surface | int) -> np.ndarray:
    """The 13-band surface reflectance (canonical order B01..B12) of a surface type."""
    surface = Surface(surface)
    if surface == Surface.NODATA:
        return np.zeros(len(L1C_BANDS), np.float32)
    six, red_edge = _BASE[surface]
    wl = list(_SIX)
    val = list(six)
    if red_edge is not None:
        wl = wl[:3] + [705, 740, 783] + wl[3:]
        val = val[:3] + list(red_edge) + val[3:]
    out = []
    for name in L1C_BANDS:
        centre = S2_BANDS[name].centre_nm
        if name == "B01":  # extrapolate the blue slope, never below half of B02
            b02, b03 = six[0], six[1]
            out.append(max(0.5 * b02, b02 + (b02 - b03) * (490 - 443) / (560 - 490)))
        elif name == "B10":  # cirrus band: no surface signal; added by the atmosphere model
            out.append(0.0)
        else:
            out.append(float(np.interp(centre, wl, val)))
    return np.asarray(out, np.float32)


def spectra_table() -> np.ndarray:
    """(number of surface codes, 13) float32: row ``code`` is :func:`surface_spectrum(code)`."""
    n = max(int(s) for s in Surface) + 1
    return np.stack([surface_spectrum(i) for i in range(n)])


def _interp_matrix(n: int, scale: float, offset: float) -> np.ndarray:
    """(n, k) smooth interpolation weights from a coarse grid of spacing ``scale`` pixels."""
    k = int(np.ceil(n / scale)) + 4
    pos = (np.arange(n, dtype=np.float32) + 0.5) / scale + offset
    m = np.exp(-0.5 * ((pos[:, None] - np.arange(k, dtype=np.float32)[None, :]) / 0.75) ** 2)
    return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with features of about ``scale`` pixels.

    Small scales: Gaussian-filtered white noise. Larger scales: a coarse random grid
    interpolated separably (two small matrix products), so it costs little even for big shapes.
    """
    h, w = shape
    scale = max(float(scale), 1.0)
    if scale <= 3:
        field = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), scale / 2)
    else:
        my = _interp_matrix(h, scale, 2.0)
        mx = _interp_matrix(w, scale, 2.0)
        coarse = rng.standard_normal((my.shape[1], mx.shape[1]), dtype=np.float32)
        field = (my @ coarse) @ mx.T
    field = field - field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Average over k x k blocks, then repeat back (a 20 m / 60 m band on the 10 m grid)."""
    if k <= 1:
        return x
    h, w = x.shape
    ph, pw = (-h) % k, (-w) % k
    xp = np.pad(x, ((0, ph), (0, pw)), mode="edge") if (ph or pw) else x
    m = xp.reshape(xp.shape[0] // k, k, xp.shape[1] // k, k).mean(axis=(1, 3))
    return np.repeat(np.repeat(m, k, axis=0), k, axis=1)[:h, :w]


@dataclass(frozen=True)
class RenderOptions:
    """How a surface map becomes reflectance; the defaults are the published demo settings."""

    toa: bool = True                  #: L1C-like top of atmosphere (path reflectance, transmittance)
    band_noise: float = 0.003         #: std of independent per-band noise (reflectance)
    brightness_noise: float = 0.04    #: relative std of the per-pixel brightness shared by all bands
    illumination: float = 0.04        #: relative amplitude of the smooth illumination field
    illumination_scale: float = 150.0  #: feature size of the illumination/haze fields, pixels
    haze: float = 0.25                #: relative variation of the path reflectance
    psf_sigma: float = 0.5            #: Gaussian blur of the sensor's point-spread function, pixels
    native_resolution: bool = True    #: 20 m / 60 m bands are block-averaged to their native pixel


def render_bands(surface: np.ndarray, secondary: np.ndarray | None = None, weight: np.ndarray | None = None,
                 *, seed: int | np.random.SeedSequence = 0, bands: Sequence[str] = L1C_BANDS,
                 options: RenderOptions = RenderOptions(),
                 brightness: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield one float32 (H, W) reflectance array per band of ``bands``.

    ``surface`` is a map of :class:`Surface` codes; where ``secondary``/``weight`` are given,
    each pixel is ``(1 - weight) * spectrum(surface) + weight * spectrum(secondary)``.
    ``brightness`` (optional, around 1) multiplies all bands alike (texture). Pixels of code 0
    come out 0 (nodata). Deterministic for a given seed.
    """
    surface = np.asarray(surface)
    h, w = surface.shape
    table = spectra_table()
    rng = np.random.default_rng(seed)
    shared = 1.0 + options.brightness_noise * ndimage.gaussian_filter(
        rng.standard_normal((h, w)).astype(np.float32), 0.6) / 0.45
    if brightness is not None:
        shared *= brightness.astype(np.float32)
    illum = 1.0 + options.illumination * smooth_noise(rng, (h, w), options.illumination_scale)
    haze = 1.0 + options.haze * smooth_noise(rng, (h, w), options.illumination_scale * 1.5)
    cirrus = np.clip(0.5 + 0.4 * smooth_noise(rng, (h, w), options.illumination_scale * 2), 0, 1)
    valid = surface != 0
    codes = surface  # small integer codes index the spectra table directly (no int64 copies kept)
    sec = secondary
    wt = weight.astype(np.float32, copy=False) if weight is not None else None
    for name in bands:
        b = L1C_BANDS.index(name)
        col = table[:, b]
        if name == "B10":
            swir = table[:, L1C_BANDS.index("B12")][codes]
            refl = (0.002 + 0.005 * cirrus + 0.008 * swir).astype(np.float32)
            del swir
        else:
            refl = col[codes]
            if sec is not None and wt is not None:
                refl = refl + wt * (col[sec] - refl)
            refl = refl * shared
            if options.psf_sigma > 0 and not (options.native_resolution and S2_BANDS[name].resolution_m > 10):
                refl = ndimage.gaussian_filter(refl, options.psf_sigma)
            refl = refl * illum
            if options.toa:
                refl = PATH_REFLECTANCE[b] * haze + TRANSMITTANCE[b] * refl
        noise = options.band_noise * (0.2 if name == "B10" else 1.0)
        refl = refl + rng.standard_normal((h, w), dtype=np.float32) * noise
        if options.native_resolution:
            refl = _block_mean(refl, S2_BANDS[name].resolution_m // 10)
        refl = np.where(valid, np.maximum(refl, 1e-4), 0.0).astype(np.float32)
        yield refl


def render_reflectance(surface: np.ndarray, secondary: np.ndarray | None = None,
                       weight: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """All bands of :func:`render_bands` stacked: float32 (C, H, W). For small scenes."""
    return np.stack(list(render_bands(surface, secondary, weight, **kwargs)))
