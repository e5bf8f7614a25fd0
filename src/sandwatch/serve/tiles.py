"""Map tiles (web mercator, XYZ, 256 px PNG) rendered on demand from the project's rasters
with rio-tiler, cached in memory.

Layers by file kind (:attr:`Project.files`):

* ``scene``: true colour through the scene's own stretch (:mod:`sandwatch.serve.quicklook`);
* ``probability``: the ``predict`` COG (uint8 ``1 + round(254 p)``, nodata 0; or float32 p,
  NaN nodata) through :data:`PROB_LUT` (inferno; alpha rising to opaque at p = 0.5, the
  page's opacity slider scales it); nodata transparent;
* ``mask``: mine (1) red, not mine (0) and nodata (255) transparent.

Sampling is nearest neighbour (a tile shows the pixels the model wrote; tests compare a tile
with a rasterio read of the same bounds), from overviews where the file has them.
A tile outside a raster is a transparent PNG.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import rasterio.errors
from PIL import Image
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from sandwatch.errors import SandwatchError

TILE_PX = 256
MAX_ZOOM = 20


def _lut() -> np.ndarray:
    from matplotlib import colormaps

    p = (np.arange(256) - 1) / 254.0
    rgba = (colormaps["inferno"](np.clip(p, 0, 1))[:, :3] * 255 + 0.5).astype(np.uint8)
    alpha = (np.clip(p * 2.0, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    lut = np.concatenate([rgba, alpha[:, None]], axis=1)
    lut[0] = 0                                   # nodata: transparent
    return lut


#: uint8 probability value (1 + round(254 p); 0 nodata) -> RGBA
PROB_LUT = _lut()
MASK_RGBA = np.array([214, 39, 40, 255], np.uint8)
MASK_LUT = np.zeros((256, 4), np.uint8)
MASK_LUT[1] = MASK_RGBA


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _palette_png(index: np.ndarray, lut: np.ndarray) -> bytes:
    """A one-byte-per-pixel PNG: ``index`` (h, w) uint8 into ``lut`` (256, 4) RGBA (the alpha as
    the PNG's tRNS chunk). Four times less to compress than RGBA: the encoding is most of a
    tile's cost."""
    img = Image.fromarray(np.ascontiguousarray(index, dtype=np.uint8), mode="P")
    img.putpalette(lut[:, :3].tobytes(), rawmode="RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1, transparency=lut[:, 3].tobytes())
    return buf.getvalue()


EMPTY_PNG = _png(np.zeros((TILE_PX, TILE_PX, 4), np.uint8))


_readers = threading.local()
READERS_PER_THREAD = 32


def _reader(path: str | Path) -> Reader:
    """An open rio-tiler Reader of ``path`` for this thread (a dataset handle is not shared
    between threads), reopened when the file changes."""
    st = os.stat(path)
    cache = getattr(_readers, "cache", None)
    if cache is None:
        cache = _readers.cache = {}
    key = (str(path), st.st_mtime_ns, st.st_size)
    reader = cache.get(key)
    if reader is None:
        if len(cache) >= READERS_PER_THREAD:
            for old in cache.values():
                old.close()
            cache.clear()
        reader = cache[key] = Reader(str(path))
    return reader


def read_tile(path: str | Path, z: int, x: int, y: int, indexes=(1,)) -> tuple[np.ndarray, np.ndarray] | None:
    """(data (C, 256, 256) as stored, valid (256, 256) bool) of tile z/x/y in web mercator,
    nearest neighbour; None when the tile misses the raster."""
    src = _reader(path)
    try:
        img = src.tile(x, y, z, tilesize=TILE_PX, indexes=list(indexes), resampling_method="nearest",
                       reproject_method="nearest")
    except TileOutsideBounds:
        return None
    return np.asarray(img.data), np.asarray(img.mask) > 0


def probability_index(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) uint8 index into :data:`PROB_LUT`: predict's uint8 values as they are, float p
    quantised the same way (``1 + round(254 p)``); nodata 0."""
    band = data[0]
    if band.dtype != np.uint8:
        p = np.nan_to_num(band.astype(np.float32), nan=0.0)
        band = np.where(np.isfinite(band), 1 + np.rint(np.clip(p, 0, 1) * 254), 0).astype(np.uint8)
    return np.where(valid, band, 0).astype(np.uint8)


def mask_index(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) uint8 index into :data:`MASK_LUT`: 1 mine, 0 anything else."""
    return ((data[0] == 1) & valid).astype(np.uint8)


class TileRenderer:
    """Renders and caches tiles of a :class:`~sandwatch.serve.project.Project`'s files."""

    def __init__(self, project, cache_tiles: int = 4096):
        self.project = project
        self.cache_tiles = cache_tiles
        self._cache: OrderedDict = OrderedDict()
        self._stretch: dict = {}
        self._lock = threading.Lock()
        #: renders at once: one per core (more threads only fight over the GIL: 20 at once cost
        #: 30 % more CPU per tile than 2, and every one of them finished late)
        self._slots = threading.BoundedSemaphore(os.cpu_count() or 2)
        self.hits = self.misses = 0

    def tile(self, key: str, z: int, x: int, y: int) -> bytes:
        """PNG bytes of tile z/x/y of the file ``key``; FileNotFoundError for an unknown key,
        SandwatchError (one line) for a file that cannot be read."""
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 2 ** z and 0 <= y < 2 ** z):
            raise FileNotFoundError(f"{z}/{x}/{y}")
        path = self.project.file(key)
        kind = self.project.kind(key)
        if kind not in ("scene", "probability", "mask"):
            raise FileNotFoundError(key)
        try:
            st = path.stat()
        except OSError:
            raise FileNotFoundError(key) from None
        ckey = (key, st.st_mtime_ns, st.st_size, z, x, y)
        with self._lock:
            png = self._cache.get(ckey)
            if png is not None:
                self._cache.move_to_end(ckey)
                self.hits += 1
                return png
            self.misses += 1
        with self._slots:
            png = self._render(path, kind, z, x, y)
        with self._lock:
            self._cache[ckey] = png
            while len(self._cache) > self.cache_tiles:
                self._cache.popitem(last=False)
        return png

    def _render(self, path: Path, kind: str, z: int, x: int, y: int) -> bytes:
        try:
            if kind == "scene":
                return self._scene(path, z, x, y)
            got = read_tile(path, z, x, y)
        except (rasterio.errors.RasterioError, OSError) as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise SandwatchError.about(path.name, f"cannot be read as a raster ({first})",
                                       "re-run the command that wrote it") from None
        if got is None:
            return EMPTY_PNG
        if kind == "probability":
            return _palette_png(probability_index(*got), PROB_LUT)
        return _palette_png(mask_index(*got), MASK_LUT)

    def stretch_of(self, path: Path):
        """(band sources, Stretch) of a scene, measured once per version of the file (a rewritten
        scene is measured again, as its tiles are rendered again)."""
        st = Path(path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._stretch.get(key)
        if hit is None:
            from sandwatch.imagery import open_scene
            from sandwatch.serve.quicklook import rgb_sources, scene_stretch

            scene = open_scene(path)
            try:
                hit = (rgb_sources(scene), scene_stretch(scene))
            finally:
                scene.close()
            with self._lock:
                self._stretch[key] = hit
        return hit

    def _scene(self, path: Path, z: int, x: int, y: int) -> bytes:
        sources, stretch = self.stretch_of(path)
        if len({s[0] for s in sources}) == 1:       # one file: one read of three bands
            got = read_tile(sources[0][0], z, x, y, indexes=[s[1] for s in sources])
            if got is None:
                return EMPTY_PNG
            data, valid = got
        else:                                     # a band folder: one read per file
            parts = [read_tile(f, z, x, y, indexes=(i,)) for f, i in sources]
            if any(p is None for p in parts):
                return EMPTY_PNG
            data = np.concatenate([p[0] for p in parts])
            valid = np.logical_and.reduce([p[1] for p in parts])
        rgba = np.zeros((TILE_PX, TILE_PX, 4), np.uint8)
        rgba[..., :3] = stretch.apply(data).transpose(1, 2, 0)
        rgba[..., 3] = np.where(valid, 255, 0)
        return _png(rgba)
