"""``update_alerts``: a site's alert state from its monitoring history -> events, layers.

The monitor stage records, per date, an observation raster of the site's AOI window (band 1:
mine / not mine / not observed; band 2: probability). :func:`update_alerts` replays them in
date order through :class:`~sandwatch.alerts.model.PixelAlerts` (gap dates skipped, reviews'
rejections applied), records the events not yet in the history (``alert_events``, each
once whatever runs at the same time) and writes the layers of the state as of the latest
date (:mod:`sandwatch.alerts.layers`). Replaying from the rasters makes a re-run give the
same regions, keys and events, so nothing is raised twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely

from sandwatch.alerts.layers import event_row, write_layers
from sandwatch.alerts.model import AlertRules, PixelAlerts
from sandwatch.errors import SandwatchError
from sandwatch.grid import Window


@dataclass
class AlertsResult:
    site: str
    state: PixelAlerts | None
    added_events: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)   #: every event of the site in the history
    paths: dict[str, Path] = field(default_factory=dict)


def site_state(history, site: str, rules: AlertRules = AlertRules(), progress: bool = False):
    """``(site record, window grid, AOI mask, state, events)``: the replayed alert state of a site,
    the reviewers' rejections applied."""
    from sandwatch.monitor.history_alerts import rejected_keys

    rec, wgrid, aoi, dates = site_series(history, site, rules, progress)
    state = PixelAlerts(aoi.shape, wgrid.pixel_area_m2, rules, rejected_keys(history, rec.id))
    events = []
    for date, mine, observed, prob in dates:
        events += state.update(date, mine, observed, prob)
    return rec, wgrid, aoi, state, events


def site_series(history, site: str, rules: AlertRules = AlertRules(), progress: bool = False):
    """``(site record, window grid, AOI mask, dates)``: a site's observations as the alert model
    reads them, in date order: an iterator of ``(date, mine, observed, probability)`` on the AOI
    window (gap dates left out when ``rules.skip_gap_dates``), read one date at a time."""
    from sandwatch.aoi import rasterize_aoi
    from sandwatch.monitor.run import _site_grid

    rec = history.site(site)
    if rec is None:
        raise SandwatchError.about(history.url if history.path is None else history.path,
                                   f"has no site {site!r}", "run `sandwatch monitor` for it first, or check --site")
    grid = _site_grid(rec)
    window = Window(*rec.window)
    aoi = rasterize_aoi(shapely.from_wkt(rec.aoi_wkt), grid, window)
    return rec, grid.window_grid(window), aoi, _read_dates(history, rec, site, aoi, rules, progress)


def _read_dates(history, rec, site: str, aoi, rules: AlertRules, progress: bool):
    from tqdm.auto import tqdm

    from sandwatch.monitor.run import read_observation_raster

    for o in tqdm(history.observations(rec.id), desc=f"alerts {site}", unit="date", disable=not progress):
        if o["gap"] and rules.skip_gap_dates:
            continue
        raster = Path(o["observation_raster"] or "")
        if not raster.is_file():
            raise SandwatchError.about(raster, f"the observation raster of {site} on {o['date']} is missing",
                                       "run `sandwatch monitor` again with that date's scene and the same -o")
        mine, observed, prob = read_observation_raster(raster, probability=True)
        yield o["date"], mine & aoi, observed & aoi, prob


def update_alerts(db: str | os.PathLike, site: str, out_dir: str | os.PathLike, rules: AlertRules = AlertRules(),
                  *, layers: bool = True, progress: bool = False) -> AlertsResult:
    """Replay the site's history, record its new alert events and (``layers``) write its layers
    to ``out_dir`` (see :mod:`sandwatch.alerts.layers`)."""
    from sandwatch.monitor.history import History
    from sandwatch.monitor.history_alerts import events as read_events
    from sandwatch.monitor.history_alerts import record_events

    history = History(db, must_exist=True)
    try:
        rec, wgrid, aoi, state, events = site_state(history, site, rules, progress)
        result = AlertsResult(site=site, state=state)
        if not state.dates:
            return result
        stored = {(r["key"], r["status"]) for r in read_events(history, rec.id)}
        # only events not recorded by an earlier run are outlined (the replay raises them all again)
        new = [event_row(e, wgrid) for e in events if (e.key, e.status) not in stored]
        result.added_events = record_events(history, rec.id, new)
        result.events = read_events(history, rec.id)
        if layers:
            result.paths = write_layers(Path(out_dir), state, wgrid, aoi, site)
        return result
    finally:
        history.close()
