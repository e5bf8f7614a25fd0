"""Fetching the area's window of each chosen date into one COG (``sandwatch acquire fetch``).

Each item is opened as a :class:`sandwatch.imagery.Scene` (its JSON saved under
``OUT/.items/``), so bands are found, the DN offset decided and the 20/60 m bands put on the
10 m grid exactly as the imagery stage does (``Scene.read(window, units="dn")``: a WarpedVRT,
bilinear for reflectance, nearest for SCL), and only the blocks over the area travel (GDAL range
requests on the COGs). The area's rectangle is snapped outwards to the tile's pixel lattice.
Items of one date are mosaicked in the candidate's order (first valid pixel wins); a tile in
another UTM zone or on another lattice is warped onto the area's grid with the same resampling.
When the items of a file have different DN offsets (processing baselines before and after
04.00) every item is shifted to offset 0 (``max(DN - offset, 1)`` where valid), so one offset
holds for the whole file; otherwise the DNs are kept as they are, bit for bit.

Output per area and date: ``OUT/AREA/AREA_DATE.tif``, a deflate COG, uint16, nodata 0, bands
described by name (SCL last, when the items have it), tags ``DATE``, ``PROCESSING_LEVEL``,
``PROCESSING_BASELINE``, ``BOA_ADD_OFFSET`` (or ``RADIO_ADD_OFFSET`` on L1C), ``SANDWATCH_*``
(area, items, tiles, clear fraction), read back right by ``open_scene``. Written atomically;
an existing file is kept (a rerun resumes); each job is retried with exponential back-off.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

import numpy as np

from sandwatch.acquire.search import Candidate, gdal_env
from sandwatch.acquire.sites import Area
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid

#: Errors worth another try (network, server); anything else fails at once.
_TRANSIENT_WORDS = ("http", "curl", "timeout", "timed out", "connection", "network", "cannot be opened",
                    "read or write failed", "ireadblock", "transfer", "reset", "500", "502", "503", "504")


@dataclass(frozen=True)
class FetchConfig:
    bands: tuple[str, ...] | None = None     # None: every band the items have
    workers: int = 4
    retries: int = 3                          # tries after the first
    backoff_s: float = 2.0                    # first pause; doubles each try
    timeout_s: float = 30.0                   # an HTTP request with no progress for this long fails
    sign: Callable[[str], str] | None = field(default=None, compare=False)


@dataclass
class Fetched:
    area: str
    date: dt.date
    path: Path
    status: str                  # "fetched" | "kept" (already there) | "failed"
    clear_fraction: float | None = None
    error: str | None = None
    label: str | None = None     # observation id suffix (composites: YYYY-MM_median)


class FetchFailed(SandwatchError):
    """A job failed after its retries (the message names the URL)."""


def output_path(out_dir: str | os.PathLike, area_id: str, label: str) -> Path:
    return Path(out_dir) / area_id / f"{area_id}_{label}.tif"


# ---- items -------------------------------------------------------------------------------------------
_item_lock = threading.Lock()


_signed: dict[tuple[str, Callable], Path] = {}   # items signed by this process, per signing hook


def absolute_href(href: str, item_url: str) -> str:
    """An asset href that no longer depends on where the item's JSON lies: one relative to the
    item (``./B04.tif``, ``../tiles/B04.tif``) is joined to the item's URL (remote) or folder
    (local); URLs and absolute paths are kept."""
    if urlparse(href).scheme or href.startswith("/"):
        return href
    if urlparse(item_url).scheme in ("http", "https"):
        return urljoin(item_url, href)
    return str((Path(item_url.removeprefix("file://")).parent / href).resolve())


def cached_item(url: str, cache: Path, sign: Callable[[str], str] | None, timeout_s: float) -> Path:
    """The item's JSON saved in ``cache`` (downloaded once, hrefs unsigned, relative ones made
    absolute); with ``sign``, a copy under ``cache/signed`` signed afresh by each process, so a
    rerun never reuses signatures that have expired since. A local item without ``sign`` is
    used where it lies. (A local item *with* ``sign`` gets a signed copy whose local relative
    hrefs become absolute paths, which the imagery stage refuses as outside the item's folder:
    signing is for remote catalogues.)"""
    if urlparse(url).scheme not in ("http", "https") and sign is None:
        # a local item is read where it lies: its relative hrefs resolve inside its own folder,
        # as the imagery stage's containment wants (a copy in the cache would point nowhere)
        return Path(url.removeprefix("file://"))
    name = Path(urlparse(url).path).name or "item"
    name = name if name.endswith(".json") else f"{name}.json"
    path = cache / name
    from sandwatch.io import atomic_output

    with _item_lock:
        have = path.exists()
    if not have:
        try:
            if urlparse(url).scheme in ("http", "https"):
                with urllib.request.urlopen(url, timeout=timeout_s) as r:
                    data = json.loads(r.read())
            else:
                data = json.loads(Path(url.removeprefix("file://")).read_text())
        except (OSError, ValueError) as err:
            raise SandwatchError.about(url, f"STAC item could not be read ({str(err).splitlines()[0][:160]})",
                                       "check the catalogue is reachable, then run again") from None
        for asset in (data.get("assets") or {}).values():
            asset["href"] = absolute_href(str(asset.get("href", "")), url)   # reachable from the cache too
        with _item_lock:
            if not path.exists():
                with atomic_output(path, verify=False) as tmp:
                    tmp.write_text(json.dumps(data))
    if sign is None:
        return path
    with _item_lock:
        if (url, sign) in _signed and _signed[(url, sign)].exists():
            return _signed[(url, sign)]
        data = json.loads(path.read_text())
        for asset in (data.get("assets") or {}).values():
            href = str(asset.get("href", ""))
            if urlparse(href).scheme in ("http", "https"):
                asset["href"] = sign(href)
        signed = cache / "signed" / name
        with atomic_output(signed, verify=False) as tmp:
            tmp.write_text(json.dumps(data))
        _signed[(url, sign)] = signed
    return signed


def open_item_scene(path: Path, bands):
    """The item as a Scene; its http(s) assets may be read from their own hosts (the user chose
    the catalogue), local paths only inside the item's folder."""
    from sandwatch.imagery import open_scene

    data = json.loads(path.read_text())
    hosts = sorted({urlparse(a.get("href", "")).netloc for a in (data.get("assets") or {}).values()} - {""})
    return open_scene(str(path), bands=list(bands) if bands else None, allow_remote=hosts)


