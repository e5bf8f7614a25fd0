"""Writing a raster on a grid block by block (tiled, compressed GeoTIFF, atomic)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from tqdm import tqdm

from sandwatch.grid import Grid, Window
from sandwatch.io import atomic_output


def iter_blocks(grid: Grid, block: int = 1024):
    """Windows of at most ``block`` x ``block`` pixels that tile the grid, row by row."""
    for r in range(0, grid.height, block):
        for c in range(0, grid.width, block):
            yield Window(r, c, min(block, grid.height - r), min(block, grid.width - c))


def write_raster_blocks(
    path: str | os.PathLike,
    grid: Grid,
    dtype: str,
    block_fn: Callable[[Window], np.ndarray],
    *,
    block: int = 1024,
    nodata: float | None = None,
    description: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Write ``block_fn(window)`` (a 2-D array of the window's shape) for every block of the grid.

    The file is a single-band tiled (256 x 256), DEFLATE-compressed GeoTIFF on ``grid``, written
    through :func:`sandwatch.io.atomic_output`; memory stays at one block whatever the grid size.
    """
    path = Path(path)
    blocks = list(iter_blocks(grid, block))
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": dtype,
        "crs": grid.crs, "transform": grid.transform, "compress": "deflate", "nodata": nodata,
    }
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if progress is None:
        progress = len(blocks) > 4
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            if description:
                dst.set_band_description(1, description)
            for w in tqdm(blocks, desc=path.name, unit="block", disable=not progress):
                dst.write(np.asarray(block_fn(w), dtype=dtype), 1, window=w.to_rasterio())
    return path
