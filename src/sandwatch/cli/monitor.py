"""``sandwatch monitor``: follow a site over many dates; ``sandwatch monitor report DB``."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.cli.alerts import echo_delivery, echo_update, load_subs, make_rules, rule_options
from sandwatch.published import AOI_BUFFER_M, EDGE_PX

HELP = """Follow one site over many dates: mined area per date, alerts, a history database.

\b
Each scene (one site, any dates, any order, all on one grid) is predicted inside the
AOI with the checkpoint; pixels with nodata, clouds or shadows are not counted (L2A: the
SCL band; L1C: a brightness/haze/whiteness + B10 cirrus test, see --cloud-test). A date
with less than --min-valid of its AOI observed is a gap: shown as a gap, no alerts.
A new-mining alert is a region of at least --min-area-ha predicted mine on --k
consecutive valid dates where it was not mine before; growing regions raise "growth",
regions that stop raise "inactive". Outputs in OUT_DIR:
  history.sqlite          sites, observations, detections, alerts (or --db URL)
  timeseries.csv/.png     mined area per date (gaps empty / broken line), alerts marked
  polygons/DATE.geojson   mining polygons per date (EPSG:4326)
  alerts.csv/.geojson     alerts: date, first seen, area, growth, centroid lat/lon
  alerts/                 pixel alerts (`sandwatch alerts --help`): DATE.status/first_date/
                          confidence/count.tif COGs and DATE.alerts.geojson; png/ of e-mails