# ---- grids -------------------------------------------------------------------------------------------
def area_grid(area: Area, like: Grid) -> Grid:
    """The area's rectangle on ``like``'s pixel lattice (snapped outwards) when both share a
    CRS, else at ``like``'s resolution from the area's own corner."""
    x0, y0, x1, y1 = area.bounds
    if like.crs.to_epsg() != area.epsg:
        return Grid.from_bounds(area.crs, x0, y0, x1, y1, like.res[0])
    return like.window_grid(like.window_from_bounds(x0, y0, x1, y1))


def _aligned(scene_grid: Grid, grid: Grid) -> bool:
    if scene_grid.crs != grid.crs or abs(scene_grid.res[0] - grid.res[0]) > 1e-9:
        return False
    dx = (grid.transform.c - scene_grid.transform.c) / grid.res[0]
    dy = (scene_grid.transform.f - grid.transform.f) / grid.res[0]
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


# ---- reading one item over the area ----------------------------------------------------------------------
def _warp(path: str, index: int, grid: Grid, resampling, nodata) -> np.ndarray:
    import rasterio
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                                height=grid.height, resampling=resampling,
                                                src_nodata=nodata if nodata is not None else 0, nodata=0) as vrt:
        return vrt.read(index, out_dtype="float32")


def read_item(scene, grid: Grid, bands: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(DN float32 (C, h, w), valid (h, w), SCL uint8 or None) of one scene over ``grid``, band
    by band so that a failure names its file."""
    from sandwatch.imagery import BAND_RESAMPLING, SCL_RESAMPLING

    described = scene.describe(stats=False)
    files = {b["name"]: b for b in described["bands"]}
    data = np.zeros((len(bands), grid.height, grid.width), np.float32)
    valid = np.ones(grid.shape, bool)
    aligned = _aligned(scene.grid, grid)
    window = scene.grid.window_from_bounds(*grid.bounds) if aligned else None
    for i, band in enumerate(bands):
        if band not in files:
            valid[:] = False
            continue
        with _naming(files[band]["file"]):
            if aligned:
                d, v = scene.read(window, [band], units="dn")
                data[i], valid = d[0], valid & v
            else:
                d = _warp(files[band]["file"], files[band]["index"], grid, BAND_RESAMPLING, scene.nodata)
                data[i], valid = d, valid & (d != 0)
    scl = None
    if scene.has_scl:
        scl_file = described["scl"]
        with _naming(scl_file):
            scl = scene.read_scl(window) if aligned else \
                _warp(scl_file, 1, grid, SCL_RESAMPLING, 0).astype(np.uint8)
    return data, valid, scl


class _ReadFailed(Exception):
    def __init__(self, url: str, err: BaseException):
        super().__init__(f"{url}: {(str(err).strip().splitlines() or [type(err).__name__])[0][:200]}")
        self.url, self.cause = url, err


@contextlib.contextmanager
def _naming(url: str):
    try:
        yield
    except (SandwatchError, _ReadFailed):
        raise
    except Exception as err:  # noqa: BLE001 - rasterio/GDAL errors of a remote read: name the file
        raise _ReadFailed(url, err) from err


def mosaic(scenes, grid: Grid, bands: list[str], offset: float | None = None):
    """First valid pixel of ``scenes`` in order over ``grid``: (DN uint16 (C, h, w), SCL or None,
    offset of the DNs). ``offset`` None keeps the DNs when all scenes share one offset, else
    shifts every scene to offset 0; a number shifts every scene to that offset."""
    offsets = {float(s.offset) for s in scenes}
    target = offset if offset is not None else (offsets.pop() if len(offsets) == 1 else 0.0)
    out = np.zeros((len(bands), grid.height, grid.width), np.uint16)
    filled = np.zeros(grid.shape, bool)
    scl_out = np.zeros(grid.shape, np.uint8) if any(s.has_scl for s in scenes) else None
    for scene in scenes:
        data, valid, scl = read_item(scene, grid, bands)
        new = valid & ~filled
        if float(scene.offset) != target:
            data = np.clip(data - (float(scene.offset) - target), 1, 65535)
        out[:, new] = data[:, new].astype(np.uint16)
        if scl_out is not None and scl is not None:
            scl_out[new] = scl[new]
        filled |= new
        if filled.all():          # first valid pixel wins: later items cannot change anything
            break
    return out, scl_out, target


# ---- writing -------------------------------------------------------------------------------------------
def write_scene_cog(path: Path, grid: Grid, bands: list[str], dn: np.ndarray, scl: np.ndarray | None,
                    tags: dict) -> Path:
    """A deflate COG (uint16, nodata 0, band descriptions, tags), written atomically."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    from sandwatch.io import atomic_output

    names = list(bands) + (["SCL"] if scl is not None else [])
    stack = np.concatenate([dn, scl[None].astype(np.uint16)]) if scl is not None else dn
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=len(names), dtype="uint16",
                   crs=grid.crs, transform=grid.transform, nodata=0)
    with atomic_output(path) as tmp, MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(stack)
            for i, n in enumerate(names):
                ds.set_band_description(i + 1, n)
            ds.update_tags(**{k: str(v) for k, v in tags.items()})
        with mem.open() as src:
            rasterio.shutil.copy(src, tmp, driver="COG", compress="DEFLATE", predictor="2", blocksize=256,
                                 overview_resampling="nearest", num_threads="1")
    return path


