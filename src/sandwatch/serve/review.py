"""Alert review: list the monitoring alerts, record a reviewer's decision.

The web app talks to :class:`ReviewStore` only (two methods: :meth:`~ReviewStore.alerts` and
:meth:`~ReviewStore.decide`), so the storage can be re-pointed when the monitoring history
changes. :class:`HistoryReviews` implements it on the current ``sandwatch.monitor.history``:

* alerts are read with ``History.sites()`` / ``History.alerts(site_id)``;
* decisions go to the history's ``alert_decisions`` table
  (:data:`sandwatch.monitor.history_alerts.alert_decisions`, created with the history); each decision is a new row
  (``alert_id``, ``decision``, ``comment``, ``reviewer``, ``decided_at`` UTC): the latest one
  is the alert's state, earlier ones are its audit trail. Writes use the history's write
  connections (``BEGIN IMMEDIATE`` on SQLite), like the monitor's own.

``sandwatch monitor report`` prints the latest decision under each open alert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Protocol

from sqlalchemy import select

from sandwatch.errors import SandwatchError
from sandwatch.monitor.history import alerts as alerts_table
from sandwatch.monitor.history_alerts import add_review, alert_events, events, latest_decisions, remove_review
from sandwatch.monitor.history_alerts import alert_decisions as reviews

DECISIONS = ("accepted", "rejected", "needs field check")
MAX_COMMENT = 2000
MAX_REVIEWER = 100


@dataclass
class Decision:
    decision: str
    comment: str
    reviewer: str
    decided_at: str


@dataclass
class AlertItem:
    id: str                  #: store-wide id (``h0-12``: history 0, alert 12)
    site: str
    kind: str
    region: int
    date: str
    first_seen: str
    area_ha: float
    latitude: float | None
    longitude: float | None
    geometry: dict | None
    review: Decision | None
    #: pixel alerts (``sandwatch.alerts``): their confidence 0..1; None for the monitor's region alerts
    confidence: float | None = None
    pixel: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class ReviewStore(Protocol):
    def alerts(self) -> list[AlertItem]: ...

    def decide(self, alert_id: str, decision: str, comment: str, reviewer: str) -> Decision: ...


def check_decision(decision: str, comment: str, reviewer: str) -> tuple[str, str, str]:
    if decision not in DECISIONS:
        raise SandwatchError.about("decision", f"unknown decision {decision[:40]!r}", f"use one of {', '.join(DECISIONS)}")
    reviewer = " ".join(str(reviewer).split())
    if not reviewer:
        raise SandwatchError.about("reviewer", "is empty", "type your name in the reviewer box")
    if len(reviewer) > MAX_REVIEWER or len(comment) > MAX_COMMENT:
        raise SandwatchError.about("review", "reviewer or comment too long",
                                   f"at most {MAX_REVIEWER} and {MAX_COMMENT} characters")
    return decision, str(comment), reviewer


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


class HistoryReviews:
    """:class:`ReviewStore` over one or more monitoring histories (SQLite paths or URLs)."""

    def __init__(self, urls: list[str]):
        from sandwatch.monitor.history import History

        self.histories = [History(u, must_exist=u.startswith("sqlite:///")) for u in urls]

    def close(self) -> None:
        for h in self.histories:
            h.close()


    def alerts(self) -> list[AlertItem]:
        import json

        items = []
        for i, h in enumerate(self.histories):
            latest = {k: Decision(r["decision"], r["comment"], r["reviewer"], r["decided_at"].isoformat())
                      for k, r in latest_decisions(h).items()}
            for site in h.sites():
                for a in h.alerts(site.id):
                    items.append(AlertItem(
                        id=f"h{i}-{a['id']}", site=site.name, kind=a["kind"], region=a["region"],
                        date=a["date"].isoformat(), first_seen=a["first_seen"].isoformat(),
                        area_ha=round(a["area_m2"] / 1e4, 4), latitude=a["latitude"], longitude=a["longitude"],
                        geometry=json.loads(a["geojson"]) if a["geojson"] else None, review=latest.get(a["id"])))
                latest_event: dict[str, dict] = {}
                for e in events(h, site.id):                  # ordered by date: the last row is the state
                    latest_event[e["key"]] = e
                for key, e in latest_event.items():
                    items.append(AlertItem(
                        id=f"h{i}-e{e['id']}", site=site.name, kind=f"pixel alert, {e['status']}", region=e["region"],
                        date=e["date"].isoformat(), first_seen=e["first_date"].isoformat(),
                        area_ha=round(e["area_m2"] / 1e4, 4), latitude=e["latitude"], longitude=e["longitude"],
                        geometry=json.loads(e["geojson"]) if e["geojson"] else None,
                        review=latest.get((site.id, key)), confidence=round(float(e["confidence"]), 3), pixel=True))
        return items

    def _split(self, alert_id: str):
        """(history, region alert id or None, (site id, event key) or None)."""
        try:
            h, a = str(alert_id).removeprefix("h").split("-")
            history, pixel = self.histories[int(h)], a.startswith("e")
            aid = int(a.removeprefix("e"))
        except (ValueError, IndexError):
            raise SandwatchError.about(f"alert {str(alert_id)[:40]}", "is not in the monitoring history",
                                       "reload the page") from None
        table = alert_events if pixel else alerts_table
        cols = [alert_events.c.site_id, alert_events.c.key] if pixel else [alerts_table.c.id]
        with history.engine.connect() as conn:
            row = conn.execute(select(*cols).where(table.c.id == aid)).first()
        if row is None:
            raise SandwatchError.about(f"alert {alert_id}", "is not in the monitoring history", "reload the page")
        return (history, None, (row[0], row[1])) if pixel else (history, aid, None)

    def decide(self, alert_id: str, decision: str, comment: str, reviewer: str) -> Decision:
        decision, comment, reviewer = check_decision(decision, comment, reviewer)
        history, aid, region = self._split(alert_id)
        now = _utcnow()
        writer = history.engine.execution_options(sandwatch_write=True)   # BEGIN IMMEDIATE, as the monitor writes
        site_id, key = region if region else (None, None)
        with writer.begin() as conn:   # the decision and what the alert model reads of it: one transaction
            conn.execute(reviews.insert().values(alert_id=aid, site_id=site_id, event_key=key, decision=decision,
                                                 comment=comment, reviewer=reviewer, decided_at=now))
            if region:     # the alert model skips a rejected region from its next update on
                if decision == "rejected":
                    add_review(history, site_id, key, reviewer, comment or None, conn=conn)
                else:
                    remove_review(history, site_id, key, conn=conn)
        return Decision(decision, comment, reviewer, now.isoformat())
