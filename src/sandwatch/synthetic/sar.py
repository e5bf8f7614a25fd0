"""Synthetic Sentinel-1 backscatter (VV, VH in dB) of a demo scene, and writing it like an export.

:func:`render_backscatter` turns the same surface map that :mod:`~sandwatch.synthetic.spectra`
renders into Sentinel-2 reflectance into C-band backscatter: a typical sigma0 per surface
(:data:`BACKSCATTER_DB`), mixed with the secondary surface in linear power, a gentle
incidence-angle gradient across the scene, bright point scatterers (dredgers, trucks, pumps) in
active mining, and multiplicative speckle of a GRD product (gamma distributed, ``looks`` looks).
Open water is dark (specular), churned sand and stockpiles are rough and bright, villages
brighter still (double bounce).

:func:`write_backscatter` writes it the way an Earth Engine export of ``COPERNICUS/S1_GRD``
usually arrives: float32 dB, bands ``VV``, ``VH`` with their unit, on a geographic (EPSG:4326)
grid of about 10 m, so that stacking it on the Sentinel-2 scene exercises the reprojection.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from sandwatch.grid import Grid
from sandwatch.io import atomic_output
from sandwatch.synthetic.landscape import SceneTruth
from sandwatch.synthetic.spectra import Surface

#: Typical C-band sigma0 (VV, VH) in dB at mid incidence, per surface.
BACKSCATTER_DB: dict[Surface, tuple[float, float]] = {
    Surface.CLEAR_WATER: (-23.0, -30.0),
    Surface.TURBID_WATER: (-21.0, -28.0),
    Surface.POND: (-22.0, -29.0),
    Surface.PIT_WATER: (-19.0, -26.0),
    Surface.DRY_SAND: (-10.0, -18.0),
    Surface.WET_SAND: (-13.0, -21.0),
    Surface.DISTURBED_SAND: (-6.0, -14.0),
    Surface.STOCKPILE: (-4.0, -12.0),
    Surface.VEGETATION: (-7.5, -13.0),
    Surface.CROP: (-9.0, -15.0),
    Surface.BARE_SOIL: (-11.0, -19.0),
    Surface.GRASS: (-12.0, -19.0),
    Surface.BUILT: (-1.0, -9.0),
    Surface.ROAD: (-17.0, -25.0),
    Surface.TRACK: (-12.0, -20.0),
}
#: Equivalent number of looks of Sentinel-1 IW GRD high resolution.
GRD_LOOKS = 4.4
#: Days between the Sentinel-2 date and its synthetic Sentinel-1 companion.
S1_DAYS_AFTER = 2


def _table(pol: int) -> np.ndarray:
    out = np.zeros(256, np.float32)
    for surface, db in BACKSCATTER_DB.items():
        out[int(surface)] = 10.0 ** (db[pol] / 10.0)
    return out


def render_backscatter(truth: SceneTruth, *, seed: int | np.random.SeedSequence = 0, looks: float = GRD_LOOKS,
                       machines: float = 0.02) -> np.ndarray:
    """float32 (2, H, W): VV and VH in dB of a scene's surface map (see the module docstring).
    ``machines``: fraction of active-mining pixels holding a bright point scatterer."""
    rng = np.random.default_rng(seed)
    h, w = truth.surface.shape
    gradient = np.linspace(1.5, -1.5, w, dtype=np.float32)[None, :]    # near to far range, dB
    out = np.empty((2, h, w), np.float32)
    bright = np.zeros((h, w), bool)
    for cluster in truth.clusters:
        if cluster.active:
            bright |= cluster.mask & (rng.random((h, w)) < machines)
    for pol in (0, 1):
        table = _table(pol)
        weight = np.clip(truth.weight, 0.0, 1.0)
        power = (1.0 - weight) * table[truth.surface] + weight * table[truth.secondary]
        power *= np.float32(10.0) ** (gradient / 10.0)
        power[bright] *= np.float32(10.0 ** 1.2)
        power *= rng.gamma(looks, 1.0 / looks, (h, w)).astype(np.float32)   # speckle, mean 1
        out[pol] = 10.0 * np.log10(np.maximum(power, 1e-6))
        out[pol][truth.surface == Surface.NODATA] = np.nan
    return out


def write_backscatter(path: str | os.PathLike, db: np.ndarray, grid: Grid, *, date: dt.date | None = None,
                      crs: str = "EPSG:4326") -> Path:
    """Write VV, VH (dB, float32, NaN nodata) reprojected from ``grid`` to ``crs`` at about the
    same pixel size, with band descriptions ``VV``, ``VH`` and units ``dB``; atomically."""
    dst_crs = CRS.from_user_input(crs)
    transform, width, height = calculate_default_transform(grid.crs, dst_crs, grid.width, grid.height,
                                                           *grid.bounds)
    warped = np.full((2, height, width), np.nan, np.float32)
    for k in range(2):
        reproject(db[k], warped[k], src_transform=grid.transform, src_crs=grid.crs, src_nodata=np.nan,
                  dst_transform=transform, dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    profile = dict(driver="GTiff", width=width, height=height, count=2, dtype="float32", crs=dst_crs,
                   transform=transform, nodata=np.nan, compress="deflate", tiled=True, blockxsize=256,
                   blockysize=256)
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(warped)
            for k, name in enumerate(("VV", "VH"), start=1):
                dst.set_band_description(k, name)
                dst.set_band_unit(k, "dB")
            dst.update_tags(SENSOR="Sentinel-1 (synthetic)", PRODUCT_TYPE="GRD", INSTRUMENT_MODE="IW",
                            **({"DATE": date.isoformat()} if date else {}))
    return Path(path)