def _clear(scl: np.ndarray | None) -> float | None:
    from sandwatch.imagery.clouds import scl_not_clear

    return None if scl is None else float((~scl_not_clear(scl)).mean())


def file_tags(area: Area, label: str, scenes, cands: list[Candidate], offset: float, clear: float | None) -> dict:
    level = {s.level for s in scenes}
    level_name = level.pop() if len(level) == 1 else "L2A"
    baselines = sorted({str(s.metadata.get("processing_baseline") or "") for s in scenes} - {""})
    tags = {"DATE": label, "PROCESSING_LEVEL": level_name,
            "PROCESSING_BASELINE": baselines[0] if len(baselines) == 1 else ("04.00" if offset else "harmonised"),
            "BOA_QUANTIFICATION_VALUE": 10000, "SANDWATCH_AREA": area.id,
            "SANDWATCH_ITEMS": ";".join(i for c in cands for i in c.items),
            "SANDWATCH_TILES": ";".join(sorted({t for c in cands for t in c.tiles})),
            "SANDWATCH_SOURCE_BASELINES": ";".join(baselines), "SANDWATCH_STAC_URL": cands[0].stac_url,
            "SANDWATCH_COLLECTION": cands[0].collection}
    tags["RADIO_ADD_OFFSET" if level_name == "L1C" else "BOA_ADD_OFFSET"] = f"{0.0 - offset:g}"
    if clear is not None:
        tags["SANDWATCH_CLEAR_FRACTION"] = f"{clear:.6f}"
    return tags


