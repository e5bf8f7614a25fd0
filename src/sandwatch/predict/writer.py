"""Streaming raster output: finished blocks go to a tiled GeoTIFF at once, which becomes a
Cloud-Optimised GeoTIFF with overviews at the end, atomically.

Memory: GDAL keeps at most one row of 256 x 256 tiles of a partially written block row in its
cache (a few MB for a 10980 px wide tile); the COG conversion (rio-cogeo, ``in_memory=False``)
works through GDAL's block cache as well. Nothing here holds a whole raster.

Encodings of the probability raster:

* ``uint8`` (default): ``value = 1 + round(254 * p)``, so 1..255 carry probabilities 0..1 and
  0 is nodata, the same nodata value as Sentinel-2 digital numbers. The band's GDAL
  scale/offset (``1/254``, ``-1/254``) turn values back into probabilities in QGIS/GDAL.
* ``float32``: the probability itself, NaN is nodata.

The binary mask is uint8: 1 mine, 0 not mine, 255 nodata.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import numpy as np
import rasterio

from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.io import (atomic_output, free_bytes, gdal_failures, make_dirs, remove_quietly, temporary_sibling,
                          verify_raster, write_error, write_failures)

PROB_DTYPES = ("uint8", "float32")
MASK_NODATA = 255
#: ``sandwatch_status`` tag of a map without a single predicted pixel.
NO_DATA_STATUS = "no data: no valid pixel was predicted (the scene is all nodata/NaN, or outside the AOI)"
UINT8_SCALE = 1.0 / 254.0


def encode_probability(prob: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities (NaN = nodata) to the stored values of ``dtype`` (see module doc)."""
    if dtype == "float32":
        return prob.astype(np.float32, copy=False)
    if dtype != "uint8":
        raise ValueError(f"dtype must be one of {PROB_DTYPES}")
    nan = np.isnan(prob)
    out = 1 + np.rint(np.clip(np.where(nan, 0, prob), 0, 1) * 254)
    return np.where(nan, 0, out).astype(np.uint8)


def decode_probability(values: np.ndarray, dtype: str | None = None) -> np.ndarray:
    """Stored values back to probabilities (float32, NaN = nodata)."""
    dtype = dtype or values.dtype.name
    if dtype == "float32":
        return values.astype(np.float32, copy=False)
    v = values.astype(np.float32)
    return np.where(values == 0, np.nan, (v - 1) * UINT8_SCALE).astype(np.float32)


def probability_nodata(dtype: str) -> float:
    return 0 if dtype == "uint8" else float("nan")


