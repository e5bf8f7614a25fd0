"""Output files that appear whole or not at all, and one line when the disk says no.

Every stage writes through :func:`atomic_output`: the data goes to a temporary name in the
same folder and is renamed over the final name only when the block exits without an
exception *and* the temporary file is really there, non-empty and flushed to disk, so a
killed or failed run never leaves a half-written or empty file under the final name.

Write failures become one :class:`~sandwatch.errors.SandwatchError` line naming the final
file: ``disk full`` (ENOSPC, EDQUOT, EFBIG) or ``not writable`` (EROFS, EACCES, EPERM), the
temporary file removed (its own removal error never hides the real one):

* Python ``OSError`` with an errno (open/write/close/rename/mkdir);
* GDAL failures: rasterio raises some (``RasterioIOError: Write failed``), but errors at
  *close* (a GeoTIFF's last tiles and directory are flushed then) are only logged. While an
  ``atomic_output`` block runs, :func:`gdal_failures` collects the GDAL errors signalled in
  the block's thread (through rasterio's ``rasterio._err``/``rasterio._env`` loggers) and a
  write failure among them fails the block;
* errors without an errno (GDAL's "Write error at scanline ...", torch's "file write
  failed", SQLite's "database or disk is full"): their text, and the free space left on the
  disk at the moment of the failure (< :data:`LOW_SPACE_BYTES`: full), decide.

:func:`ensure_writable_dir` lets a command fail at once, before any work, on a folder it
cannot write to.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from sandwatch.errors import SandwatchError

#: errnos that mean "the disk is full" / "you may not write here".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: A write that failed without an errno on a disk with less free space than this is "disk full".
LOW_SPACE_BYTES = 16 * 1024 * 1024

_FULL_TEXT = ("no space left", "disk is full", "disk full", "quota exceeded", "file too large")
_RO_TEXT = {"read-only file system": "read-only file system", "readonly database": "read-only file system",
            "permission denied": "permission denied", "operation not permitted": "permission denied",
            "attempt to write a readonly": "read-only file system"}
_WRITE_WORDS = ("write", "writing", "flush", "seek", "i/o", "io error", "disk", "space", "read-only",
                "readonly", "permission", "directory")


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` that keeps its suffix (drivers look at it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def updating(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.NAME.lock`` beside ``path`` while it is read, changed and
    written, so two processes (or threads) updating the same file do not lose each other's
    change (the lock file stays; it is empty)."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_yaml_mapping(path: str | os.PathLike, *, what: str = "config file",
                      missing_fix: str = "check the path", format_fix: str = "write `name: value` lines") -> dict:
    """A YAML file holding a mapping of settings (empty file: {}); a missing file, bad YAML or
    anything but a mapping is one line naming the file."""
    import yaml  # noqa: PLC0415

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise SandwatchError.about(path, f"no such {what}", missing_fix) from None
    except yaml.YAMLError as err:
        raise SandwatchError.about(path, f"is not valid YAML ({str(err).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(data, dict):
        raise SandwatchError.about(path, "is not a mapping of settings", format_fix)
    return data


# ---- classifying a failure ------------------------------------------------------------------------
def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the disk holding ``folder`` (None: unknown)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_gdal_error(err: BaseException) -> bool:
    mod = type(err).__module__ or ""
    return mod.startswith(("rasterio", "pyogrio", "fiona"))


def classify_write_error(err: BaseException | None, *, messages: tuple[str, ...] = (),
                         free: int | None = None) -> tuple[str, str] | None:
    """``("disk full" | "not writable", reason)`` for a failed write, None when it is neither.

    ``err``: the exception (its cause chain is searched for an errno); ``messages``: GDAL
    errors collected while writing; ``free``: bytes left on the disk when it failed."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return "disk full", os.strerror(e.errno).lower()
        if isinstance(e, OSError) and e.errno in NOT_WRITABLE_ERRNOS:
            return "not writable", ("read-only file system" if e.errno == errno.EROFS else "permission denied")
    text = " ".join([*(str(e) for e in _chain(err)), *messages]).lower()
    if any(t in text for t in _FULL_TEXT):
        return "disk full", "no space left on device"
    for needle, reason in _RO_TEXT.items():
        if needle in text:
            return "not writable", reason
    wrote = bool(messages) or any((isinstance(e, OSError) and e.errno == errno.EIO) or _is_gdal_error(e)
                                  or any(w in str(e).lower() for w in ("write", "flush")) for e in _chain(err))
    if wrote and free is not None and free < LOW_SPACE_BYTES:
        return "disk full", f"no space left on device, {free // 1024} KiB free"
    return None


