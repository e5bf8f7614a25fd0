"""``sandwatch alerts``: pixel alert state, layers, events; delivery; reviews."""

from __future__ import annotations

from pathlib import Path

import click

CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

HELP = """Alerts authorities can act on, from a monitoring history (after `sandwatch monitor`).

\b
Per pixel of a site, over its dates: a detection starts a PROVISIONAL alert; when the next
--confirm-k clear observations agree (detected again, no miss between; clouds and nodata
do not count) the pixel has AGREED; --expire-after misses in a row EXPIRE a provisional one;
a reviewer can REJECT a region (`sandwatch alerts reject`). Alert regions (pixels sharing an
edge) of at least --mmu-ha raise each event (provisional, confirmed, expired) once. A region
is CONFIRMED (and its agreed pixels with it) when its agreed pixels reach --mmu-ha and the
mean probability of its detections reaches --confirm-prob: a look-alike the model flags on
every date at a middling probability stays provisional. The right --confirm-prob depends on
how your model spreads its probabilities (benchmarks/alerts.py --checkpoint measures it).
`sandwatch monitor` runs `update` for its site after every run (layers in OUT_DIR/alerts/).
\b
Sub-commands:
  update    replay a site's history: record new events, write the layers (COGs + GeoJSON)
  calibrate choose --confirm-prob for your model from the reviewers' accepted/rejected alerts
  deliver   send events to subscribers (e-mail, webhook, feed files) through the outbox
  reject    mark an alert region as rejected by a reviewer
  list      events and the outbox of a history database
\b
Examples:
  sandwatch alerts update monitor/history.sqlite --site site00 -o monitor/alerts
  sandwatch alerts deliver monitor/history.sqlite --subscribers subscribers.yaml -o monitor/alerts --dry-run
  sandwatch alerts reject monitor/history.sqlite --site site00 --key 2021-02-09:40:17 --by "A. Officer"
  sandwatch alerts calibrate monitor/history.sqlite --precision 0.95
  sandwatch alerts list postgresql+psycopg://sandwatch@dbhost/history
"""


def rule_options(f):
    """--confirm-k, --confirm-prob, --expire-after, --mmu-ha (shared with `sandwatch monitor`)."""
    from sandwatch.alerts.model import AlertRules

    f = click.option("--confirm-prob", type=float, default=AlertRules.confirm_prob, show_default=True,
                     help="Mean probability of a region's detections needed to confirm it (0: time alone).")(f)
    f = click.option("--mmu-ha", type=float, default=0.2, show_default=True,
                     help="Minimum mapping unit of an alert region, hectares (0.2 ha = 20 px of 10 m).")(f)
    f = click.option("--expire-after", type=int, default=3, show_default=True,
                     help="Misses in a row that expire a provisional pixel.")(f)
    f = click.option("--confirm-k", type=int, default=2, show_default=True,
                     help="Later clear observations in a row that must agree to confirm a pixel.")(f)
    return f


def make_rules(confirm_k: int, expire_after: int, mmu_ha: float, confirm_prob: float):
    from sandwatch.alerts.model import AlertRules
    from sandwatch.errors import SandwatchError

    try:
        return AlertRules(confirm_k=confirm_k, expire_n=expire_after, min_area_m2=mmu_ha * 1e4,
                          confirm_prob=confirm_prob)
    except ValueError as err:
        raise SandwatchError.about("sandwatch alerts", str(err),
                                   "check --confirm-k, --confirm-prob, --expire-after and --mmu-ha") from None


def echo_update(res) -> None:
    n = {s: sum(1 for e in res.events if e["status"] == s) for s in ("provisional", "confirmed", "expired")}
    click.echo(f"alerts of {res.site}: {res.added_events} new event(s); {n['provisional']} provisional, "
               f"{n['confirmed']} confirmed, {n['expired']} expired in all")
    if res.paths:
        click.echo(f"  layers -> {res.paths['status'].parent} ({res.paths['status'].name.split('.')[0]})")


def echo_delivery(rep, dry_run: bool) -> None:
    if dry_run:
        for m in rep.planned:
            verb = "e-mail" if m["channel"] == "email" else "POST to"
            ev = m["_event"]
            click.echo(f"would {verb} {m['target']} ({m['subscriber']}): {m['_site']} {ev['status']} "
                       f"{ev['key']}, {ev['area_m2'] / 1e4:.2f} ha")
        for p in rep.feeds:
            click.echo(f"would write feed {p}")
        click.echo(f"dry run: {len(rep.planned)} message(s) would be sent; nothing recorded or sent")
        return
    click.echo(f"delivery: {len(rep.sent)} sent, {rep.recorded} newly recorded, {len(rep.failed)} waiting "
               f"(retried on the next run)")
    for m, err in rep.failed:
        click.echo(f"  not sent to {m['target']}: {err}")


