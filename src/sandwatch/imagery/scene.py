"""``Scene``: the bands of one acquisition by name, on one 10 m grid, read by window (stacking
another scene's bands on it: :mod:`sandwatch.imagery.stack`).

See the package docstring (:mod:`sandwatch.imagery`) for sources, resampling and offsets.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from sandwatch.bands import BANDS, match_bands, parse_band_list
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.imagery.sources import REMOTE_GDAL_ENV, BandFile, SceneParts, find_parts
from sandwatch.imagery.stac import stac_access

LEVELS = ("L1C", "L2A", "RGB", "S1", "unknown")
#: Resampling used to put coarser reflectance bands (20 m, 60 m) on the 10 m grid.
BAND_RESAMPLING = Resampling.bilinear
#: Resampling used for the SCL class raster (classes must not be blended).
SCL_RESAMPLING = Resampling.nearest
#: Reflectance mapped to 0..255 in quicklooks of Sentinel-2 scenes.
QUICKLOOK_REFLECTANCE_MAX = 0.3
#: Default pixel budget per band for ``describe`` statistics.
DEFAULT_SAMPLE = 1_000_000


def _as_window(window) -> Window | None:
    """A :class:`Window` (rasterio windows are accepted and converted)."""
    if window is None or isinstance(window, Window):
        return window
    if isinstance(window, rasterio.windows.Window):
        return Window.from_rasterio(window)
    raise TypeError(f"expected a sandwatch.grid.Window, not {type(window).__name__}")


class Scene:
    """One Sentinel-2 scene (or a true-colour image): see :func:`open_scene`.

    Holds paths and metadata only; rasterio datasets are opened lazily, one set per process
    and thread, so a ``Scene`` can be pickled to DataLoader or Dask workers cheaply.
    """

    def __init__(self, parts: SceneParts, level: str | None = None, offset: float | None = None):
        self.source: str = parts.source
        self._files: tuple[BandFile, ...] = tuple(parts.bands)
        self._scl: BandFile | None = parts.scl
        self._remote = bool(parts.remote)
        finest = min(self._files, key=lambda f: f.resolution_m)
        self.grid: Grid = finest.grid
        self.bands: tuple[str, ...] = tuple(f.name for f in self._files)
        if level is not None:
            given, level = level, {lv.lower(): lv for lv in LEVELS}.get(str(level).lower())
            if level is None:
                raise SandwatchError.about("--level", f"unknown level {given!r}", "use L1C, L2A, RGB or S1")
        self.level: str = level or parts.level or "unknown"
        self.date = parts.date
        if self.level == "RGB":
            self.scale, self.offset, self.offset_source = 255.0, 0.0, "true-colour image"
        elif self.level == "S1":
            self.scale, self.offset, self.offset_source = 1.0, 0.0, "backscatter (dB)"
        else:
            self.scale = float(parts.scale or 10000.0)
            if offset is not None:
                self.offset, self.offset_source = float(offset), "given"
            elif parts.offset is not None:
                self.offset, self.offset_source = float(parts.offset), parts.offset_source
            else:
                self.offset, self.offset_source = 0.0, "default (no metadata says otherwise)"
        self.band_resolution: dict[str, float] = {f.name: f.resolution_m for f in self._files}
        self.nodata: float | None = self._files[0].nodata
        self.metadata: dict = dict(parts.extra)
        #: per band: (offset, scale, from_linear) taking stored values to the table's units
        self._conv: tuple[tuple[float, float, bool], ...] = tuple(self._conversion(f) for f in self._files)
        self._handles: dict = {}

    def _conversion(self, bf: BandFile) -> tuple[float, float, bool]:
        """How ``bf``'s stored values become the units of the band table: Sentinel-2 bands
        ``(DN - offset) / scale`` (true colour: / 255), Sentinel-1 dB as stored, linear power
        through ``10 log10``."""
        if BANDS[bf.name].units == "dB":
            return 0.0, 1.0, bf.stored == "linear"
        return self.offset, self.scale, False

    # ---- pickling / lifetime ----------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the datasets this process opened (the scene stays usable: they reopen on demand)."""
        pid = os.getpid()
        for key in [k for k in self._handles if k[0] == pid]:
            self._close_handles(key)

    def close_thread(self) -> None:
        """Close the datasets the calling thread opened (a worker thread that is done reading)."""
        self._close_handles((os.getpid(), threading.get_ident()))

    def _close_handles(self, key: tuple[int, int]) -> None:
        # WarpedVRTs were opened after the raw datasets they wrap: close in reverse order
        for ds in reversed(list(self._handles.pop(key, {}).values())):
            with contextlib.suppress(Exception):
                ds.close()

    def __repr__(self) -> str:
        return (f"Scene({self.source!r}, level={self.level}, date={self.date}, bands={','.join(self.bands)}, "
                f"grid={self.grid.width}x{self.grid.height} {self.grid.crs.to_string()} @ {self.grid.res[0]:g})")

    # ---- dataset handles ----------------------------------------------------------------------
    def _env(self):
        return rasterio.Env(**REMOTE_GDAL_ENV) if self._remote else contextlib.nullcontext()

    def _raw(self, bf: BandFile):
        """The open rasterio dataset of a band file (per process and thread)."""
        cache = self._handles.setdefault((os.getpid(), threading.get_ident()), {})
        key = (bf.path, "raw")
        if key not in cache:
            try:
                cache[key] = rasterio.open(bf.path)
            except rasterio.errors.RasterioIOError as err:
                raise SandwatchError.about(bf.path, f"cannot be opened ({str(err).splitlines()[0]})",
                                           "check the file is still there and readable") from None
        return cache[key]

    def _reader(self, bf: BandFile, resampling: Resampling):
        """An open dataset for ``bf`` aligned to the scene grid (a WarpedVRT for coarser bands)."""
        raw = self._raw(bf)
        if bf.grid.same_as(self.grid):
            return raw
        cache = self._handles[(os.getpid(), threading.get_ident())]
        key = (bf.path, resampling)
        if key not in cache:
            opts = dict(crs=self.grid.crs, transform=self.grid.transform, width=self.grid.width,
                        height=self.grid.height, resampling=resampling)
            if bf.nodata is not None:
                opts.update(src_nodata=bf.nodata, nodata=bf.nodata)
            elif not np.issubdtype(np.dtype(bf.dtype), np.integer):
                opts.update(nodata=float("nan"))    # outside a stacked scene's footprint: nodata, not 0
            cache[key] = WarpedVRT(raw, **opts)
        return cache[key]

    # ---- reading ------------------------------------------------------------------------------
    def _band_indices(self, bands, fill_missing: bool) -> tuple[list[str], list[int | None]]:
        if bands is None:
            return list(self.bands), list(range(len(self.bands)))
        wanted = list(parse_band_list(bands, what="bands"))
        return wanted, match_bands(self.bands, wanted, source=self.source, fill_missing=fill_missing)

    def _read_inside(self, files: Sequence[BandFile | None], window: Window, resampling: Resampling,
                     out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``files`` over a window inside the grid: float32 (C, h, w) DN and per-band nodata mask."""
        h, w = out_shape or window.shape
        data = None
        bad = np.zeros((len(files), h, w), bool)
        # One read call per (file, alignment): multi-band GeoTIFFs read all their bands at once.
        groups: dict[str, list[int]] = {}
        for ci, bf in enumerate(files):
            if bf is not None:
                groups.setdefault(bf.path, []).append(ci)
        rio_window = window.to_rasterio()
        with self._env():
            for path, channels in groups.items():
                first = files[channels[0]]
                reader = self._reader(first, resampling)
                indexes = [files[c].index for c in channels]
                arr = reader.read(indexes, window=rio_window, out_shape=(len(indexes), h, w),
                                  out_dtype="float32", resampling=Resampling.nearest)
                integer = np.issubdtype(np.dtype(reader.dtypes[indexes[0] - 1]), np.integer)
                for k, ci in enumerate(channels):
                    nodata = files[ci].nodata
                    # integer sources cannot hold NaN or inf: skip that pass over the pixels;
                    # in float sources +-inf is nodata like NaN (no reflectance is infinite)
                    band_bad = np.zeros((h, w), bool) if integer else ~np.isfinite(arr[k])
                    if nodata is not None:
                        band_bad |= arr[k] == nodata
                    bad[ci] = band_bad
                    arr[k][band_bad] = 0
                if channels == list(range(len(files))):
                    data = arr          # the common case: one file, its bands in order; no copy
                else:
                    if data is None:
                        data = np.zeros((len(files), h, w), np.float32)
                    data[channels] = arr
        if data is None:
            data = np.zeros((len(files), h, w), np.float32)
        return data, bad

    def _to_units(self, data: np.ndarray, idx: Sequence[int | None], bad: np.ndarray) -> None:
        """Stored values -> the band table's units, in place (the same float32 arithmetic for
        every band of one conversion, no temporaries); nodata pixels 0."""
        scene_conv = (self.offset, self.scale, False)     # zero-filled bands: as the scene's own
        convs = [scene_conv if i is None else self._conv[i] for i in idx]
        if all(c == convs[0] for c in convs):
            data -= np.float32(convs[0][0])
            data /= np.float32(convs[0][1])
        else:
            for k, (offset, scale, _) in enumerate(convs):
                data[k] -= np.float32(offset)
                data[k] /= np.float32(scale)
        for k, (_, _, from_linear) in enumerate(convs):
            if from_linear:
                np.log10(np.maximum(data[k], np.float32(1e-10)), out=data[k])
                data[k] *= np.float32(10.0)
        data[bad] = 0

    def read(self, window: Window | None = None, bands=None, *, units: str = "reflectance",
             fill_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Read bands over a window of the scene grid.

        Returns ``(data, valid)``: float32 (C, h, w) and bool (h, w). ``window`` may reach
        outside the grid: there ``data`` is 0 and ``valid`` False. ``valid`` is False wherever
        any requested band is nodata (its ``data`` is 0 there). ``units="reflectance"`` gives
        each band in the units of the band table: Sentinel-2 ``(DN - offset) / scale``, true
        colour ``value / 255``, Sentinel-1 dB; ``"dn"`` the stored values. ``bands`` (names, or
        ``"B02,B03"``) selects and orders bands; with ``fill_missing`` absent bands are zeros.
        """
        if units not in ("reflectance", "dn"):
            raise ValueError(f"units must be 'reflectance' or 'dn', not {units!r}")
        window = _as_window(window) or self.grid.full_window()
        names, idx = self._band_indices(bands, fill_missing)
        inside = window.clip(self.grid.height, self.grid.width)
        if inside is None:
            return np.zeros((len(names), window.height, window.width), np.float32), np.zeros(window.shape, bool)
        files = [None if i is None else self._files[i] for i in idx]
        part, bad = self._read_inside(files, inside, BAND_RESAMPLING)
        if units == "reflectance":
            self._to_units(part, idx, bad)
        if inside == window:
            return part, ~bad.any(axis=0)
        data = np.zeros((len(names), window.height, window.width), np.float32)
        valid = np.zeros(window.shape, bool)
        rs, cs = inside.relative_to(window).slices()
        data[:, rs, cs] = part
        valid[rs, cs] = ~bad.any(axis=0)
        return data, valid

    def read_scl(self, window: Window | None = None) -> np.ndarray | None:
        """The L2A scene classification on the 10 m grid (nearest neighbour), uint8 (h, w);
        0 (= SCL "no data") outside the grid. None when the scene has no SCL."""
        if self._scl is None:
            return None
        window = _as_window(window) or self.grid.full_window()
        out = np.zeros(window.shape, np.uint8)
        inside = window.clip(self.grid.height, self.grid.width)
        if inside is not None:
            part, _ = self._read_inside([self._scl], inside, SCL_RESAMPLING)
            rs, cs = inside.relative_to(window).slices()
            out[rs, cs] = part[0].astype(np.uint8)
        return out

    @property
    def has_scl(self) -> bool:
        return self._scl is not None

    def read_decimated(self, max_size: int, window: Window | None = None, bands=None, *,
                       units: str = "reflectance") -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read` over the part of ``window`` inside the grid, reduced so that the
        longer side is at most ``max_size`` (nearest-neighbour decimation; GDAL uses overviews
        when the files have them)."""
        window = (_as_window(window) or self.grid.full_window()).clip(self.grid.height, self.grid.width)
        if window is None:
            raise ValueError("window lies outside the scene grid")
        f = max(1.0, max(window.shape) / max_size)
        shape = (max(1, math.ceil(window.height / f)), max(1, math.ceil(window.width / f)))
        names, idx = self._band_indices(bands, False)
        files = [self._files[i] for i in idx]  # type: ignore[index]
        data, bad = self._read_inside(files, window, BAND_RESAMPLING, out_shape=shape)
        if units == "reflectance":
            self._to_units(data, idx, bad)
        return data, ~bad.any(axis=0)

    def quicklook(self, window: Window | None = None, max_size: int = 1024) -> np.ndarray:
        """True colour uint8 (h, w, 3) of the window (clipped to the grid), at most ``max_size``
        on the longer side. Sentinel-2 reflectance 0..0.3 maps to 0..255; nodata is black."""
        rgb = ("R", "G", "B") if self.level == "RGB" else ("B04", "B03", "B02")
        data, valid = self.read_decimated(max_size, window, rgb)
        top = 1.0 if self.level == "RGB" else QUICKLOOK_REFLECTANCE_MAX
        img = np.clip(data / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img[:, ~valid] = 0
        return np.ascontiguousarray(img.transpose(1, 2, 0))

    # ---- description --------------------------------------------------------------------------
    def _has_overviews(self) -> bool:
        with self._env():
            return all(bool(self._raw(f).overviews(f.index)) for f in self._files)

    def sample_pixels(self, sample: int = DEFAULT_SAMPLE, *, units: str = "dn") -> tuple[np.ndarray, np.ndarray]:
        """A bounded sample of pixels of all bands: (C, n) values and (n,) validity.

        The whole grid when it has at most ``sample`` pixels; else a decimated read when the
        band files have overviews; else a lattice of 256 x 256 windows spread over the grid
        (about ``sample`` pixels in all), so a full 10980 x 10980 tile is never read whole.
        """
        g = self.grid
        if g.width * g.height <= sample:
            data, valid = self.read(units=units)
        elif self._has_overviews():
            side = int(math.sqrt(sample * max(g.shape) / min(g.shape)))
            data, valid = self.read_decimated(side, units=units)
        else:
            size = 256
            n = max(1, int(math.sqrt(sample / size**2)))
            rows = np.linspace(0, max(0, g.height - size), n).astype(int)
            cols = np.linspace(0, max(0, g.width - size), n).astype(int)
            parts = [self.read(Window(int(r), int(c), min(size, g.height), min(size, g.width)), units=units)
                     for r in rows for c in cols]
            data = np.concatenate([p[0].reshape(len(self.bands), -1) for p in parts], axis=1)
            valid = np.concatenate([p[1].reshape(-1) for p in parts])
            return data, valid
        return data.reshape(len(self.bands), -1), valid.reshape(-1)

    def describe(self, stats: bool = True, sample: int = DEFAULT_SAMPLE) -> dict:
        """A JSON-ready summary: bands, grid, level, date, offset; with ``stats`` the nodata
        fraction and per-band min/max/mean/std/median of the digital numbers over a bounded
        sample of pixels (see :meth:`sample_pixels`)."""
        g = self.grid
        out = {
            "source": self.source,
            "level": self.level,
            "date": self.date.isoformat() if self.date else None,
            "offset": self.offset,
            "offset_source": self.offset_source,
            "scale": self.scale,
            "nodata": self.nodata,
            "grid": {**g.to_dict(), "pixel_size": list(g.res), "bounds": list(g.bounds)},
            "bands": [{"name": f.name, "resolution_m": f.resolution_m, "file": f.path, "index": f.index}
                      for f in self._files],
            "scl": self._scl.path if self._scl else None,
        }
        if self.metadata.get("processing_baseline"):
            out["processing_baseline"] = self.metadata["processing_baseline"]
        if self.metadata.get("stac_item"):
            out["stac_item"] = self.metadata["stac_item"]
        if stats:
            data, valid = self.sample_pixels(sample, units="dn")
            out["sampled_pixels"] = int(valid.size)
            out["nodata_fraction"] = float(1.0 - valid.mean()) if valid.size else 1.0
            band_stats = {}
            for name, values in zip(self.bands, data):
                v = values[valid].astype(np.float64)
                band_stats[name] = ({"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                                     "std": float(v.std()), "median": float(np.median(v))}
                                    if v.size else {"min": None, "max": None, "mean": None, "std": None, "median": None})
            out["stats"] = band_stats
            out["stats_units"] = "dn"
        return out


def open_scene(source, bands=None, level: str | None = None, offset: float | None = None, *,
               allow_outside: bool | None = None, allow_remote=None) -> Scene:
    """Open a Sentinel-2 scene from a GeoTIFF/COG, a folder of per-band files or a STAC item.

    ``bands`` names the bands of a file without band descriptions (``"B02,B03,B04,B08"`` or a
    list); for folders and STAC items it selects a subset. ``level`` forces ``"L1C"``/``"L2A"``
    /``"RGB"``; ``offset`` forces the DN offset (1000 for raw processing-baseline-04 DNs).
    ``allow_outside`` / ``allow_remote`` (hosts, ``"*"`` any): what a STAC item's asset hrefs
    may reach beyond its own folder and host (see
    :class:`~sandwatch.imagery.stac.StacAccess`; None: the process default, strict unless
    :func:`~sandwatch.imagery.stac.set_stac_access` said otherwise).
    An already open :class:`Scene` is returned as it is.
    """
    if isinstance(source, Scene):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(f"open_scene needs a path, URL or Scene, not {type(source).__name__}")
    if source and not source.startswith(("http://", "https://")):
        source = str(Path(source).expanduser())
    access = stac_access(allow_outside, allow_remote)
    return Scene(find_parts(source, bands, access), level=level, offset=offset)


def as_scene(scene) -> Scene:
    """A Scene as is; a path, URL or STAC item opened with :func:`open_scene`."""
    if hasattr(scene, "read") and hasattr(scene, "grid"):
        return scene
    return open_scene(str(scene))