With --subscribers FILE the site's alert events then go to its subscribers (e-mail,
webhook, feed files) through the database's outbox; --dry-run prints what would go.
Re-running with the same scenes adds nothing; adding a date adds one observation and
only the alerts it causes. Each date is committed on its own (a killed run keeps them).
Runs of different sites may share one --db at the same time; a second run of the same
site waits for the first (lock file .DB.SITE.lock beside the database), then adds only
what is new; a lock left by a dead run is taken over.
\b
Examples:
  sandwatch monitor --checkpoint best.pt --site site00 --rivers demo/site00/rivers.geojson \\
      --scenes demo/site00/20??-??-??.tif -o monitor/site00
  sandwatch monitor --checkpoint best.pt --site site00 --aoi site00-aoi.geojson \\
      --scenes demo/site00/20??-??-??.tif -o monitor/site00 --subscribers subscribers.yaml --dry-run
  sandwatch monitor --checkpoint s2s1.pt --site site00 --rivers demo/site00/rivers.geojson \\
      --scenes demo/site00/20??-??-??.tif --s1 demo/site00/*_s1.tif -o monitor/site00   # S2 + S1 model
  sandwatch monitor report monitor/site00/history.sqlite
"""


class _MonitorGroup(click.Group):
    """A group whose own options run the monitor and whose ``--scenes`` and ``--s1`` take several values."""

    def parse_args(self, ctx, args):
        args = list(args)
        if args and args[0] in self.commands:
            return super().parse_args(ctx, args)
        out, i = [], 0
        while i < len(args):
            a = args[i]
            if a in ("--scenes", "--s1"):
                i += 1
                while i < len(args) and not args[i].startswith("-"):
                    out += [a, args[i]]
                    i += 1
                continue
            out.append(a)
            i += 1
        return super().parse_args(ctx, out)


@click.group("monitor", cls=_MonitorGroup, invoke_without_command=True, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint of `sandwatch train`.")
@click.option("--site", help="Name of the site (its key in the history database).")
@click.option("--rivers", type=click.Path(path_type=Path),
              help="River vectors: the AOI is everything within --aoi-buffer of them (as predict and the manifest).")
@click.option("--aoi", type=click.Path(path_type=Path),
              help="A ready AOI polygon file, used as it is (as predict --aoi and `sandwatch aoi` output).")
@click.option("--scenes", multiple=True, metavar="SCENE...", help="Scenes of the site (several after one --scenes).")
@click.option("--s1", "s1", multiple=True, metavar="S1_SCENE...",
              help="Sentinel-1 scenes stacked on the --scenes, one per scene in the same order (several after one "
                   "--s1): for models trained on S2+S1 bands, as predict --s1.")
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--db", default=None, metavar="PATH|URL",
              help="History database: SQLite path or SQLAlchemy URL  [default: OUT_DIR/history.sqlite]")
@click.option("--k", "k", type=int, default=2, show_default=True, help="Consecutive valid mine dates for an alert.")
@click.option("--min-area-ha", type=float, default=0.5, show_default=True, help="Smallest region that alerts.")
@click.option("--min-valid", type=float, default=0.5, show_default=True,
              help="Observed fraction of the AOI below which a date is a gap.")
@click.option("--threshold", type=float, default=None, help="Mine probability threshold (default: the checkpoint's).")
@click.option("--aoi-buffer", type=float, default=AOI_BUFFER_M, show_default=True, help="AOI buffer around rivers, metres.")
@click.option("--cloud-test", type=click.Choice(["auto", "scl", "l1c", "none"]), default="auto", show_default=True,
              help="auto: SCL for L2A, the L1C test for L1C, none otherwise.")
@click.option("--edge", type=int, default=EDGE_PX, show_default=True, help="Pixels discarded at each window side.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: predict every window in its 8 rotations/flips, turn the outputs back "
                   "and average the probabilities. Costs 8x the forward time.")
@rule_options
@click.option("--subscribers", "subs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Subscribers file (YAML, see `sandwatch alerts deliver --help`): send the site's alerts.")
@click.option("--dry-run", is_flag=True, help="With --subscribers: print what would be sent; send nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def monitor(ctx, checkpoint, site, rivers, aoi, scenes, s1, out_dir, db, k, min_area_ha, min_valid, threshold, aoi_buffer,
            cloud_test, edge, device, tta, confirm_k, confirm_prob, expire_after, mmu_ha, subs, dry_run, quiet):
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, v in (("--checkpoint", checkpoint), ("--site", site), ("--rivers or --aoi", rivers or aoi),
                                    ("--scenes", scenes), ("-o", out_dir)) if not v]
    if missing:
        from sandwatch.errors import SandwatchError

        raise SandwatchError.about("sandwatch monitor", f"missing {', '.join(missing)}",
                                   "see `sandwatch monitor --help` for an example")
    from sandwatch.aoi import aoi_choice
    from sandwatch.errors import SandwatchError
    from sandwatch.models.checkpoint import Checkpoint
    from sandwatch.monitor import AlertConfig, MonitorConfig, monitor_site

    aoi_arg = aoi_choice(rivers, aoi)      # --rivers with --aoi: one line before any output

    try:
        alerts = AlertConfig(k=k, min_area_m2=min_area_ha * 1e4, min_valid_fraction=min_valid)
    except ValueError as err:
        raise SandwatchError.about("sandwatch monitor", str(err), "check --k, --min-area-ha and --min-valid") from None
    from sandwatch.predict import PredictConfig

    config = MonitorConfig(alerts=alerts, cloud_test=cloud_test,
                           predict=PredictConfig(threshold=threshold, aoi_buffer_m=aoi_buffer, edge=edge, tta=tta,
                                                 progress=False))
    rules = make_rules(confirm_k, expire_after, mmu_ha, confirm_prob)
    if dry_run and subs is None:
        raise SandwatchError.about("--dry-run", "needs --subscribers", "pass the subscribers file to check")
    subscribers = load_subs(subs)        # a bad subscribers file stops here, before any output
    from sandwatch.io import ensure_writable_dir

    ckpt = Checkpoint.load(checkpoint)   # validated: a bad file stops here, before any output
    ensure_writable_dir(out_dir)
    if db is not None and "://" not in str(db):
        ensure_writable_dir(Path(db).resolve().parent, db)
    from sandwatch.imagery import stack_each

    scene_list = stack_each(list(scenes), list(s1))    # S1 on the S2 grid, pairwise; one line when counts differ
    res = monitor_site(ckpt, site, aoi_arg, scene_list, out_dir, db=db, config=config, progress=not quiet, device=device)
    n_gaps = sum(1 for o in res.series if o["gap"])
    click.echo(f"{site}: {res.added_observations} new date(s), {res.known_observations} already known, "
               f"{len(res.series)} in all ({n_gaps} gaps); {res.added_alerts} new alert(s)")
    new_ids = {a["id"] for a in sorted(res.alerts, key=lambda a: a["id"])[-res.added_alerts:]} \
        if res.added_alerts else set()
    from sandwatch.monitor.report import alert_text

    for a in res.alerts:
        if a["id"] in new_ids:
            click.echo(f"  alert {alert_text(a)}")
    click.echo(f"-> {res.paths['timeseries_csv'].parent}")
    from sandwatch.alerts.deliver import deliver
    from sandwatch.alerts.stage import update_alerts

    from sandwatch.monitor.run import DB_NAME

    history_db = db if db is not None else Path(out_dir) / DB_NAME
    echo_update(update_alerts(history_db, site, Path(out_dir) / "alerts", rules, progress=not quiet))
    if subscribers is not None:
        echo_delivery(deliver(history_db, subscribers, Path(out_dir) / "alerts", sites=[site], dry_run=dry_run,
                              progress=not quiet), dry_run)


@monitor.command("report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("db")
def report(db):
    """Print the sites of a history database with their latest mined area, trend and open alerts.

    \b
    DB: the history.sqlite of a monitor run, or an SQLAlchemy URL.
    Example:
      sandwatch monitor report monitor/site00/history.sqlite
    """
    from sandwatch.monitor import format_report, site_report

    click.echo(format_report(site_report(db)))
