"""``sandwatch demo-data``: write synthetic Sentinel-2 demo sites to a folder."""

from __future__ import annotations

import time

import click


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--sites", default=6, show_default=True, type=click.IntRange(min=1), help="Number of river sites.")
@click.option("--size", default=512, show_default=True, type=click.IntRange(min=64),
              help="Scene width and height in 10 m pixels (512 = 5.12 km).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; the same seed gives the same data.")
@click.option("--dates", "dates", default=None,
              help="Comma-separated dates (YYYY-MM-DD) for every site instead of the default two, "
                   "e.g. for monitoring: 2021-01-10,2021-03-10,2021-05-10.")
@click.option("--s1/--no-s1", default=True, show_default=True,
              help="Also write a Sentinel-1 VV/VH scene (dB, EPSG:4326) two days after each date, listed as the "
                   "observation's s1 (stacked on the Sentinel-2 grid when a model asks for VV,VH).")
def demo_data(out, sites, size, seed, dates, s1):
    """Write synthetic Sentinel-2 demo sites to OUT, laid out exactly like real inputs.

    Per site and date: a 13-band L1C-like uint16 GeoTIFF (UTM, 10 m, bands B01..B12 named),
    a Sentinel-1 VV/VH backscatter GeoTIFF two days later (water dark, churned sand bright),
    mining polygons (GeoJSON, EPSG:4326, property Confidence High/Low) and a PNG quicklook;
    per site the river centre line; for all of it OUT/manifest.yaml. Sites lie in a few
    groups across India, some with growing mining, some where it stops, some with none
    (see OUT/sites.yaml).

    \b
    Example:
      sandwatch demo-data demo/ --sites 6 --size 512 --seed 0
      sandwatch dataset split demo/manifest.yaml --clusters 3
    """
    from sandwatch.io import ensure_writable_dir
    from sandwatch.synthetic import write_demo_data
    from sandwatch.synthetic.demo import DemoConfig

    ensure_writable_dir(out)

    date_list = [d.strip() for d in dates.split(",") if d.strip()] if dates else None
    t0 = time.perf_counter()
    manifest = write_demo_data(out, dates=date_list, progress=True,
                               config=DemoConfig(sites=sites, size=size, seed=seed, s1=s1))
    click.echo(f"wrote {manifest} ({sites} sites, {size}x{size} px) in {time.perf_counter() - t0:.1f} s")
