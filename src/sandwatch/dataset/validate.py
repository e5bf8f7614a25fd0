"""Checks of a loaded manifest beyond its schema: do the files it names exist?"""

from __future__ import annotations

from pathlib import Path

from sandwatch.dataset.manifest import Manifest, _is_url

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
