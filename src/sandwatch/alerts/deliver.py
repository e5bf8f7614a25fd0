"""``deliver``: alert events -> subscribers, through the outbox of the history database.

1. **Plan.** For every site (or those asked for) and every alert event in the history, each
   subscriber whose filters match (sites, lon/lat area, ``min_status``: ``confirmed`` gets
   confirmed events only, ``provisional`` gets every event; ``min_area_ha``) gets one message
   per e-mail address and per webhook URL. The message's id is a digest of the database,
   site, alert key, status, subscriber, channel and target: the same on every run.
2. **Record before sending.** E-mail PNGs are written (atomically) to ``OUT/png/``, then
   the messages not yet in the outbox are inserted as ``pending`` (``ON CONFLICT DO
   NOTHING``: a message is recorded once, whatever runs at once).
3. **Feeds.** Subscribers with ``feed: DIR`` get ``DIR/NAME.geojson`` and ``DIR/NAME.csv``
   with every event they match (rewritten atomically each run).
4. **Send.** Every pending message (and every ``sending`` one whose sender process died) is
   claimed (one run wins), sent (:mod:`sandwatch.alerts.send`) and marked ``sent``; a failure
   puts it back to ``pending`` with the error, for the next run. When the SMTP server cannot
   be reached, the run's other e-mails are not tried (they stay pending); webhooks go on.

``dry_run=True`` does steps 1 and 3's planning only: it returns (and the CLI prints) what
would be sent and written, and changes nothing: no PNG, no outbox row, no feed, no send.

Exactly once: a message is marked ``sent`` right after the server accepted it. A crash before
the server's acceptance leaves it pending or ``sending`` with a dead sender: the next run sends
it (the server never took it). The one window left is between the server's acceptance and the
mark (one database commit, milliseconds): a crash exactly there sends it again with the same
``Message-ID`` / ``X-Sandwatch-Delivery`` id, by which receivers can drop the repeat.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandwatch.alerts.layers import event_feature
from sandwatch.alerts.model import EVENT_RANK
from sandwatch.alerts.subscribers import Subscriber, Subscribers
from sandwatch.io import atomic_output, ensure_writable_dir, make_dirs
from sandwatch.vectors import write_feature_collection

FEED_COLUMNS = ["site", "key", "region", "status", "date", "first_date", "last_date", "count", "area_ha",
                "confirmed_ha", "mean_prob", "confidence", "latitude", "longitude"]


@dataclass
class DeliveryReport:
    planned: list[dict[str, Any]] = field(default_factory=list)   #: messages not yet sent (dry run: would be)
    recorded: int = 0                                              #: added to the outbox by this run
    sent: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    feeds: list[Path] = field(default_factory=list)


def matches(sub: Subscriber, site: str, event: dict[str, Any]) -> bool:
    if sub.sites is not None and site not in sub.sites:
        return False
    if EVENT_RANK[event["status"]] < EVENT_RANK[sub.min_status]:
        return False
    if event["area_m2"] < sub.min_area_ha * 1e4:
        return False
    if sub.area is not None:
        lon, lat = event["longitude"], event["latitude"]
        if lon is None or not (sub.area[0] <= lon <= sub.area[2] and sub.area[1] <= lat <= sub.area[3]):
            return False
    return True


def _message_id(db_url: str, site: str, event: dict, sub: str, channel: str, target: str) -> str:
    text = "\x1f".join([db_url, site, event["key"], event["status"], sub, channel, target])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def plan(history, subscribers: Subscribers, sites: list[str] | None = None
         ) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, dict]]], dict[str, Any]]:
    """``(messages, events per subscriber (site, event), context per site)``."""
    from sandwatch.monitor.history_alerts import events as read_events

    url = history.engine.url.render_as_string(hide_password=True)
    msgs: list[dict[str, Any]] = []
    per_sub: dict[str, list[tuple[str, dict]]] = {s.name: [] for s in subscribers.subscribers}
    ctx: dict[str, Any] = {}
    for rec in history.sites():
        if sites is not None and rec.name not in sites:
            continue
        ctx[rec.name] = rec
        for ev in read_events(history, rec.id):
            feature = event_feature(ev, rec.name)
            for sub in subscribers.subscribers:
                if not matches(sub, rec.name, ev):
                    continue
                per_sub[sub.name].append((rec.name, ev))
                targets = [("email", a) for a in sub.emails] + [("webhook", w.url) for w in sub.webhooks]
                for channel, target in targets:
                    mid = _message_id(url, rec.name, ev, sub.name, channel, target)
                    payload = {"id": mid, "subscriber": sub.name, "site": rec.name, "event": feature,
                               "sent_by": "sandwatch"}
                    png = (f"{_slug(rec.name)}-{_slug(ev['key'])}-{ev['status']}.png" if channel == "email"
                           else None)
                    msgs.append({"event_id": ev["id"], "subscriber": sub.name, "channel": channel, "target": target,
                                 "payload": json.dumps(payload, sort_keys=True), "attachment": png,
                                 "_site": rec.name, "_event": ev})
    return msgs, per_sub, ctx


def write_feed(folder: Path, name: str, rows: list[tuple[str, dict]]) -> list[Path]:
    """``FOLDER/NAME.geojson`` and ``FOLDER/NAME.csv`` of a subscriber's events, atomically."""
    make_dirs(folder)
    feats, table = [], []
    for site, ev in rows:
        feats.append(event_feature(ev, site))
        props = feats[-1]["properties"]
        table.append([props[c] if props[c] is not None else "" for c in FEED_COLUMNS])
    gj = write_feature_collection(folder / f"{_slug(name)}.geojson", feats)
    path = folder / f"{_slug(name)}.csv"
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FEED_COLUMNS)
            w.writerows(table)
    return [gj, path]