def load_subs(path):
    from sandwatch.alerts.subscribers import load_subscribers

    return load_subscribers(path) if path is not None else None


@click.group("alerts", help=HELP, context_settings=CTX)
def alerts():
    pass


@alerts.command("update", context_settings=CTX)
@click.argument("db")
@click.option("--site", required=True, help="Site name in the history.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the layers.")
@rule_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def update(db, site, out_dir, confirm_k, confirm_prob, expire_after, mmu_ha, quiet):
    """Replay a site's history; record its new alert events; write its layers to OUT_DIR.

    \b
    Layers (state as of the latest date, DATE), on the site's AOI window:
      DATE.status.tif       0 none, 1 provisional, 2 confirmed, 3 expired, 4 rejected (255 outside the AOI)
      DATE.first_date.tif   first detection, days since 2020-12-31 (as DIST-ALERT); -32768 none
      DATE.confidence.tif   0..100;   DATE.count.tif   detections
      DATE.alerts.geojson   alert regions: status, dates, count, area, mean probability, confidence
    Example:
      sandwatch alerts update monitor/history.sqlite --site site00 -o monitor/alerts
    """
    from sandwatch.alerts.stage import update_alerts
    from sandwatch.io import ensure_writable_dir

    rules = make_rules(confirm_k, expire_after, mmu_ha, confirm_prob)
    ensure_writable_dir(out_dir)
    echo_update(update_alerts(db, site, out_dir, rules, progress=not quiet))


@alerts.command("calibrate", context_settings=CTX)
@click.argument("db")
@click.option("--site", "sites", multiple=True, help="Only these sites (repeatable; default every reviewed site).")
@click.option("--precision", "target", type=click.FloatRange(0.0, 1.0), default=0.95, show_default=True,
              help="Precision the confirmed alerts should reach on the reviewed regions.")
@rule_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def calibrate_cmd(db, sites, target, confirm_k, confirm_prob, expire_after, mmu_ha, quiet):
    """Choose --confirm-prob for your model from your reviewers' decisions.

    Reviewed alert regions (accepted or rejected on the map, `sandwatch serve`; rejected with
    `sandwatch alerts reject`) say which alerts are mining. Each reviewed site is replayed once
    per gate (0 = time alone, 0.5 .. 0.95); the table shows, among the reviewed regions, how many
    each gate confirms, their precision and the share of accepted ones kept; the suggestion is
    the lowest gate reaching --precision. The other rules are the options' (--confirm-prob
    itself is not used). Judge a suggestion from fewer than 20 reviewed regions, or without
    both verdicts, as weak.

    \b
    Example:
      sandwatch alerts calibrate monitor/history.sqlite --precision 0.95
      sandwatch monitor ... --confirm-prob 0.8        # then use what it suggests
    """
    from sandwatch.alerts.calibrate import MIN_REVIEWED, calibrate

    rules = make_rules(confirm_k, expire_after, mmu_ha, confirm_prob)
    cal = calibrate(db, list(sites) or None, rules, target=target, progress=not quiet)
    click.echo(f"reviewed regions: {cal.accepted} accepted (mining), {cal.rejected} rejected")
    click.echo(f"{'gate':>5} {'confirmed':>9} {'accepted':>8} {'precision':>9} {'recall':>6}")
    for r in cal.rows:
        click.echo(f"{r.gate:>5.2f} {r.confirmed:>9} {r.accepted:>8} {r.precision:>9.3f} {r.recall:>6.3f}")
    if cal.missing:
        click.echo(f"{len(cal.missing)} reviewed region(s) no replay raised (rules changed since?): "
                   f"{', '.join(cal.missing[:5])}{' ...' if len(cal.missing) > 5 else ''}")
    if cal.suggested is None:
        click.echo(f"no gate reaches precision {target:g} on these reviews: the model's false alarms are as "
                   f"sure as its mines; review more, or improve the model")
    else:
        row = next(r for r in cal.rows if r.gate == cal.suggested)
        click.echo(f"suggested: --confirm-prob {cal.suggested:g} (precision {row.precision:.3f}, "
                   f"recall {row.recall:.3f} on the reviewed regions)")
    if cal.weak:
        click.echo(f"weak evidence: {cal.accepted + cal.rejected} reviewed region(s) (< {MIN_REVIEWED}, or only "
                   f"one verdict): review more before relying on it")