def write_error(path: str | os.PathLike, err: BaseException | None, *, messages: tuple[str, ...] = (),
                free: int | None = None, generic: bool = False) -> SandwatchError | None:
    """The one-line :class:`SandwatchError` for a failed write of ``path`` (None when ``err``
    is not a write failure; with ``generic`` any failure gets a "could not be written" line)."""
    kind = classify_write_error(err, messages=messages, free=free)
    if kind is not None and kind[0] == "disk full":
        return SandwatchError.about(path, f"disk full ({kind[1]}), nothing was written under this name",
                                    "free some space on that disk or write the output elsewhere")
    if kind is not None:
        return SandwatchError.about(path, f"not writable ({kind[1]})",
                                    "write the output to a folder you may write to")
    if generic:
        first = next((m for m in messages if m), None) or (str(err).strip().splitlines() or [""])[0] \
            or type(err).__name__
        return SandwatchError.about(path, f"could not be written ({first[:200]})",
                                    "check the disk and the output folder")
    return None


# ---- GDAL errors signalled while writing ------------------------------------------------------------
_GDAL_LOGGERS = ("rasterio._err", "rasterio._env")
_capture_lock = threading.Lock()
_capture_count = 0
_saved_levels: dict[str, int] = {}
_captures: dict[int, list[list[str]]] = {}


class _GdalFailureHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stacks = _captures.get(record.thread)
        if not stacks:
            return
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not worth failing a write for
            return
        if "signalled an error" in msg or record.levelno >= logging.ERROR:
            for stack in stacks:
                stack.append(msg)


_HANDLER = _GdalFailureHandler(level=logging.INFO)


@contextlib.contextmanager
def gdal_failures() -> Iterator[list[str]]:
    """Collect the GDAL errors signalled in this thread while the block runs (a list of
    messages, filled as they come). rasterio logs them at INFO (errors at dataset close are
    never raised); the loggers are lowered to INFO only while some block is collecting."""
    global _capture_count
    me = threading.get_ident()
    found: list[str] = []
    with _capture_lock:
        if _capture_count == 0:
            for name in _GDAL_LOGGERS:
                lg = logging.getLogger(name)
                _saved_levels[name] = lg.level
                if lg.getEffectiveLevel() > logging.INFO:
                    lg.setLevel(logging.INFO)
                lg.addHandler(_HANDLER)
        _capture_count += 1
        _captures.setdefault(me, []).append(found)
    try:
        yield found
    finally:
        with _capture_lock:
            stacks = _captures.get(me, [])
            if found in stacks:
                stacks.remove(found)
            if not stacks:
                _captures.pop(me, None)
            _capture_count -= 1
            if _capture_count == 0:
                for name in _GDAL_LOGGERS:
                    lg = logging.getLogger(name)
                    lg.removeHandler(_HANDLER)
                    lg.setLevel(_saved_levels.pop(name, logging.NOTSET))


def write_failures(messages: list[str]) -> tuple[str, ...]:
    """The GDAL messages among ``messages`` that are about writing (not a handled read error)."""
    out = []
    for m in messages:
        low = m.lower()
        if any(w in low for w in _WRITE_WORDS):
            out.append(m.split("msg=", 1)[-1].strip("'\" "))
    return tuple(out)


# ---- removing what a failed write left ----------------------------------------------------------------
def remove_quietly(*paths: str | os.PathLike) -> None:
    """Delete files (and GDAL side-cars ``NAME.*``), ignoring every error: cleanup must never
    hide the error that made it necessary (on a read-only disk the unlink fails too)."""
    for p in paths:
        p = Path(p)
        with contextlib.suppress(OSError):
            p.unlink()
        with contextlib.suppress(OSError):
            for side in p.parent.glob(p.name + ".*"):
                with contextlib.suppress(OSError):
                    side.unlink()


def _about_writing(err: BaseException, tmp: Path, messages: tuple[str, ...]) -> bool:
    """Whether a failure inside an output block is the output's own (then it gets a "could
    not be written" line even when neither full nor read-only), not e.g. a bad input."""
    if messages or _is_gdal_error(err):
        return True     # GDAL/OGR failing inside an output block: the output did not get written
    if not isinstance(err, OSError):
        return False
    text = str(err).lower()
    return tmp.name.lower() in text or any(w in text for w in ("write", "flush", "the writer produced",
                                                               "written file"))


# ---- reading back what C libraries wrote ------------------------------------------------------------
def verify_raster(path: str | os.PathLike) -> None:
    """Open a GeoTIFF and decode every block of every band and overview; raise if any fails.

    GDAL does not always report a failed write: on a full disk a GeoTIFF can close "cleanly"
    with its header written and its last tiles cut short. Reading it back is the only proof;
    it costs one decompression of the file (well under a second for a 10980 px mask)."""
    import rasterio  # noqa: PLC0415 - only for raster outputs

    with rasterio.open(path) as ds:
        n_ovr = len(ds.overviews(1)) if ds.count else 0
    for level in [None, *range(n_ovr)]:
        kw = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **kw) as ds:
            for band in range(1, ds.count + 1):
                for _, window in ds.block_windows(band):
                    ds.read(band, window=window)


