"""``site_report``: per site of a history database, the latest area, the trend and open alerts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sandwatch.monitor.history import History
from sandwatch.monitor.series import Trend, trend


@dataclass
class SiteSummary:
    site: str
    latitude: float | None
    longitude: float | None
    dates: int
    gaps: int
    latest_date: Any
    latest_ha: float | None
    trend: Trend
    open_alerts: list[dict[str, Any]] = field(default_factory=list)


def alert_text(a: dict[str, Any]) -> str:
    """One alert in words, areas in hectares: a new region is "new, X ha"; growth is measured
    against the previous observation of the same pixels."""
    area = a["area_m2"] / 1e4
    what = {"new": f"new, {area:.2f} ha",
            "growth": f"grew {a['growth_m2'] / 1e4:+.2f} ha since the previous observation, now {area:.2f} ha",
            "inactive": "no mining seen any more (inactive)",
            "resumed": f"mining again (resumed), {area:.2f} ha"}.get(a["kind"], f"{a['kind']}, {area:.2f} ha")
    where = "" if a.get("latitude") is None else f" at {a['latitude']:.5f}N {a['longitude']:.5f}E"
    return f"region {a['region']}: {what} on {a['date']} (first seen {a['first_seen']}){where}"


def open_alerts(alert_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest alert of every region whose latest alert is not "inactive"."""
    latest: dict[int, dict] = {}
    for a in sorted(alert_rows, key=lambda a: (a["date"], a["id"])):
        latest[a["region"]] = a
    return [a for _, a in sorted(latest.items()) if a["kind"] != "inactive"]


def latest_reviews(engine) -> dict[int, dict[str, Any]]:
    """Latest decision per alert id from the history's ``alert_decisions`` (what reviewers
    decided in ``sandwatch serve``) of the monitor's region alerts; empty when none was reviewed."""
    from sandwatch.monitor.history_alerts import latest_decisions

    return {k: row for k, row in latest_decisions(engine).items() if isinstance(k, int)}


def site_report(db: str | os.PathLike) -> list[SiteSummary]:
    """Summaries of all sites in a history database (SQLite path or SQLAlchemy URL); each open
    alert carries its latest review (``review``: decision, reviewer, decided_at, comment) or None."""
    history = History(db, must_exist=True)
    try:
        reviews = latest_reviews(history.engine)
        out = []
        for rec in history.sites():
            obs = history.observations(rec.id)
            valid = [(o["date"], o["mined_km2"]) for o in obs if not o["gap"] and o["mined_km2"] is not None]
            out.append(SiteSummary(
                site=rec.name, latitude=rec.latitude, longitude=rec.longitude, dates=len(obs),
                gaps=sum(1 for o in obs if o["gap"]), latest_date=valid[-1][0] if valid else None,
                latest_ha=valid[-1][1] * 100.0 if valid else None, trend=trend(valid),
                open_alerts=[{**a, "review": reviews.get(a["id"])} for a in open_alerts(history.alerts(rec.id))]))
        return out
    finally:
        history.close()


def format_report(summaries: list[SiteSummary]) -> str:
    """Plain-text table of :func:`site_report`, with one line per open alert."""
    if not summaries:
        return "no sites in this database yet (run `sandwatch monitor` first)"
    lines = [f"{'site':<20} {'latest valid':<12} {'mined ha':>9} {'dates':>5} {'gaps':>4} {'open alerts':>11}  trend"]
    for s in summaries:
        ha = "-" if s.latest_ha is None else f"{s.latest_ha:.2f}"
        lines.append(f"{s.site:<20} {str(s.latest_date or '-'):<12} {ha:>9} {s.dates:>5} {s.gaps:>4} "
                     f"{len(s.open_alerts):>11}  {s.trend.text()}")
        for a in s.open_alerts:
            lines.append(f"  {alert_text(a)}")
            r = a.get("review")
            if r:
                lines.append(f"    reviewed: {r['decision']} by {r['reviewer']} on {r['decided_at']:%Y-%m-%d %H:%M} UTC"
                             + (f": {' '.join(r['comment'].split())}" if r["comment"] else ""))
    return "\n".join(lines)
