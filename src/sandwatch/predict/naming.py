"""How prediction outputs are named: the one rule ``predict`` writes by and ``evaluate`` and
``monitor`` find them by.

A scene's outputs are ``OUT/NAME`` + a suffix of :data:`OUTPUTS`; ``NAME`` is the scene file's
stem (:func:`scene_name`: the folder's name for per-band folders, the item id for STAC JSON),
or ``PARENT-NAME`` when several scenes of one run share a stem (:func:`unique_names`: many
``rgb.tif`` in per-site folders). :func:`prediction_names` lists, most specific first, the file
names a scene's probability raster may have.
"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sandwatch.errors import SandwatchError
from sandwatch.vectors import VECTOR_FORMATS

#: Output files per scene, by key: file name suffix appended to the scene's name.
OUTPUTS = {
    "probability": ".prob.tif",
    "mask": ".mask.tif",
    **{f"polygons_{key}": f".polygons{fmt.suffix}" for key, fmt in VECTOR_FORMATS.items()},
}
POLYGON_OUTPUTS = tuple(k for k in OUTPUTS if k.startswith("polygons_"))

_SCENE_SUFFIXES = (".tif", ".tiff", ".json", ".jp2", ".vrt", ".SAFE", ".safe")


def _source(scene) -> str:
    return str(getattr(scene, "source", scene)).rstrip("/").split("?")[0]


def scene_name(scene) -> str:
    """A file-name stem for a scene's outputs: the file's stem, the folder's name for per-band
    folders, the item id for STAC JSON."""
    name = _source(scene).rsplit("/", 1)[-1]
    for suffix in _SCENE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name or "scene"


def scene_parent(scene) -> str:
    """The name of the folder holding the scene (empty for a bare file name)."""
    src = _source(scene)
    return src.rsplit("/", 2)[-2] if "/" in src else ""


def unique_names(scenes: Sequence) -> list[str]:
    """Output names for a batch: the scene's name, or ``PARENT-NAME`` when names repeat."""
    names = [scene_name(s) for s in scenes]
    counts = Counter(names)
    out = []
    for s, n in zip(scenes, names):
        if counts[n] > 1:
            parent = scene_parent(s)
            n = f"{parent}-{n}" if parent else n
        out.append(n)
    dup = [n for n, c in Counter(out).items() if c > 1]
    if dup:
        raise SandwatchError.about("SCENE", f"two scenes would write the same outputs ({dup[0]})",
                                   "predict them into different output folders")
    return out


def output_paths(out_dir: str | os.PathLike, name: str) -> dict[str, Path]:
    """The output files of scene ``name`` in ``out_dir``, by key of :data:`OUTPUTS`."""
    out_dir = Path(out_dir)
    return {key: out_dir / f"{name}{suffix}" for key, suffix in OUTPUTS.items()}


def output_name(path: str | os.PathLike, key: str = "probability") -> str:
    """The scene name of an output file (``OUT/NAME.prob.tif`` -> ``NAME``)."""
    name = Path(path).name
    suffix = OUTPUTS[key]
    return name[: -len(suffix)] if name.endswith(suffix) else Path(name).stem


def prediction_names(scene, key: str = "probability") -> list[str]:
    """File names (no folder) the ``key`` output of ``scene`` may have, most specific first:
    ``PARENT-NAME`` + suffix (names repeated in the run), then ``NAME`` + suffix."""
    name, parent = scene_name(scene), scene_parent(scene)
    suffix = OUTPUTS[key]
    return ([f"{parent}-{name}{suffix}"] if parent else []) + [f"{name}{suffix}"]


def lock_path(out_dir: str | os.PathLike, name: str) -> Path:
    """``OUT/.NAME.lock``: held by the run predicting scene NAME into OUT."""
    return Path(out_dir) / f".{name}.lock"


#: How outputs are found by observation id (``evaluate --checkpoint`` writes ``ID.prob.tif``; other
#: tools ``ID_prob.tif`` or ``ID/anything.prob.tif``): the first pattern with exactly one match wins.
ID_PATTERNS = ("{id}[._-]*{kind}*.tif", "{id}/*{kind}*.tif", "{id}[._-]*{kind}*.tiff", "{id}/*{kind}*.tiff")


def find_outputs(folder: str | os.PathLike, observations, key: str = "probability") -> dict[str, Path]:
    """Map observations (or bare ids) to their ``key`` output (``probability`` or ``mask``) in
    ``folder``. For observation ``ID`` of scene ``.../PARENT/NAME.tif``, first unique match wins:

    1. ``ID.*prob*.tif`` (or ``ID_``/``ID-`` instead of ``ID.``) in the folder (what
       ``sandwatch evaluate --checkpoint`` writes: ``ID.prob.tif``), else the single
       ``*prob*.tif`` in a sub-folder ``ID/``;
    2. :func:`prediction_names` of the scene: ``PARENT-NAME.prob.tif``, then ``NAME.prob.tif``
       (what ``sandwatch predict`` writes).

    Several matches for one rule, or none for all, is an error naming the observation.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SandwatchError.about(folder, "no such predictions folder", "pass the -o folder of `sandwatch predict`")
    kind = OUTPUTS[key].split(".")[1]          # ".prob.tif" -> "prob"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{kind}*.tif*"))
    out: dict[str, Path] = {}
    for obs in observations:
        obs_id = obs if isinstance(obs, str) else obs.id
        rules = [pat.format(id=obs_id, kind=kind) for pat in ID_PATTERNS]
        if not isinstance(obs, str) and getattr(obs, "scene", None):
            rules += prediction_names(obs.scene, key)
        found = None
        for rule in rules:
            hits = [h for h in fnmatch.filter(names, rule) if ("/" in rule) == ("/" in h)]
            if len(hits) == 1:
                found = folder / hits[0]
                break
            if len(hits) > 1:
                raise SandwatchError.about(folder, f"holds several {key} rasters for {obs_id}: "
                                           f"{', '.join(hits[:3])}", "keep one per observation")
        if found is None:
            raise SandwatchError.about(folder, f"has no {key} raster for observation {obs_id} "
                                       f"(looked for {obs_id}.{kind}.tif, {obs_id}_*{kind}*.tif, {obs_id}/*{kind}*.tif "
                                       f"and the scene's NAME{OUTPUTS[key]})",
                                       "run `sandwatch predict` on its scene, or evaluate with --checkpoint")
        out[obs_id] = found
    return out
