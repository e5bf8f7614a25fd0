"""True colour for people: one stretch per scene, used by the map's tiles and by
``sandwatch export quicklook`` (a stretched 8-bit RGB COG per scene, for reviewers who
annotate in QGIS or Labelbox), so both show a scene with the same colours.

The stretch (:func:`scene_stretch`) is measured once per scene on a decimated read of its
red, green and blue bands (B04, B03, B02; R, G, B for true-colour files) in reflectance, by
the one rule of :mod:`sandwatch.imagery.display` (dark-object offset per band, one common
gain, gamma 1.3), the same as the demo data's quicklooks.
Nodata is black in the COG (nodata 0 on all three bands) and transparent in tiles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from sandwatch.errors import SandwatchError
from sandwatch.imagery.display import GAMMA, apply_stretch, fit_stretch
from sandwatch.io import atomic_output, temporary_sibling, remove_quietly

STRETCH_SAMPLE_PX = 512


def rgb_bands(scene) -> tuple[str, str, str]:
    names = ("R", "G", "B") if scene.level == "RGB" else ("B04", "B03", "B02")
    missing = [b for b in names if b not in scene.bands]
    if missing:
        raise SandwatchError.about(scene.source, f"has no {', '.join(missing)} band for a true-colour view",
                                   "serve or export scenes with red, green and blue bands")
    return names


def rgb_sources(scene) -> list[tuple[str, int]]:
    """(file, 1-based band index) of the scene's red, green and blue bands."""
    files = {f.name: f for f in scene._files}          # the scene's own band table: one file per band or one for all
    return [(files[b].path, files[b].index) for b in rgb_bands(scene)]


@dataclass(frozen=True)
class Stretch:
    """Stored values (DN) -> 8-bit: ``((DN - offset) / scale - low_b) / high`` clipped, ** 1/gamma."""

    offset: float
    scale: float
    low: tuple[float, float, float]
    high: float
    gamma: float = GAMMA

    def apply(self, dn: np.ndarray) -> np.ndarray:
        """(3, h, w) stored values -> (3, h, w) uint8."""
        refl = (np.asarray(dn, np.float32) - self.offset) / self.scale
        return apply_stretch(refl, self.low, self.high, self.gamma)


def scene_stretch(scene) -> Stretch:
    """The stretch of one scene (see the module docstring)."""
    bands = rgb_bands(scene)
    data, valid = scene.read_decimated(STRETCH_SAMPLE_PX, bands=bands)   # reflectance (RGB: / 255)
    scale = 255.0 if scene.level == "RGB" else float(scene.scale)
    offset = 0.0 if scene.level == "RGB" else float(scene.offset)
    if not valid.any():
        return Stretch(offset, scale, (0.0, 0.0, 0.0), 0.3)
    low, high = fit_stretch(data[:, valid])
    return Stretch(offset, scale, low, high)


def export_quicklook(scene_path: str | os.PathLike, out: str | os.PathLike, *, block: int = 1024) -> Path:
    """A 3-band uint8 COG of ``scene_path`` on its own 10 m grid, stretched by :func:`scene_stretch`,
    nodata 0, DEFLATE, with overviews; written block by block (memory: one block), atomically."""
    from sandwatch.imagery import open_scene
    from sandwatch.labels.writers import iter_blocks

    out = Path(out)
    scene = open_scene(scene_path)
    try:
        stretch = scene_stretch(scene)
        bands = rgb_bands(scene)
        grid = scene.grid
        staging = temporary_sibling(out.with_suffix(".staging.tif"))
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 3, "dtype": "uint8",
                   "crs": grid.crs, "transform": grid.transform, "nodata": 0, "compress": "deflate",
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "photometric": "RGB"}
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                for w in iter_blocks(grid, block):
                    data, valid = scene.read(w, bands=bands, units="dn")
                    img = np.maximum(stretch.apply(data), 1)       # 0 is nodata: real pixels are at least 1
                    img[:, ~valid] = 0
                    dst.write(img, window=w.to_rasterio())
                dst.update_tags(SANDWATCH_SOURCE=str(scene.source), SANDWATCH_STRETCH=repr(stretch))
            with atomic_output(out) as tmp:
                rasterio.shutil.copy(staging, tmp, driver="COG", compress="DEFLATE", overview_resampling="average",
                                     blocksize=256)
        finally:
            remove_quietly(staging)
    finally:
        scene.close()
    return out
