"""Resuming a killed prediction from its last finished row block.

While a scene is predicted, its two stream files (tiled GeoTIFFs, see
:class:`~sandwatch.predict.writer.StreamingCOGWriter`) hold every finished row block. After a
finished block (the first, the last, and in between at most one per
:data:`~sandwatch.predict.core.CHECKPOINT_SECONDS`) both are closed (GDAL flushes its tiles
and directory), fsynced and reopened, and a small progress file ``OUT/.NAME.progress.json``
is written atomically (temporary name, fsync, rename, fsync of the folder): how many rows of
the output grid are finished, the stream files' names, the counters that go into the
outputs' tags, and the *key* of the run. A run killed at any point leaves a progress file
that describes stream files whose first ``rows`` rows are on disk; whatever was written
after it is written again.

The key holds everything the pixels depend on: the model's fingerprint (weights, bands,
normalisation, window), threshold, temperature, TTA, edge, blend, batch size, dtype,
precision, the scene (path, size, modification time), its grid, the AOI and the region. A
progress file whose key differs (another checkpoint, threshold, edge, TTA, ...) is not used:
the scene starts from row 0. A model without a fingerprint (a hand-built
:class:`~sandwatch.predict.Predictor` whose ``forward`` is any callable) is never resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandwatch.io import free_bytes, remove_quietly, temporary_sibling, write_error
from sandwatch.predict.naming import output_name

FORMAT = 1
PROGRESS_SUFFIX = ".progress.json"


def progress_path(prob_path: str | os.PathLike) -> Path:
    """``OUT/.NAME.progress.json`` for the probability output ``OUT/NAME.prob.tif``."""
    prob_path = Path(prob_path)
    return prob_path.with_name(f".{output_name(prob_path)}{PROGRESS_SUFFIX}")


# ---- fingerprints --------------------------------------------------------------------------------
def checkpoint_fingerprint(ckpt) -> str:
    """A digest of everything a :class:`~sandwatch.models.checkpoint.Checkpoint` predicts with:
    arch, options, bands, normalisation, window, temperature and every weight's bytes."""
    import torch

    h = hashlib.blake2b(digest_size=20)
    meta = {"arch": ckpt.arch, "options": ckpt.options, "bands": list(ckpt.bands),
            "normalization": ckpt.band_spec.normalization.to_dict(), "window": int(ckpt.window),
            "temperature": float(ckpt.temperature)}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(ckpt.state_dict):
        t = ckpt.state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def normalization_id(normalize) -> Any:
    """A JSON-able identity of a Predictor's ``normalize`` (None: no normalisation; False:
    unknown, so the run cannot be resumed)."""
    if normalize is None:
        return None
    owner = getattr(normalize, "__self__", None)      # Checkpoint.normalize, a bound method
    if owner is not None and hasattr(owner, "band_spec"):
        normalize = owner.band_spec.normalization
    to_dict = getattr(normalize, "to_dict", None)
    if to_dict is None:
        return False
    return json.loads(json.dumps(to_dict(), default=float))


def scene_id(scene) -> dict:
    """Source, and for local files their size and modification time (a scene rewritten in
    place is another scene)."""
    src = str(getattr(scene, "source", scene))
    out: dict[str, Any] = {"source": src}
    if "://" not in src:
        path = Path(src)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp = []
        for p in files[:500]:
            with contextlib.suppress(OSError):
                st = p.stat()
                stamp.append([p.name, st.st_size, st.st_mtime_ns])
        out["files"] = stamp
    return out


def geometry_id(geom) -> str | None:
    if geom is None:
        return None
    return hashlib.blake2b(geom.wkb, digest_size=16).hexdigest()


# ---- the progress file ----------------------------------------------------------------------------
@dataclass
class Progress:
    """What a progress file says (see the module doc)."""

    path: Path
    key: dict
    rows: int = 0                                        #: rows of the output grid on disk
    streams: dict[str, str] = field(default_factory=dict)   #: output key -> stream file name
    counters: dict[str, int] = field(default_factory=dict)
    target: Path | None = None    #: the output a failure to save names (default: this file)

    def stream_paths(self) -> dict[str, Path]:
        return {k: self.path.with_name(v) for k, v in self.streams.items()}

    def save(self) -> None:
        """Write atomically and durably: temporary sibling, fsync, rename, fsync the folder."""
        data = json.dumps({"format": FORMAT, "key": _jsonable(self.key), "rows": int(self.rows),
                           "streams": self.streams, "counters": {k: int(v) for k, v in self.counters.items()}},
                          sort_keys=True)
        tmp = temporary_sibling(self.path)
        try:
            with open(tmp, "w") as fh:
                fh.write(data + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException as err:
            free = free_bytes(self.path.parent)
            remove_quietly(tmp)
            if isinstance(err, OSError):
                raise write_error(self.target or self.path, err, free=free, generic=True) from None
            raise
        _fsync_dir(self.path.parent)


def load_progress(path: str | os.PathLike, key: dict, target: str | os.PathLike | None = None) -> Progress | None:
    """The progress file at ``path`` when it belongs to a run with this ``key`` and its stream
    files are there; None otherwise (absent, unreadable, another run's key, files gone)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("key") != _jsonable(key):
        return None
    try:
        p = Progress(path, key, int(d["rows"]), {str(k): str(v) for k, v in d["streams"].items()},
                     {str(k): int(v) for k, v in d.get("counters", {}).items()},
                     Path(target) if target is not None else None)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if p.rows <= 0 or any("/" in v or not path.with_name(v).is_file() for v in p.streams.values()):
        return None
    return p


def discard_progress(path: str | os.PathLike, *, streams: bool = True) -> None:
    """Remove a progress file and (``streams``) the stream files it names."""
    path = Path(path)
    if streams:
        try:
            d = json.loads(path.read_text())
            names = [str(v) for v in d.get("streams", {}).values() if "/" not in str(v)]
        except (OSError, ValueError, AttributeError):
            names = []
        remove_quietly(*(path.with_name(n) for n in names))
    remove_quietly(path)


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["Progress", "checkpoint_fingerprint", "discard_progress", "geometry_id", "load_progress",
           "normalization_id", "progress_path", "scene_id"]
