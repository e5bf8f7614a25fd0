"""New observations into the project's manifest, and the monitoring feed
(``sandwatch acquire update AREAS --since DATE``).

Each fetched file becomes one :class:`~sandwatch.dataset.manifest.Observation`: ``site`` = the
area id, ``date``, ``scene`` = the COG, ``latitude``/``longitude`` = the area's centre; the id is
``AREA_DATE`` (composites: ``AREA_YYYY-MM_median``). Observations already in the manifest are
left as they are; the manifest is read, extended and saved under a lock file beside it
(``.NAME.lock``, ``flock``), so two runs appending to one manifest do not lose each other's
lines. The clear fraction over the area goes to the observation's ``clear_fraction`` (and is in
each COG's tags, ``SANDWATCH_CLEAR_FRACTION``, where a resumed run reads it back).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sandwatch.acquire.fetch import FetchConfig, Fetched, fetch
from sandwatch.acquire.search import SearchConfig, search
from sandwatch.acquire.sites import Area
from sandwatch.io import updating


def _clear_fraction(f: Fetched) -> float | None:
    """The fetched file's clear fraction: from the fetch, else from the COG's tags (a file a
    resumed run skipped)."""
    if f.clear_fraction is not None:
        return round(float(f.clear_fraction), 4)
    import rasterio

    try:
        with rasterio.open(f.path) as ds:
            value = ds.tags().get("SANDWATCH_CLEAR_FRACTION")
    except rasterio.errors.RasterioIOError:
        return None
    return round(float(value), 4) if value else None


def _load_or_new(path: Path):
    from sandwatch.dataset.manifest import Manifest, load_manifest

    return load_manifest(path) if path.exists() else Manifest(name=path.stem, observations=[])


def append_to_manifest(manifest_path: str | os.PathLike, areas: list[Area], fetched: list[Fetched]) -> int:
    """Add an observation per fetched file not yet in the manifest; returns how many were added."""
    from sandwatch.dataset.manifest import Observation, save_manifest

    path = Path(manifest_path)
    by_id = {a.id: a for a in areas}
    with updating(path):
        manifest = _load_or_new(path)
        have = {o.id for o in manifest.observations}
        added = 0
        for f in sorted(fetched, key=lambda f: (f.area, f.label or "")):
            if f.status == "failed":
                continue
            lon, lat = by_id[f.area].centre_lonlat()
            obs_id = f"{f.area}_{f.label or f.date.isoformat()}"
            if obs_id in have:
                continue
            manifest.observations.append(Observation(id=obs_id, site=f.area, date=f.date, scene=str(Path(f.path).resolve()),
                                                     latitude=round(lat, 6), longitude=round(lon, 6),
                                                     clear_fraction=_clear_fraction(f)))
            have.add(obs_id)
            added += 1
        if added or not path.exists():
            save_manifest(manifest, path)
    return added


def known_dates(manifest_path: str | os.PathLike) -> dict[str, set[dt.date]]:
    """Dates each area (site) already has in the manifest."""
    path = Path(manifest_path)
    out: dict[str, set[dt.date]] = {}
    if path.exists():
        for o in _load_or_new(path).observations:
            out.setdefault(o.site, set()).add(o.date)
    return out


def update(areas: list[Area], since: dt.date, out_dir: str | os.PathLike, manifest_path: str | os.PathLike, *,
           until: dt.date | None = None, min_clear: float = 0.8, search_cfg: SearchConfig = SearchConfig(),
           fetch_cfg: FetchConfig = FetchConfig(), progress: bool = False) -> list[Fetched]:
    """Fetch every date from ``since`` (to ``until``, default today) clear enough over an area
    and not yet in the manifest; append them. Returns what was fetched (empty: nothing new)."""
    until = until or dt.date.today()
    cands = search(areas, since, until, search_cfg, progress=progress, allow_empty=True)
    known = known_dates(manifest_path)
    new = [c for c in cands if c.clear_fraction >= min_clear and c.date not in known.get(c.area, set())]
    if not new:
        return []
    fetched = fetch(areas, new, out_dir, fetch_cfg, progress=progress)
    append_to_manifest(manifest_path, areas, fetched)
    return fetched


__all__ = ["append_to_manifest", "known_dates", "update", "FetchConfig", "SearchConfig"]
