"""``sandwatch serve PROJECT``: the local web map (the stage is :mod:`sandwatch.serve`)."""

from __future__ import annotations

from pathlib import Path

import click

HELP = """A local web map over what sandwatch wrote in PROJECT: review alerts, draw labels.

\b
PROJECT is a folder sandwatch wrote into (e.g. demo-out after `make demo`, or a monitor -o
folder); it is searched for manifests, monitoring histories (history.sqlite) and prediction
folders (*.prob.tif). The page shows per site and date the true-colour scene, the
probability map (colour ramp, opacity slider), the mask, the predicted polygons and the AOI;
a date slider and a swipe between two dates; the monitoring alerts with accept / reject /
needs field check (stored in the history database, shown by `sandwatch monitor report`);
and an annotate view whose polygons (confidence High / Medium / Low, a note) are saved as
the label GeoJSON `sandwatch labels` and `train` read, earlier versions kept in .versions/.
Everything works offline; --basemap adds an online tile layer.
\b
Safety: binds 127.0.0.1. --host 0.0.0.0 (everyone on the network) needs --token SECRET;
users then open http://HOST:PORT/?token=SECRET once. Changes always need the page's token.
\b
Examples:
  sandwatch serve demo-out --open                  # after `make demo`
  sandwatch serve monitor/ --port 9000
  sandwatch serve monitor/ --db postgresql+psycopg://me@db/sandwatch
  sandwatch serve demo-out --host 0.0.0.0 --token "$(python -c 'import secrets; print(secrets.token_urlsafe())')"
  sandwatch serve demo-out --basemap 'https://tile.openstreetmap.org/{z}/{x}/{y}.png'
"""


@click.command("serve", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: all; needs --token).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--token", envvar="SANDWATCH_TOKEN", default=None, help="Secret for --host other than loopback "
              "(env SANDWATCH_TOKEN); at least 16 characters.")
@click.option("--db", default=None, metavar="PATH|URL", help="A monitoring history besides those found in PROJECT.")
@click.option("--basemap", default=None, metavar="URL", help="Online XYZ tiles under the layers (default: offline).")
@click.option("--max-upload-mb", type=float, default=10.0, show_default=True, help="Largest label upload.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes; 2 on 2 cores when many people pan at once (each keeps its own tile cache).")
@click.option("--reviewer", default=None, help="Default reviewer name on the page (default: your user name).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
def serve(project, host, port, token, db, basemap, max_upload_mb, workers, reviewer, open_browser):
    from sandwatch.serve import ServeConfig, run

    extra = {"reviewer": reviewer} if reviewer else {}
    config = ServeConfig(host=host, port=port, token=token, basemap_url=basemap,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024), workers=workers, **extra)
    shown = "127.0.0.1" if config.loopback else host
    note = "" if config.loopback else f" (open http://{shown}:{port}/?token=... once; every request needs the token)"
    click.echo(f"sandwatch serve: {project} on http://{shown}:{port}/{note}; Ctrl-C stops")
    run(project, config, db=db, open_browser=open_browser)