def _bands_of(scenes, wanted) -> list[str]:
    if wanted:
        return list(wanted)
    from sandwatch.bands import band_order

    return band_order({b for s in scenes for b in s.bands})


def fetch_date(area: Area, cand: Candidate, out_dir: Path, cfg: FetchConfig) -> Fetched:
    """One area and date: read the mosaic of the candidate's items, write the COG."""
    path = output_path(out_dir, area.id, cand.date.isoformat())
    cache = out_dir / ".items"
    scenes = [open_item_scene(cached_item(u, cache, cfg.sign, cfg.timeout_s), cfg.bands) for u in cand.item_urls]
    try:
        grid = area_grid(area, next((s.grid for s in scenes if s.grid.crs.to_epsg() == area.epsg), scenes[0].grid))
        bands = _bands_of(scenes, cfg.bands)
        dn, scl, offset = mosaic(scenes, grid, bands)
        clear = _clear(scl)
        write_scene_cog(path, grid, bands, dn, scl, file_tags(area, cand.date.isoformat(), scenes, [cand], offset, clear))
    finally:
        for s in scenes:
            s.close()
    return Fetched(area.id, cand.date, path, "fetched", clear, label=cand.date.isoformat())


def _gdal_libraries() -> list:
    """The GDAL shared libraries loaded in this process (rasterio's, and pyogrio's own copy)."""
    import ctypes

    import rasterio  # noqa: F401 - loads libgdal

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libgdal" in line.rsplit("/", 1)[-1]}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            libs.append(ctypes.CDLL(path))
    return libs


def clear_http_cache(url: str | None = None) -> None:
    """Forget what GDAL's /vsicurl/ cached about ``url`` (None: every URL). After a dropped
    connection it would otherwise keep answering from the failed state without asking again."""
    for lib in _gdal_libraries():
        if url:
            lib.VSICurlPartialClearCache(ctypes_str(f"/vsicurl/{url}"))
        else:
            lib.VSICurlClearCache()


def ctypes_str(text: str):
    import ctypes

    return ctypes.c_char_p(text.encode())