def deliver(db: str | os.PathLike, subscribers: Subscribers, out_dir: str | os.PathLike, *,
            sites: list[str] | None = None, dry_run: bool = False, progress: bool = False,
            on_sent: Callable[[dict], None] | None = None, sleep: Callable[[float], None] | None = None
            ) -> DeliveryReport:
    """See the module doc. ``on_sent(message)`` is called after each message is marked sent."""
    from sandwatch.monitor.history import History
    from sandwatch.monitor import history_alerts as hx

    history = History(db, must_exist=True)
    report = DeliveryReport()
    try:
        msgs, per_sub, ctx = plan(history, subscribers, sites)
        done = {(m["event_id"], m["subscriber"], m["channel"], m["target"]): m["status"] for m in hx.messages(history)}
        report.planned = [m for m in msgs
                          if done.get((m["event_id"], m["subscriber"], m["channel"], m["target"])) != "sent"]
        if dry_run:
            report.feeds = [Path(s.feed) / f"{_slug(s.name)}.{ext}" for s in subscribers.subscribers if s.feed
                            for ext in ("geojson", "csv")]
            return report
        png_dir = Path(out_dir) / "png"
        for sub in subscribers.subscribers:     # a missing secret or an unwritable folder stops the run
            for hook in sub.webhooks:           # before anything is recorded
                hook.key()
            if sub.feed is not None:
                ensure_writable_dir(sub.feed, f"feed of subscriber {sub.name}")
        ensure_writable_dir(png_dir)
        new = [m for m in msgs if (m["event_id"], m["subscriber"], m["channel"], m["target"]) not in done]
        observations: dict[str, list] = {}      # per site, read once for all its figures
        for m in new:                           # recorded messages keep the PNG they were recorded with
            if m["attachment"] is None:
                continue
            png = png_dir / m["attachment"]
            m["attachment"] = str(png)
            if not png.is_file():
                rec = ctx[m["_site"]]
                if rec.name not in observations:
                    observations[rec.name] = history.observations(rec.id)
                _png(rec, observations[rec.name], m["_event"], png)
        report.recorded = hx.enqueue(history, [{k: v for k, v in m.items() if not k.startswith("_")} for m in new])
        for sub in subscribers.subscribers:
            if sub.feed is not None:
                report.feeds += write_feed(Path(sub.feed), sub.name, per_sub[sub.name])
        _send_pending(history, subscribers, report, on_sent, sleep, progress)
        return report
    finally:
        history.close()


def _png(rec, observations: list[dict], event: dict, path: Path) -> None:
    from sandwatch.alerts.figure import alert_png
    from sandwatch.grid import Window
    from sandwatch.monitor.run import _site_grid

    make_dirs(path.parent)
    alert_png(path, event, observations, _site_grid(rec), Window(*rec.window), rec.name)


def _send_pending(history, subscribers: Subscribers, report: DeliveryReport, on_sent, sleep, progress) -> None:
    import time

    from tqdm.auto import tqdm

    from sandwatch.alerts.send import DeliveryError, Mailer, post_webhook
    from sandwatch.monitor import history_alerts as hx

    by_name = {s.name: s for s in subscribers.subscribers}
    mailer = Mailer(subscribers.smtp) if subscribers.smtp is not None else None
    smtp_down: str | None = None
    try:
        for m in tqdm(hx.claimable(history), desc="deliver", unit="message", disable=not progress):
            sub = by_name.get(m["subscriber"])
            if sub is None:
                report.failed.append((m, f"subscriber {m['subscriber']!r} is no longer in the subscribers file"))
                continue
            if m["channel"] == "email" and (mailer is None or smtp_down):
                report.failed.append((m, smtp_down or "no smtp section in the subscribers file"))
                continue
            if not hx.claim(history, m):
                continue                               # another run took it
            payload = json.loads(m["payload"])
            try:
                if m["channel"] == "email":
                    mailer.send(payload, m["target"], m["attachment"])
                else:
                    hook = next((w for w in sub.webhooks if w.url == m["target"]), None)
                    if hook is None:
                        raise DeliveryError(f"{m['target']} is no longer a webhook of {sub.name!r}")
                    post_webhook(m["target"], payload, hook.key(), subscribers.webhook, sleep=sleep or time.sleep)
            except DeliveryError as err:
                hx.release(history, m["id"], str(err))
                report.failed.append((m, str(err)))
                if m["channel"] == "email" and mailer.smtp is None:
                    smtp_down = str(err)               # cannot connect: leave the other e-mails for the next run
                continue
            hx.mark_sent(history, m["id"])
            report.sent.append(m)
            if on_sent is not None:
                on_sent(m)
    finally:
        if mailer is not None:
            mailer.close()
