"""The alert tables of the history database: alert events, reviews and the delivery outbox.

* ``alert_events``: one per (site, region key, status), unique: the events of
  :mod:`sandwatch.alerts` (provisional, confirmed, expired) with their dates, figures and
  outline. Recording an event twice (a re-run, or two runs at once) adds nothing.
* ``alert_reviews``: a reviewer's verdict on a pixel-alert region (``rejected``, ``sandwatch
  alerts reject``), one per (site, key): the alert model skips rejected regions.
* ``alert_decisions``: decisions of the web map's reviewers on the monitor's region alerts
  (``accepted``, ``rejected``, ``needs field check``, a comment, who, when UTC), append-only: the
  latest row is the alert's state, earlier ones its audit trail (``sandwatch serve`` writes,
  ``sandwatch monitor report`` prints).
* ``outbox``: one message per (event, subscriber, channel, target), unique. A message is
  recorded (``pending``) before anything is sent; a sender *claims* it (``sending``, with its
  PID, host and process start time) in a conditional update that only one run can win, sends
  it, then marks it ``sent``. A message whose sender died while it was ``sending`` is claimed
  again by the next run (see :func:`claim`); a failed send puts it back to ``pending`` with
  the error and the number of attempts.

All writes are single transactions through :meth:`History._writer` (SQLite: ``BEGIN
IMMEDIATE``) and :func:`~sandwatch.monitor.history.insert_ignore` (``ON CONFLICT DO
NOTHING``), so concurrent runs on SQLite or PostgreSQL never record a row twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from sqlalchemy import (Column, Date, DateTime, Float, ForeignKey, Integer, String, Table, Text, UniqueConstraint,
                        and_, select, update)

from sandwatch.monitor.history import History, _now, insert_ignore, metadata, outline_columns

alert_events = Table(
    "alert_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False, index=True),
    Column("key", String(80), nullable=False),
    Column("region", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("date", Date, nullable=False),
    Column("first_date", Date, nullable=False),
    Column("last_date", Date, nullable=False),
    Column("count", Integer, nullable=False),
    Column("area_m2", Float, nullable=False),
    Column("confirmed_m2", Float, nullable=False),
    Column("mean_prob", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    *outline_columns(),
    Column("created", DateTime, nullable=False),
    UniqueConstraint("site_id", "key", "status", name="uq_alert_event"),
)

alert_reviews = Table(
    "alert_reviews", metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False, index=True),
    Column("key", String(80), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("note", Text),
    Column("created", DateTime, nullable=False),
    UniqueConstraint("site_id", "key", name="uq_alert_review"),
)

alert_decisions = Table(
    "alert_decisions", metadata,
    Column("id", Integer, primary_key=True),
    # a region alert of the monitor (alert_id), or a pixel-alert region (site_id + event_key)
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=True, index=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=True, index=True),
    Column("event_key", String(80), nullable=True),
    Column("decision", String(24), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("reviewer", String(100), nullable=False),
    Column("decided_at", DateTime, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("alert_events.id"), nullable=False, index=True),
    Column("subscriber", String(200), nullable=False),
    Column("channel", String(16), nullable=False),        # email | webhook
    Column("target", Text, nullable=False),               # address or URL
    Column("payload", Text, nullable=False),              # JSON: what is sent (the same on every attempt)
    Column("attachment", Text),                           # PNG of an e-mail
    Column("status", String(16), nullable=False),         # pending | sending | sent
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", Text),                           # JSON {pid, host, start} while sending
    Column("last_error", Text),
    Column("created", DateTime, nullable=False),
    Column("sent_at", DateTime),
    UniqueConstraint("event_id", "subscriber", "channel", "target", name="uq_outbox"),
)


def record_events(history: History, site_id: int, rows: list[dict[str, Any]]) -> int:
    """Record alert events not recorded yet; returns how many were added."""
    if not rows:
        return 0
    added = 0
    with history._writer.begin() as conn:
        for row in rows:
            added += insert_ignore(conn, alert_events, dict(site_id=site_id, created=_now(), **row),
                                   ["site_id", "key", "status"]) is not None
    return added


def events(history: History, site_id: int | None = None, ids: list[int] | None = None) -> list[dict[str, Any]]:
    q = select(alert_events).order_by(alert_events.c.site_id, alert_events.c.date, alert_events.c.id)
    if site_id is not None:
        q = q.where(alert_events.c.site_id == site_id)
    if ids is not None:
        q = q.where(alert_events.c.id.in_(ids))
    with history.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


@contextlib.contextmanager
def _within(history: History, conn):
    """``conn`` when the caller's transaction is given, else a transaction of its own."""
    if conn is not None:
        yield conn
        return
    with history._writer.begin() as own:
        yield own