def verify_geopackage(path: str | os.PathLike) -> None:
    """SQLite's quick_check of a GeoPackage written by OGR."""
    import sqlite3  # noqa: PLC0415

    con = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    finally:
        con.close()
    if rows != [("ok",)]:
        raise OSError(errno.EIO, f"the GeoPackage is damaged ({rows[0][0] if rows else 'no answer'})", str(path))


def verify_json(path: str | os.PathLike) -> None:
    import json  # noqa: PLC0415

    with open(path, "rb") as fh:
        json.load(fh)


def verify_parquet(path: str | os.PathLike) -> None:
    """A Parquet file's footer (written last) holds its metadata: it must read back."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    pq.read_metadata(path)


def verify_zip(path: str | os.PathLike) -> None:
    """A torch.save file is a zip archive: its central directory, written last, must be whole."""
    import zipfile  # noqa: PLC0415

    with zipfile.ZipFile(path) as zf:
        zf.namelist()


#: Read-back checks by file suffix: outputs written by C libraries (GDAL, OGR, torch), which do
#: not always report a failed write. Python's own writes raise and need none.
VERIFIERS = {".tif": verify_raster, ".tiff": verify_raster, ".gpkg": verify_geopackage,
             ".geojson": verify_json, ".parquet": verify_parquet, ".pt": verify_zip, ".ckpt": verify_zip, ".pth": verify_zip}


def _check_written(tmp: Path, allow_empty: bool, verify) -> None:
    """The temporary file exists, is not empty (unless allowed), reads back whole
    (``verify``, default by suffix: :data:`VERIFIERS`) and is on disk (fsync)."""
    try:
        st = tmp.stat()
    except FileNotFoundError:
        raise OSError(errno.EIO, "the writer produced no file", str(tmp)) from None
    if tmp.is_dir():
        return
    if st.st_size == 0:
        if allow_empty:
            return
        raise OSError(errno.EIO, "the writer produced an empty file", str(tmp))
    check = VERIFIERS.get(tmp.suffix.lower()) if verify is None else verify
    if check:
        try:
            check(tmp)
        except Exception as err:  # noqa: BLE001 - any failure to read back is a failed write
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise OSError(errno.EIO, f"the written file does not read back ({first[:160]})", str(tmp)) from None
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike, what: str | os.PathLike | None = None) -> Path:
    """``mkdir -p`` with a one-line error (naming ``what``, default the folder) instead of a traceback."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SandwatchError.about(folder, "exists and is not a folder", "choose another output folder") from None
    except OSError as err:
        raise (write_error(what or folder, err, free=free_bytes(folder), generic=True)) from None
    return folder


def ensure_writable_dir(folder: str | os.PathLike, what: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` if needed and prove a file can be created in it; a one-line
    :class:`SandwatchError` (naming ``what``, default the folder) otherwise. Commands call it
    before hours of work whose results would have nowhere to go."""
    folder = make_dirs(folder, what)
    try:
        fd, probe = tempfile.mkstemp(prefix=".sandwatch-probe-", dir=folder)
    except OSError as err:
        raise write_error(what or folder, err, free=free_bytes(folder), generic=True) from None
    os.close(fd)
    remove_quietly(probe)
    return folder


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, allow_empty: bool = False, verify=None) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` on success, delete it on error.

    Success means: no exception, no GDAL write failure signalled in this thread meanwhile
    (see :func:`gdal_failures`), and a non-empty temporary file (``allow_empty`` for formats
    that may be empty) that reads back whole (``verify(tmp)``; default by suffix,
    :data:`VERIFIERS`; ``False``: no check) and is flushed with fsync. Write failures (see the module docstring) raise a
    one-line :class:`SandwatchError` naming ``path``; anything else is re-raised as it is.
    """
    path = Path(path)
    make_dirs(path.parent, path)
    tmp = temporary_sibling(path)
    gdal: list[str] = []
    try:
        with gdal_failures() as gdal:
            yield tmp
        failed = write_failures(gdal)
        if failed:
            raise OSError(errno.EIO, f"GDAL: {failed[0]}", str(tmp))
        _check_written(tmp, allow_empty, verify)
        os.replace(tmp, path)
    except BaseException as err:
        free = free_bytes(tmp.parent)   # measured before the cleanup gives the space back
        messages = write_failures(gdal)
        remove_quietly(tmp)
        if isinstance(err, SandwatchError) or not isinstance(err, Exception):
            raise
        mapped = write_error(path, err, messages=messages, free=free, generic=_about_writing(err, tmp, messages))
        if mapped is not None:
            raise mapped from None
        raise


__all__ = ["atomic_output", "temporary_sibling", "ensure_writable_dir", "make_dirs", "write_error",
           "classify_write_error", "gdal_failures", "write_failures", "remove_quietly", "free_bytes"]
