"""Small synthetic scenes with known content, for other stages' tests.

:func:`simple_truth` lays out a straight river with sandbars and fields and puts mining exactly
where a given mask says; :func:`make_scene` renders and writes it (optionally with its polygons).

>>> from sandwatch.synthetic import utm_grid, make_scene
>>> grid = utm_grid(85.85, 20.30, size=128)
>>> mask = np.zeros(grid.shape, bool); mask[40:60, 50:62] = True    # doctest: +SKIP
>>> truth = make_scene(tmp / "s.tif", grid, mine_mask=mask, annotations=tmp / "m.geojson")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from sandwatch.bands import L1C_BANDS
from sandwatch.grid import Grid
from sandwatch.synthetic.files import utm_grid, write_polygons, write_scene
from sandwatch.synthetic.landscape import MineCluster, SceneTruth
from sandwatch.synthetic.spectra import RenderOptions, Surface, render_bands, smooth_noise


def simple_truth(shape: tuple[int, int], mine_mask: np.ndarray | None = None, *, seed: int = 0,
                 water_cols: tuple[float, float] = (0.45, 0.55), bed_cols: tuple[float, float] = (0.30, 0.70),
                 date: dt.date = dt.date(2021, 1, 15)) -> SceneTruth:
    """A north-south river: water in columns ``water_cols`` (fractions of the width), sand in
    ``bed_cols``, fields outside; mining (pits inside, disturbed sand around) where ``mine_mask``."""
    h, w = shape
    rng = np.random.default_rng(seed)
    cols = (np.arange(w) + 0.5) / w
    surf = np.full(shape, Surface.CROP, np.uint8)
    sec = np.full(shape, Surface.BARE_SOIL, np.uint8)
    wt = np.clip(0.3 + 0.2 * smooth_noise(rng, shape, 6), 0, 1).astype(np.float32)
    bed = (cols >= bed_cols[0]) & (cols < bed_cols[1])
    water = (cols >= water_cols[0]) & (cols < water_cols[1])
    surf[:, bed], sec[:, bed] = Surface.DRY_SAND, Surface.WET_SAND
    wt[:, bed] = 0.2
    surf[:, water], sec[:, water] = Surface.CLEAR_WATER, Surface.TURBID_WATER
    wt[:, water] = 0.5
    mine = np.zeros(shape, bool) if mine_mask is None else np.asarray(mine_mask, bool)
    if mine.shape != tuple(shape):
        raise ValueError(f"mine_mask has shape {mine.shape}, scene is {tuple(shape)}")
    clusters = []
    if mine.any():
        pits = ndimage.binary_erosion(mine, iterations=2)
        disturbed = mine & ~pits
        hf = np.clip(0.5 + 0.35 * smooth_noise(rng, shape, 1.2), 0, 1)
        surf[disturbed], sec[disturbed] = Surface.DISTURBED_SAND, Surface.WET_SAND
        wt[disturbed] = hf[disturbed]
        surf[pits], sec[pits], wt[pits] = Surface.PIT_WATER, Surface.TURBID_WATER, 0.5
        clusters.append(MineCluster(0, mine.copy(), True, "High"))
    return SceneTruth(date, surf, sec, wt, np.ones(shape, np.float32), mine, clusters)


#: Top-of-atmosphere reflectance of a thick cloud, canonical band order B01..B12: bright and
#: white in the visible and NIR, darker in the SWIR, a cirrus (B10) signal as for high ice clouds.
CLOUD_TOA = np.array([0.46, 0.45, 0.44, 0.44, 0.45, 0.46, 0.47, 0.47, 0.47, 0.30, 0.030, 0.30, 0.20], np.float32)


def cloud_opacity(shape: tuple[int, int], cover: float, *, seed: int = 0, scale: float = 25.0) -> np.ndarray:
    """float32 (H, W) cloud opacity in [0, 1]: smooth blobs covering about ``cover`` of the
    scene fully (opacity 1), with a few pixels of soft edge around them."""
    if cover <= 0:
        return np.zeros(shape, np.float32)
    if cover >= 1:
        return np.ones(shape, np.float32)
    field = smooth_noise(np.random.default_rng(seed), shape, scale)
    level = np.quantile(field, 1.0 - cover)
    return np.clip((field - level) / 0.15 + 1.0, 0.0, 1.0).astype(np.float32) * (field > level - 0.15)


def with_clouds(bands: Iterable[np.ndarray], opacity: np.ndarray, names: Sequence[str] = L1C_BANDS,
                spectrum: np.ndarray = CLOUD_TOA) -> Iterator[np.ndarray]:
    """Blend clouds into reflectance bands (one (H, W) array per name, canonical names):
    ``(1 - opacity) * band + opacity * cloud``; nodata (0) stays nodata."""
    op = np.asarray(opacity, np.float32)
    for name, band in zip(names, bands):
        c = float(spectrum[L1C_BANDS.index(name)])
        yield np.where(band > 0, (1.0 - op) * band + op * c, 0.0).astype(np.float32)


def make_scene(path: str | os.PathLike, grid: Grid | None = None, *, mine_mask: np.ndarray | None = None,
               truth: SceneTruth | None = None, date: dt.date | str = dt.date(2021, 1, 15), seed: int = 0,
               size: int = 128, annotations: str | os.PathLike | None = None, confidence: str = "High",
               options: RenderOptions = RenderOptions(), clouds: np.ndarray | None = None) -> SceneTruth:
    """Render and write a 13-band L1C-like GeoTIFF with known content; return its truth.

    ``grid`` defaults to ``utm_grid(85.85, 20.30, size)`` (Odisha, EPSG:32645). Content is
    ``truth`` if given, else :func:`simple_truth` with ``mine_mask``. With ``annotations``, the
    mine mask is also written as GeoJSON polygons (EPSG:4326, ``Confidence``). ``clouds``: an
    opacity (or boolean) raster of the grid's shape blended in with :func:`with_clouds`.
    """
    grid = grid or utm_grid(85.85, 20.30, size)
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    truth = truth or simple_truth(grid.shape, mine_mask, seed=seed, date=date)
    bands = render_bands(truth.surface, truth.secondary, truth.weight, brightness=truth.brightness, seed=seed,
                         options=options)
    if clouds is not None:
        bands = with_clouds(bands, clouds)
    write_scene(Path(path), bands, grid, date=date)
    if annotations is not None:
        write_polygons(annotations, truth.mine_mask, grid, confidence=confidence)
    return truth