def add_review(history: History, site_id: int, key: str, reviewer: str, note: str | None = None,
               verdict: str = "rejected", conn=None) -> bool:
    """Record a reviewer's verdict on a region; False when one was already recorded. ``conn``:
    inside that transaction (with the decision that caused it), else in one of its own."""
    with _within(history, conn) as c:
        return insert_ignore(c, alert_reviews, dict(site_id=site_id, key=key, verdict=verdict, reviewer=reviewer,
                                                    note=note, created=_now()), ["site_id", "key"]) is not None


def latest_decisions(history) -> dict:
    """The latest reviewer decision (a row of ``alert_decisions``) per region alert id of the
    monitor, and per ``(site id, event key)`` of a pixel-alert region (``history``: a
    :class:`History` or its engine)."""
    engine = getattr(history, "engine", history)
    q = select(alert_decisions).order_by(alert_decisions.c.decided_at, alert_decisions.c.id)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return {(r["alert_id"] if r["alert_id"] is not None else (r["site_id"], r["event_key"])): dict(r) for r in rows}


def remove_review(history: History, site_id: int, key: str, conn=None) -> bool:
    """Withdraw a rejection (a reviewer changed their mind); False when there was none. ``conn``:
    inside that transaction, else in one of its own."""
    with _within(history, conn) as c:
        return c.execute(alert_reviews.delete().where(
            (alert_reviews.c.site_id == site_id) & (alert_reviews.c.key == key)).returning(alert_reviews.c.id)
        ).first() is not None


def rejected_keys(history: History, site_id: int) -> set[str]:
    with history.engine.connect() as conn:
        rows = conn.execute(select(alert_reviews.c.key).where(
            (alert_reviews.c.site_id == site_id) & (alert_reviews.c.verdict == "rejected"))).all()
    return {r[0] for r in rows}


# ---- the outbox ------------------------------------------------------------------------------
def enqueue(history: History, messages: list[dict[str, Any]]) -> int:
    """Record messages (event_id, subscriber, channel, target, payload, attachment) as
    pending unless already recorded; returns how many were added."""
    added = 0
    if not messages:
        return 0
    with history._writer.begin() as conn:
        for m in messages:
            added += insert_ignore(conn, outbox, dict(status="pending", attempts=0, created=_now(), **m),
                                   ["event_id", "subscriber", "channel", "target"]) is not None
    return added


def messages(history: History, *statuses: str) -> list[dict[str, Any]]:
    """Outbox rows (those of the given statuses, or all), in the order they were recorded."""
    q = select(outbox).order_by(outbox.c.id)
    if statuses:
        q = q.where(outbox.c.status.in_(statuses))
    with history.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def me() -> dict[str, Any]:
    from sandwatch.predict.lock import process_start

    return {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid())}


def _sender_dead(claimed_by: str | None) -> bool:
    """A ``sending`` claim whose process is gone (on this host): the message may go again."""
    from sandwatch.predict.lock import owner_alive

    try:
        info = json.loads(claimed_by or "{}")
    except ValueError:
        return True
    if info.get("host") != socket.gethostname():
        return False                     # another host's sender: never taken over from here
    return not owner_alive(info)


def claimable(history: History) -> list[dict[str, Any]]:
    """Messages to send: pending ones, and ``sending`` ones whose sender died."""
    return [m for m in messages(history, "pending", "sending")
            if m["status"] == "pending" or _sender_dead(m["claimed_by"])]


def claim(history: History, message: dict[str, Any]) -> bool:
    """Take a message for sending: True for exactly one run, whatever runs try at once."""
    mine = json.dumps(me())
    cond = outbox.c.status == "pending"
    if message["status"] == "sending":          # its sender died: compare the claim we saw
        cond = and_(outbox.c.status == "sending", outbox.c.claimed_by == message["claimed_by"])
    with history._writer.begin() as conn:
        won = conn.execute(update(outbox).where(and_(outbox.c.id == message["id"], cond))
                           .values(status="sending", claimed_by=mine, attempts=outbox.c.attempts + 1)
                           .returning(outbox.c.id)).scalar()
    return won is not None


def mark_sent(history: History, message_id: int) -> None:
    with history._writer.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == message_id)
                     .values(status="sent", sent_at=_now(), claimed_by=None, last_error=None))


def release(history: History, message_id: int, error: str) -> None:
    """A send failed: back to pending (the next run tries again), with the error."""
    with history._writer.begin() as conn:
        conn.execute(update(outbox).where(and_(outbox.c.id == message_id, outbox.c.status == "sending"))
                     .values(status="pending", claimed_by=None, last_error=error[:500]))