def with_retries(job: Callable[[], Fetched], cfg: FetchConfig, what: str) -> Fetched:
    """Run ``job``; transient failures (HTTP, connection, timeouts) are retried ``cfg.retries``
    times with exponential back-off, then become one line naming the URL."""
    for attempt in range(cfg.retries + 1):
        try:
            import rasterio

            with rasterio.Env(**gdal_env(cfg.timeout_s)):
                return job()
        except (_ReadFailed, SandwatchError) as err:
            text = str(err)
            url = err.url if isinstance(err, _ReadFailed) else \
                (text.split(": ", 1)[0] if text.startswith(("http://", "https://")) else None)
            transient = isinstance(err, _ReadFailed) or any(w in text.lower() for w in _TRANSIENT_WORDS)
            if not transient or isinstance(err, FetchFailed) or "disk full" in text or "not writable" in text:
                raise
            clear_http_cache(url)
            if attempt == cfg.retries:
                reason = text.split(": ", 1)[-1].split("; check ")[0] if url else text
                if "does not exist in the file system" in reason:    # GDAL's words for a timeout or a 404
                    reason = f"no usable answer: not found, or no data for {cfg.timeout_s:g} s"
                raise FetchFailed(str(SandwatchError.about(
                    url or what, f"failed after {cfg.retries + 1} tr{'ies' if cfg.retries else 'y'} ({reason})",
                    "check the server and your connection, then run the same command again: finished files "
                    "are kept"))) from None
            time.sleep(cfg.backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def run_jobs(jobs: list[tuple[str, str, Callable[[], Fetched]]], out_dir: Path, cfg: FetchConfig,
             progress: bool = False) -> list[Fetched]:
    """Run ``(area id, label, job)`` in parallel threads; a job whose file
    (:func:`output_path`) exists is not run (resume). Every job runs even when one fails; then
    the first failure is raised."""
    from tqdm import tqdm

    results: list[Fetched] = []
    todo = []
    for area_id, label, job in jobs:
        path = output_path(out_dir, area_id, label)
        if path.exists():
            results.append(Fetched(area_id, _kept_date(path, label), path, "kept", label=label))
        else:
            todo.append((f"area {area_id} {label}", job))
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max(1, cfg.workers), thread_name_prefix="sandwatch-fetch") as pool:
        futures = [pool.submit(with_retries, job, cfg, name) for name, job in todo]
        for f in tqdm(futures, desc="fetch", unit="file", disable=not progress or not futures):
            try:
                results.append(f.result())
            except BaseException as err:  # noqa: BLE001 - the others finish first; then raise
                errors.append(err)
    if errors:
        raise errors[0]
    return results


def _kept_date(path: Path, label: str) -> dt.date:
    """The date a finished file was written with (its ``DATE`` tag: for a monthly composite the
    median input date), so a resumed run records what a fresh one would."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tag = ds.tags().get("DATE", "")
        return dt.date.fromisoformat(tag[:10])
    except (rasterio.errors.RasterioIOError, ValueError):
        return _label_date(label)


def _label_date(label: str) -> dt.date:
    return dt.date.fromisoformat(label[:10]) if len(label) >= 10 and label[4] == "-" and label[7] == "-" \
        else dt.date.fromisoformat(label[:7] + "-01")


def area_of(by_id: dict[str, Area], cand: Candidate) -> Area:
    if cand.area not in by_id:
        raise SandwatchError.about(f"area {cand.area}", "is in the candidates but not in the areas file",
                                   "pass the areas file the search was made from")
    return by_id[cand.area]


def fetch(areas: list[Area], chosen: list[Candidate], out_dir: str | os.PathLike, cfg: FetchConfig = FetchConfig(),
          progress: bool = False) -> list[Fetched]:
    """One COG per chosen candidate (area x date) in ``out_dir``; see the module docstring."""
    from sandwatch.io import ensure_writable_dir

    out_dir = ensure_writable_dir(out_dir)
    by_id = {a.id: a for a in areas}
    jobs = []
    for c in chosen:
        area = area_of(by_id, c)
        jobs.append((area.id, c.date.isoformat(), lambda a=area, c=c: fetch_date(a, c, out_dir, cfg)))
    return run_jobs(jobs, out_dir, cfg, progress)


__all__ = ["FetchConfig", "Fetched", "FetchFailed", "fetch", "fetch_date", "mosaic", "read_item", "area_grid",
           "write_scene_cog", "run_jobs", "with_retries", "output_path", "cached_item", "open_item_scene"]