def encode_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Binary mask: 1 where ``prob >= threshold``, 0 below, 255 where ``prob`` is NaN."""
    nan = np.isnan(prob)
    out = (np.where(nan, 0, prob) >= threshold).astype(np.uint8)
    out[nan] = MASK_NODATA
    return out


class StreamingCOGWriter:
    """Write blocks of a single-band raster as they come, then publish a COG (or, with
    ``cog=False``, the tiled GeoTIFF itself).

    ::

        with StreamingCOGWriter("out.tif", grid, "uint8", nodata=0) as w:
            for window, block in blocks:
                w.write(window, block)
        # out.tif exists only now, as a validated-layout COG with overviews

    On an exception inside the ``with`` block neither the final file nor the temporary
    stream file is left behind; with ``resumable`` the stream file is kept on
    ``KeyboardInterrupt`` (a run stopped with Ctrl-C resumes like a killed one).

    Resuming (:mod:`sandwatch.predict.resume`): :meth:`checkpoint` puts every block written so
    far on disk (close, fsync, reopen); ``stream=`` reopens such a file of an earlier run and
    goes on writing into it, ``valid_pixels`` restoring its count. A stream file that is not
    a raster of this grid and type raises ``ValueError`` (start afresh).
    """

    def __init__(self, path: str | os.PathLike, grid: Grid, dtype: str, nodata: float | None, *,
                 resampling: str = "average", blocksize: int = 256, tags: dict | None = None,
                 scale: float | None = None, offset: float | None = None, description: str | None = None,
                 cog: bool = True, stream: str | os.PathLike | None = None, valid_pixels: int = 0,
                 resumable: bool = False):
        self.path = Path(path)
        self.grid = grid
        self.dtype = dtype
        self.nodata = nodata
        self.resampling = resampling
        self.blocksize = blocksize
        self.tags = dict(tags or {})
        self.scale, self.offset = scale, offset
        self.description = description
        self.cog = cog
        self._resume_from = Path(stream) if stream is not None else None
        self.resumable = bool(resumable or stream is not None)
        self._stream_path: Path | None = None
        self._ds = None
        self.valid_pixels = int(valid_pixels) if stream is not None else 0
        #: pixels written with data (not nodata), counted as blocks come

    @property
    def stream_path(self) -> Path | None:
        """The tiled GeoTIFF being written (a temporary sibling of the output)."""
        return self._stream_path

    # ---- context ---------------------------------------------------------------------------
    def __enter__(self) -> "StreamingCOGWriter":
        make_dirs(self.path.parent, self.path)
        if self._resume_from is not None:
            self._reopen_stream()
            return self
        self._stream_path = temporary_sibling(self.path.with_name(self.path.stem + ".stream.tif"))
        profile = dict(
            driver="GTiff", width=self.grid.width, height=self.grid.height, count=1, dtype=self.dtype,
            crs=self.grid.crs, transform=self.grid.transform, nodata=self.nodata,
            tiled=True, blockxsize=self.blocksize, blockysize=self.blocksize,
            compress="deflate", zlevel=1, predictor=2 if self.dtype == "uint8" else 3, BIGTIFF="IF_SAFER",
        )
        try:
            self._ds = rasterio.open(self._stream_path, "w", **profile)
            if self.tags:
                self._ds.update_tags(**{k: str(v) for k, v in self.tags.items()})
            if self.scale is not None:
                self._ds.scales = (self.scale,)
                self._ds.offsets = (self.offset or 0.0,)
            if self.description:
                self._ds.set_band_description(1, self.description)
        except Exception as err:
            raise self._failed(err) from None
        return self

    def _reopen_stream(self) -> None:
        """Go on writing into the stream file of an earlier run (checked against this grid)."""
        path = self._resume_from
        try:
            ds = rasterio.open(path, "r+")
        except Exception as err:  # noqa: BLE001 - not a raster we can update: start afresh
            raise ValueError(f"{path}: cannot be reopened ({err})") from None
        same = (ds.width, ds.height, ds.count, ds.dtypes[0]) == (self.grid.width, self.grid.height, 1, self.dtype) \
            and ds.crs == self.grid.crs and ds.transform.almost_equals(self.grid.transform)
        if not same:
            ds.close()
            raise ValueError(f"{path}: not a {self.dtype} raster of this grid")
        self._stream_path = path
        self._ds = ds

    def checkpoint(self) -> None:
        """Put every block written so far on disk: close the stream file (GDAL writes its
        tiles and directory), fsync it and reopen it for update. Afterwards the file reads
        back with all those blocks even if the process is killed."""
        gdal: list[str] = []
        try:
            with gdal_failures() as gdal:
                self._ds.close()
            self._ds = None
            failed = write_failures(gdal)
            if failed:
                raise OSError(errno.EIO, f"GDAL: {failed[0]}", str(self._stream_path))
            fd = os.open(self._stream_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ds = rasterio.open(self._stream_path, "r+")
        except SandwatchError:
            raise
        except Exception as err:
            raise self._failed(err, write_failures(gdal)) from None

    def write(self, window: Window, block: np.ndarray) -> None:
        """Write ``block`` (``window.shape``, already encoded) at ``window`` of the grid."""
        block = np.asarray(block, dtype=self.dtype)
        if self.nodata is None:
            self.valid_pixels += block.size
        elif isinstance(self.nodata, float) and np.isnan(self.nodata):
            self.valid_pixels += int(np.count_nonzero(~np.isnan(block)))
        else:
            self.valid_pixels += int(np.count_nonzero(block != self.nodata))
        try:
            self._ds.write(block[None], window=window.to_rasterio())
        except Exception as err:
            raise self._failed(err) from None

    def data_tags(self) -> dict[str, str]:
        """Tags saying how much of the raster holds data: ``sandwatch_valid_fraction`` and
        ``sandwatch_status`` (``no data`` when not one pixel was predicted, e.g. a scene that is
        all nodata or NaN: such a map must not read like a clean scene without mining)."""
        total = self.grid.width * self.grid.height
        frac = self.valid_pixels / total if total else 0.0
        status = NO_DATA_STATUS if self.valid_pixels == 0 else "ok"
        return {"sandwatch_valid_pixels": str(self.valid_pixels), "sandwatch_valid_fraction": f"{frac:.6f}",
                "sandwatch_status": status}

    def _failed(self, err: BaseException, messages: tuple[str, ...] = ()) -> BaseException:
        """The one-line error for a failed write of the stream file (named by the final
        path), after removing what was written; ``err`` itself when it is not about writing."""
        free = free_bytes(self.path.parent)
        self._close_quietly()
        self._cleanup()
        mapped = write_error(self.path, err, messages=messages, free=free,
                             generic=bool(messages) or isinstance(err, OSError) or type(err).__module__.startswith("rasterio"))
        return mapped if mapped is not None else err

    def _close_quietly(self) -> None:
        if self._ds is not None:
            with contextlib.suppress(Exception):
                self._ds.close()
            self._ds = None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.resumable and issubclass(exc_type, KeyboardInterrupt):
            self._close_quietly()          # kept: the next run resumes from its last checkpoint
            return False
        try:
            if exc_type is not None:
                self._close_quietly()
                return False
            gdal: list[str] = []
            try:
                # GDAL flushes the last tiles at close and may not say when that fails: collect
                # what it signals, then read the stream file back before publishing it.
                with gdal_failures() as gdal:
                    self._ds.update_tags(**self.data_tags())
                    self._ds.close()
                self._ds = None
                failed = write_failures(gdal)
                if failed:
                    raise OSError(errno.EIO, f"GDAL: {failed[0]}", str(self._stream_path))
                try:
                    verify_raster(self._stream_path)
                except Exception as err:  # noqa: BLE001 - unreadable = not (fully) written
                    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                    raise OSError(errno.EIO, f"the written file does not read back ({first[:160]})",
                                  str(self._stream_path)) from None
            except SandwatchError:
                raise
            except Exception as err:
                raise self._failed(err, write_failures(gdal)) from None
            if self.cog:
                write_cog(self._stream_path, self.path, resampling=self.resampling)
            else:   # a plain tiled GeoTIFF (row-band parts): the stream file is the result
                try:
                    os.replace(self._stream_path, self.path)
                except OSError as err:
                    raise self._failed(err) from None
        finally:
            self._cleanup()
        return False

    def _cleanup(self):
        if self._stream_path is not None:
            remove_quietly(self._stream_path)


@contextlib.contextmanager
def writing_together(*writers: StreamingCOGWriter):
    """Enter several :class:`StreamingCOGWriter` and, when the block ends without an error,
    finish them in parallel threads (the COG conversions release the GIL). On an error every
    writer is cleaned up and nothing is published.

    ::

        with writing_together(StreamingCOGWriter(a, ...), StreamingCOGWriter(b, ...)) as (wa, wb):
            ...
    """
    entered: list[StreamingCOGWriter] = []
    try:
        for w in writers:
            entered.append(w.__enter__())
        yield tuple(entered)
    except BaseException as err:
        for w in entered:
            w.__exit__(type(err), err, err.__traceback__)
        raise
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(entered), thread_name_prefix="sandwatch-cog") as pool:
        futures = [pool.submit(w.__exit__, None, None, None) for w in entered]
    for f in futures:
        f.result()


def write_cog(src: str | os.PathLike, dst: str | os.PathLike, *, resampling: str = "average") -> Path:
    """Translate a GeoTIFF to a deflate-compressed COG with internal overviews, atomically."""
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    dst = Path(dst)
    profile = cog_profiles.get("deflate")
    profile.update(blockxsize=256, blockysize=256)
    with rasterio.open(src) as ds:
        levels, size = 0, max(ds.width, ds.height)
        while size > 256:          # halve until the smallest overview fits in one tile
            size, levels = (size + 1) // 2, levels + 1
        if ds.dtypes[0] == "float32":
            profile.update(predictor=3)
        else:
            profile.update(predictor=2)
    with atomic_output(dst) as tmp:
        cog_translate(str(src), str(tmp), profile, overview_resampling=resampling, in_memory=False, quiet=True,
                      forward_band_tags=True, overview_level=levels,
                      config={"GDAL_NUM_THREADS": "1", "GDAL_TIFF_OVR_BLOCKSIZE": "256"})
    return dst


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """``(is_valid, errors, warnings)`` from rio-cogeo's validator."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


