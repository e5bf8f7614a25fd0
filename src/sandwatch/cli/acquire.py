"""``sandwatch acquire``: search a STAC API over study areas, choose dates, fetch the areas'
windows into COGs, append them to a manifest; ``update`` keeps doing it for monitoring."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.acquire.search import DEFAULT_COLLECTION, EARTH_SEARCH_URL

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _sign(spec: str | None):
    """``MODULE:FUNCTION`` -> the function (href -> signed href)."""
    if not spec:
        return None
    import importlib

    from sandwatch.errors import SandwatchError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name or "sign")
    except (ImportError, AttributeError) as err:
        raise SandwatchError.about("--sign", f"{spec!r} cannot be imported ({err})",
                                   "pass MODULE:FUNCTION of an installed package, e.g. planetary_computer:sign") from None
    return fn


def _stac_options(f):
    f = click.option("--stac-url", default=EARTH_SEARCH_URL, show_default=True, metavar="URL",
                     help="STAC API to search (any; Earth Search needs no key).")(f)
    f = click.option("--collection", default=DEFAULT_COLLECTION, show_default=True, metavar="ID",
                     help="Collection: Sentinel-2 L2A (with SCL) or L1C (clear fraction from a spectral test).")(f)
    f = click.option("--max-cloud", type=click.FloatRange(0, 100), default=None, metavar="PERCENT",
                     help="Skip items whose scene-wide eo:cloud_cover is above this (a cheap pre-filter; the "
                          "clear fraction over the area decides).")(f)
    f = click.option("--sign", "sign_spec", default=None, metavar="MODULE:FUNCTION",
                     help="A function that signs asset hrefs, for catalogues that need it "
                          "(e.g. planetary_computer:sign).")(f)
    return f


def _fetch_options(f):
    f = click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="Parallel downloads (threads).")(f)
    f = click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True,
                     help="Tries after the first for a failed download (back-off 2, 4, 8 ... s).")(f)
    f = click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True, metavar="SECONDS",
                     help="An HTTP request without progress for this long fails (and is retried).")(f)
    f = click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False), default=None,
                     metavar="MANIFEST.yaml", help="Manifest to append the new observations to [default: OUT/manifest.yaml].")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)
    return f


@click.group("acquire", context_settings=_CTX)
def acquire():
    """Sentinel-2 imagery for study areas, through a STAC API.

    \b
    From a list of sites to a manifest ready for `dataset split`, `train`, `predict`, `monitor`:
      sandwatch sites plan sites.csv -o areas.geojson
      sandwatch acquire search areas.geojson --start 2023-01-01 --end 2023-12-31 -o candidates.csv
      sandwatch acquire fetch areas.geojson candidates.csv -o imagery/ --dates 2 --min-gap-months 3
      sandwatch acquire update areas.geojson --since 2024-01-01 -o imagery/    # monitoring feed
    """


@acquire.command("search")
@click.argument("areas_file", metavar="AREAS", type=click.Path(dir_okay=False))
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD).")
@click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day (YYYY-MM-DD).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="TABLE.csv|TABLE.parquet",
              help="Candidates: one row per area and date, with clear fraction and item ids.")
@_stac_options
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel SCL reads.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def search_cmd(areas_file, start, end, output, stac_url, collection, max_cloud, sign_spec, workers, quiet):
    """Find the dates over each area in AREAS and how clear each is there.

    The clear fraction is measured over the area itself, from the SCL asset (only the
    area's window is read, with HTTP range requests), not taken from the scene-wide
    eo:cloud_cover. Items of one date are mosaicked; a reprocessed copy of a tile is kept once.

    \b
    Examples:
      sandwatch acquire search areas.geojson --start 2023-01-01 --end 2023-12-31 -o candidates.csv
      sandwatch acquire search areas.geojson --start 2023-01-01 --end 2023-03-31 --max-cloud 60 \\
          --stac-url http://localhost:8081 --collection sentinel-2-l1c -o candidates.parquet
    """
    from sandwatch.acquire.search import SearchConfig, search, write_candidates
    from sandwatch.acquire.sites import read_areas
    from sandwatch.io import ensure_writable_dir

    ensure_writable_dir(Path(output).parent, output)
    areas = read_areas(areas_file)
    cfg = SearchConfig(stac_url=stac_url, collection=collection, max_cloud=max_cloud, workers=workers,
                       sign=_sign(sign_spec))
    rows = search(areas, start.date(), end.date(), cfg, progress=not quiet)
    write_candidates(rows, output)
    clear = sum(r.clear_fraction >= 0.8 for r in rows)
    click.echo(f"{len(rows)} dates over {len({r.area for r in rows})} of {len(areas)} areas "
               f"({clear} at least 80% clear over their area) -> {output}")


@acquire.command("fetch")
@click.argument("areas_file", metavar="AREAS", type=click.Path(dir_okay=False))
@click.argument("table", metavar="CANDIDATES", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="OUT",
              help="Folder for OUT/AREA/AREA_DATE.tif (and OUT/manifest.yaml).")
@click.option("--dates", default=None, metavar="N|monthly|all",
              help="Dates per area: N (the published method: 2, far apart, most different landscape), "
                   "monthly (the clearest date of each month) or all  [default: 2; all with --composite]")
@click.option("--min-gap-months", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="With --dates N: chosen dates are at least this far apart.")
@click.option("--min-clear", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Least clear fraction over the area a date needs.")
@click.option("--composite", type=click.Choice(["none", "monthly"]), default="none", show_default=True,
              help="monthly: one median of the month's clear pixels per area (SCL-masked) instead of single dates.")
@click.option("--bands", default=None, metavar="B02,B03,...", help="Bands to keep [default: all the items have].")
@_fetch_options
@click.option("--sign", "sign_spec", default=None, metavar="MODULE:FUNCTION", help="A function that signs asset hrefs.")
def fetch_cmd(areas_file, table, out_dir, dates, min_gap_months, min_clear, composite, bands, workers, retries,
              timeout, manifest_path, quiet, sign_spec):
    """Download the chosen dates of each area into one COG per area and date.

    Only the area's window of each band travels (GDAL range requests on the COGs); 20/60 m
    bands are put on the 10 m grid as `sandwatch info` reads them (bilinear; SCL nearest,
    kept as the last band). Areas across two tiles are mosaicked; items with different
    processing baselines are brought to one DN offset. Files are written atomically and
    kept: run the same command again after a failure and it goes on where it stopped.

    \b
    Examples:
      sandwatch acquire fetch areas.geojson candidates.csv -o imagery/                  # 2 dates, 3+ months apart
      sandwatch acquire fetch areas.geojson candidates.csv -o imagery/ --dates monthly
      sandwatch acquire fetch areas.geojson candidates.csv -o imagery/ --composite monthly --bands B02,B03,B04,B08
    """
    from sandwatch.acquire.composite import fetch_composites
    from sandwatch.acquire.dates import DateChoice, choose_dates
    from sandwatch.acquire.fetch import FetchConfig, fetch
    from sandwatch.acquire.record import append_to_manifest
    from sandwatch.acquire.search import read_candidates
    from sandwatch.acquire.sites import read_areas
    from sandwatch.bands import parse_band_list
    from sandwatch.io import ensure_writable_dir

    ensure_writable_dir(out_dir)
    areas = read_areas(areas_file)
    cands = read_candidates(table)
    choice = DateChoice.parse(dates or ("all" if composite == "monthly" else "2"), min_gap_months, min_clear)
    sign = _sign(sign_spec)
    chosen = choose_dates(areas, cands, choice, sign=sign, timeout_s=timeout, workers=workers)
    cfg = FetchConfig(bands=tuple(parse_band_list(bands)) if bands else None, workers=workers, retries=retries,
                      timeout_s=timeout, sign=sign)
    run = fetch_composites if composite == "monthly" else fetch
    done = run(areas, chosen, out_dir, cfg, progress=not quiet)
    manifest = Path(manifest_path or Path(out_dir) / "manifest.yaml")
    added = append_to_manifest(manifest, areas, done)
    kept = sum(f.status == "kept" for f in done)
    click.echo(f"{len(done) - kept} files fetched, {kept} already there; {added} new observations -> {manifest}")


@acquire.command("update")
@click.argument("areas_file", metavar="AREAS", type=click.Path(dir_okay=False))
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Look for dates from this day on.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day [default: today].")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="OUT",
              help="The imagery folder (as for fetch).")
@click.option("--min-clear", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Least clear fraction over the area a date needs.")
@_stac_options
@_fetch_options
def update_cmd(areas_file, since, until, out_dir, min_clear, stac_url, collection, max_cloud, sign_spec, workers,
               retries, timeout, manifest_path, quiet):
    """Fetch every new clear date of every area since --since (the monitoring feed).

    Dates already in the manifest are skipped, so a daily or weekly run (cron) fetches only
    what is new, and `sandwatch monitor` then runs on fresh imagery.

    \b
    Examples:
      sandwatch acquire update areas.geojson --since 2024-01-01 -o imagery/
      sandwatch acquire update areas.geojson --since 2024-06-01 -o imagery/ --min-clear 0.6 --manifest m.yaml
    """
    from sandwatch.acquire.fetch import FetchConfig
    from sandwatch.acquire.record import update
    from sandwatch.acquire.search import SearchConfig
    from sandwatch.acquire.sites import read_areas
    from sandwatch.io import ensure_writable_dir

    ensure_writable_dir(out_dir)
    areas = read_areas(areas_file)
    sign = _sign(sign_spec)
    manifest = Path(manifest_path or Path(out_dir) / "manifest.yaml")
    done = update(areas, since.date(), out_dir, manifest, until=until.date() if until else None, min_clear=min_clear,
                  search_cfg=SearchConfig(stac_url=stac_url, collection=collection, max_cloud=max_cloud,
                                          workers=workers, sign=sign, timeout_s=timeout),
                  fetch_cfg=FetchConfig(workers=workers, retries=retries, timeout_s=timeout, sign=sign),
                  progress=not quiet)
    if not done:
        click.echo(f"nothing new since {since.date()} over {len(areas)} areas")
        return
    dates = sorted({f.date.isoformat() for f in done})
    click.echo(f"{len(done)} new files ({', '.join(dates[:6])}{' ...' if len(dates) > 6 else ''}) -> {manifest}")
