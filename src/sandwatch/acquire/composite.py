"""Monthly median composites (``sandwatch acquire fetch --composite monthly``): the product the
published pipeline exported. For each area and month, every chosen date is read over the area
(the same mosaic as a single date), pixels that SCL does not call clear
(:data:`sandwatch.imagery.clouds.SCL_NOT_CLEAR`) or that have no data are left out, and each
band's median of what remains is written (rounded to whole DNs; 0 = nodata where no date was
clear). Offsets are harmonised as for a mosaic (one offset per file, else 0). The file has no
SCL band; its ``DATE`` is the median input date; ``SANDWATCH_DATES`` lists the inputs and
``SANDWATCH_CLEAR_COUNT_MEAN`` how many clear dates a pixel had on average.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from sandwatch.acquire.fetch import (
    FetchConfig,
    Fetched,
    _bands_of,
    area_of,
    area_grid,
    cached_item,
    file_tags,
    mosaic,
    open_item_scene,
    output_path,
    run_jobs,
    write_scene_cog,
)
from sandwatch.acquire.search import Candidate
from sandwatch.acquire.sites import Area


def month_label(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}_median"


def median_of(stacks: list[np.ndarray], clear: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the dates where the pixel is clear: (uint16 (C, h, w), count (h, w))."""
    data = np.stack(stacks).astype(np.float32)            # (T, C, h, w)
    ok = np.stack(clear)                                   # (T, h, w)
    data[~np.broadcast_to(ok[:, None], data.shape)] = np.nan
    count = ok.sum(axis=0)
    out = np.zeros(data.shape[1:], np.uint16)
    seen = count > 0
    if seen.any():
        med = np.nanmedian(data[:, :, seen], axis=0)
        out[:, seen] = np.clip(np.rint(med), 1, 65535).astype(np.uint16)
    return out, count


def composite_month(area: Area, cands: list[Candidate], out_dir: Path, cfg: FetchConfig) -> Fetched:
    from sandwatch.imagery.clouds import scl_not_clear

    label = month_label(cands[0].date)
    path = output_path(out_dir, area.id, label)
    cache = out_dir / ".items"
    per_date = [[open_item_scene(cached_item(u, cache, cfg.sign, cfg.timeout_s), cfg.bands) for u in c.item_urls]
                for c in cands]
    scenes = [s for group in per_date for s in group]
    try:
        grid = area_grid(area, next((s.grid for s in scenes if s.grid.crs.to_epsg() == area.epsg), scenes[0].grid))
        bands = _bands_of(scenes, cfg.bands)
        offsets = {float(s.offset) for s in scenes}
        target = offsets.pop() if len(offsets) == 1 else 0.0
        stacks, clear = [], []
        for group in per_date:
            dn, scl, _ = mosaic(group, grid, bands, offset=target)
            ok = (dn > 0).all(axis=0)
            if scl is not None:
                ok &= ~scl_not_clear(scl)
            stacks.append(dn)
            clear.append(ok)
        med, count = median_of(stacks, clear)
        days = sorted(c.date for c in cands)
        mid = days[(len(days) - 1) // 2]
        clear_fraction = float((count > 0).mean())
        tags = file_tags(area, mid.isoformat(), scenes, cands, target, clear_fraction)
        tags.update(SANDWATCH_COMPOSITE="monthly median", SANDWATCH_DATES=";".join(d.isoformat() for d in days),
                    SANDWATCH_CLEAR_COUNT_MEAN=f"{count.mean():.4f}")
        write_scene_cog(path, grid, bands, med, None, tags)
    finally:
        for s in scenes:
            s.close()
    return Fetched(area.id, mid, path, "fetched", clear_fraction, label=label)


def fetch_composites(areas: list[Area], chosen: list[Candidate], out_dir, cfg: FetchConfig = FetchConfig(),
                     progress: bool = False) -> list[Fetched]:
    """One monthly median COG per area and month of the chosen candidates."""
    from sandwatch.io import ensure_writable_dir

    out_dir = ensure_writable_dir(out_dir)
    by_id = {a.id: a for a in areas}
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in chosen:
        area_of(by_id, c)
        groups.setdefault((c.area, month_label(c.date)), []).append(c)
    jobs = [(a, label, lambda a=by_id[a], cs=cs: composite_month(a, cs, out_dir, cfg))
            for (a, label), cs in sorted(groups.items())]
    return run_jobs(jobs, out_dir, cfg, progress)


__all__ = ["fetch_composites", "composite_month", "median_of", "month_label"]
