"""Checks of a loaded manifest beyond its schema: do the files it names exist, and do its label
files fall on their scenes?

A label file whose polygons all miss their scene (wrong CRS, wrong scene, a shifted export)
turns into an all-background mask: training would learn "no mining" from a scene with mining,
in silence. :func:`check_labels` makes that an error (``train`` and ``dataset validate`` call
it before anything else), or a warning once per file with ``allow_empty`` for true negatives.
A label file with *no* features stays a legitimate negative scene (warned once per file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sandwatch.dataset.manifest import Manifest, _is_url
from sandwatch.errors import SandwatchError, warn_once
from sandwatch.grid import Grid

_FILE_FIELDS = ("scene", "annotations", "rivers", "aoi")


def missing_files(manifest: Manifest) -> list[tuple[str, str, str]]:
    """(observation id, field, path) for every local path that does not exist (URLs are not checked)."""
    out = []
    for obs in manifest.observations:
        for field in _FILE_FIELDS:
            value = getattr(obs, field)
            if value is None or _is_url(value):
                continue
            if not Path(value).exists():
                out.append((obs.id, field, value))
    return out


def label_problems(observations: Sequence, grids: Sequence[Grid | None] | None = None) -> list[tuple[str, str, str]]:
    """``(observation id, label file, problem)`` for every observation whose label file has
    polygons and none of them overlaps its scene. ``grids``: the scenes' grids when already
    open (else read from each scene's header; remote scenes without a grid are skipped).
    A label file without CRS whose coordinates do not fall on the scene raises at once."""
    from sandwatch.labels import overlaps_grid, polygons_on_grid
    from sandwatch.vectors import grid_like

    out = []
    for i, obs in enumerate(observations):
        labels = getattr(obs, "annotations", None)
        if not labels or _is_url(labels):
            continue
        grid = grids[i] if grids is not None else None
        if grid is None:
            if _is_url(obs.scene) or not Path(obs.scene).exists() or not Path(labels).exists():
                continue
            grid = grid_like(obs.scene)
        gdf = polygons_on_grid(labels, grid)
        if len(gdf) == 0:
            continue        # no features: a negative scene (said once by the reader)
        if not overlaps_grid(gdf, grid):
            out.append((obs.id, str(labels), f"none of its {len(gdf)} polygon(s) overlaps the scene {obs.scene}"))
    return out


def check_labels(observations: Sequence, grids: Sequence[Grid | None] | None = None, *,
                 allow_empty: bool = False, allow_hint: str = "pass --allow-empty") -> list[tuple[str, str, str]]:
    """:func:`label_problems`, as one error line (naming the first file and how many there are)
    or, with ``allow_empty``, a warning once per file. Returns the problems."""
    problems = label_problems(observations, grids)
    if problems and not allow_empty:
        obs_id, path, problem = problems[0]
        more = f" (and {len(problems) - 1} other label file(s))" if len(problems) > 1 else ""
        raise SandwatchError.about(
            path, f"{problem} (observation {obs_id}): it would train as all background{more}",
            f"check its CRS and that it belongs to this scene, or {allow_hint} if the scene is a true negative")
    for obs_id, path, problem in problems:
        warn_once(f"labels-miss {obs_id}", path, f"{path}: {problem} (observation {obs_id}); used as a negative scene "
                  "(all background)")
    return problems
