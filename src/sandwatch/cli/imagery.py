"""``sandwatch info``: what is in a scene (thin shell over :mod:`sandwatch.imagery`)."""

from __future__ import annotations

import json

import click

from sandwatch.imagery import DEFAULT_SAMPLE, open_scene


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_description(d: dict) -> str:
    """The human-readable table printed by ``sandwatch info``."""
    g = d["grid"]
    t = g["transform"]
    lines = [
        f"scene      {d['source']}",
        f"level      {d['level']}",
        f"date       {d['date'] or 'unknown'}",
        f"scaling    reflectance = (DN - {d['offset']:g}) / {d['scale']:g}   (offset: {d['offset_source']})",
        f"nodata     {_fmt(d['nodata'], 0)}",
        f"grid       {g['width']} x {g['height']} px, {g['crs']}, pixel {g['pixel_size'][0]:g} x {g['pixel_size'][1]:g}",
        f"transform  ({', '.join(f'{v:.10g}' for v in t)})",
        f"bounds     ({', '.join(f'{v:.2f}' for v in g['bounds'])})",
        f"SCL        {d['scl'] or 'none'}",
    ]
    if d.get("processing_baseline"):
        lines.insert(4, f"baseline   {d['processing_baseline']}")
    if d.get("stac_item"):
        lines.insert(1, f"STAC item  {d['stac_item']}")
    if "nodata_fraction" in d:
        lines.append(f"no data    {100 * d['nodata_fraction']:.2f} % of {d['sampled_pixels']} sampled pixels")
    lines.append("")
    stats = d.get("stats")
    head = f"{'band':<5} {'res m':>6}"
    if stats:
        head += f" {'min':>8} {'max':>8} {'mean':>8} {'std':>8} {'median':>8}   (DN)"
    lines.append(head)
    for b in d["bands"]:
        row = f"{b['name']:<5} {b['resolution_m']:>6g}"
        if stats:
            s = stats[b["name"]]
            row += "".join(f" {_fmt(s[k]):>8}" for k in ("min", "max", "mean", "std", "median"))
        lines.append(row)
    return "\n".join(lines)


@click.command("info")
@click.argument("scene")
@click.option("--bands", default=None, metavar="B02,B03,...",
              help="Band names, in file order, for a GeoTIFF without band descriptions "
                   "(or a subset of a folder/STAC scene).")
@click.option("--level", type=click.Choice(["L1C", "L2A", "RGB", "S1"], case_sensitive=False), default=None,
              help="Force the processing level when the metadata does not tell.")
@click.option("--offset", type=float, default=None,
              help="Force the DN offset (1000 for raw processing-baseline-04 products).")
@click.option("--allow-outside", is_flag=True,
              help="Let a STAC item's asset hrefs reach files outside the item's folder (../.., absolute paths).")
@click.option("--allow-remote", "allow_remote", multiple=True, metavar="HOST",
              help="Let a STAC item's assets be read from HOST over http(s) (repeat, or comma-separate; '*' any "
                   "host). A local item reads its assets from beside it; a remote item from its own host.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-stats", is_flag=True, help="Skip the pixel statistics (header only, instant).")
@click.option("--sample", type=int, default=DEFAULT_SAMPLE, show_default=True,
              help="Pixels per band sampled for the statistics.")
def info(scene, bands, level, offset, allow_outside, allow_remote, as_json, no_stats, sample):
    """Describe a scene (Sentinel-2, true colour or Sentinel-1): bands, grid, level, date, offset, statistics.

    SCENE is a multi-band GeoTIFF/COG, a folder of per-band files (*_B02.jp2, B02.tif,
    a SAFE product) or a STAC item JSON (path or http(s) URL). Statistics are computed on a
    bounded sample of pixels, so a full 10980 x 10980 tile answers in seconds.

    A STAC item's assets are read from beside the item when they are there (offline), else
    from the network only when the item is remote (its own host) or --allow-remote names
    the host; hrefs that leave the item's folder need --allow-outside.

    \b
    Examples:
      sandwatch info S2B_MSIL1C_20210115.SAFE
      sandwatch info scene.tif --bands B02,B03,B04,B08 --json
      sandwatch info https://example.org/items/S2A_29RKH_20200219_0_L2A.json --no-stats
    """
    hosts = [h.strip() for item in allow_remote for h in item.split(",") if h.strip()]
    with open_scene(scene, bands=bands, level=level, offset=offset, allow_outside=allow_outside,
                    allow_remote=hosts) as sc:
        desc = sc.describe(stats=not no_stats, sample=sample)
    click.echo(json.dumps(desc, indent=2) if as_json else format_description(desc))