@alerts.command("deliver", context_settings=CTX)
@click.argument("db")
@click.option("--subscribers", "subs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Subscribers file (YAML).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the e-mails' PNGs.")
@click.option("--site", "sites", multiple=True, help="Only these sites (repeatable; default all).")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; record and send nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def deliver_cmd(db, subs, out_dir, sites, dry_run, quiet):
    """Send the alert events of a history database to subscribers.

    \b
    Each message is recorded in the database's outbox before it is sent and marked when the
    server accepted it: a killed run never loses one, and the next run sends only what is
    left. SMTP down: the e-mails stay in the outbox and go on the next run. Webhooks are
    POSTed as JSON with X-Sandwatch-Signature: sha256=HMAC-SHA256(secret, body) and
    X-Sandwatch-Delivery: ID, retried with back-off.
    \b
    Subscribers file:
      smtp: {host: smtp.example.org, port: 587, starttls: true, username: alerts,
             password_env: SANDWATCH_SMTP_PASSWORD, sender: sandwatch@example.org}
      webhook: {attempts: 4, backoff_seconds: 2, timeout_seconds: 10}
      subscribers:
        - name: district-office
          emails: [officer@example.org]
          webhooks: [{url: "https://example.org/hook", secret_env: HOOK_SECRET}]
          sites: [site00]                 # optional; area: [min_lon, min_lat, max_lon, max_lat]
          min_status: confirmed           # or provisional (every event)
          min_area_ha: 0.2
          feed: feeds/                    # optional: feeds/district-office.geojson and .csv
    Example:
      sandwatch alerts deliver monitor/history.sqlite --subscribers subs.yaml -o monitor/alerts --dry-run
    """
    from sandwatch.alerts.deliver import deliver

    subscribers = load_subs(subs)
    rep = deliver(db, subscribers, out_dir, sites=list(sites) or None, dry_run=dry_run, progress=not quiet)
    echo_delivery(rep, dry_run)


@alerts.command("reject", context_settings=CTX)
@click.argument("db")
@click.option("--site", required=True)
@click.option("--key", required=True, help="The alert's key (FIRST-DATE:ROW:COL, see `sandwatch alerts list`).")
@click.option("--by", "reviewer", required=True, help="Who reviewed it.")
@click.option("--note", default=None)
def reject(db, site, key, reviewer, note):
    """Mark an alert region as rejected (not mining): its pixels get status 4, no more events.

    \b
    Takes effect on the next `sandwatch alerts update` (or monitor run) of the site.
    Example:
      sandwatch alerts reject monitor/history.sqlite --site site00 --key 2021-02-09:40:17 --by "A. Officer"
    """
    from sandwatch.errors import SandwatchError
    from sandwatch.monitor.history import History
    from sandwatch.monitor.history_alerts import add_review, events

    history = History(db, must_exist=True)
    try:
        rec = history.site(site)
        if rec is None:
            raise SandwatchError.about(db, f"has no site {site!r}", "check --site")
        if key not in {e["key"] for e in events(history, rec.id)}:
            raise SandwatchError.about("--key", f"no alert {key!r} at site {site!r}",
                                       "see `sandwatch alerts list` for the keys")
        added = add_review(history, rec.id, key, reviewer, note)
    finally:
        history.close()
    click.echo(f"{site} {key}: rejected by {reviewer}" if added else f"{site} {key}: already reviewed")


@alerts.command("list", context_settings=CTX)
@click.argument("db")
@click.option("--site", default=None)
def list_cmd(db, site):
    """Print the alert events and the outbox of a history database.

    \b
    Example:
      sandwatch alerts list monitor/history.sqlite --site site00
    """
    from sandwatch.monitor.history import History
    from sandwatch.monitor.history_alerts import events, messages

    history = History(db, must_exist=True)
    try:
        names = {r.id: r.name for r in history.sites()}
        shown = set()
        for e in events(history):
            if site is not None and names[e["site_id"]] != site:
                continue
            shown.add(e["id"])
            click.echo(f"{names[e['site_id']]:<16} {e['key']:<24} {e['status']:<12} {e['date']} "
                       f"first {e['first_date']} {e['area_m2'] / 1e4:7.2f} ha conf {e['confidence']:.2f}")
        out = [m for m in messages(history) if m["event_id"] in shown]
        counts = {s: sum(m["status"] == s for m in out) for s in ("pending", "sending", "sent")}
        click.echo(f"outbox: {counts['sent']} sent, {counts['pending']} pending, {counts['sending']} sending")
    finally:
        history.close()
