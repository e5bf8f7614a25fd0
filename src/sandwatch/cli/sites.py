"""``sandwatch sites``: study areas from a list of mining sites."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.acquire.sites import DEFAULT_HALF_SIZE_M, DEFAULT_RES_M


@click.group("sites", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def sites():
    """Study areas from a list of mining sites (the first step of `sandwatch acquire`).

    \b
    Typical use:
      sandwatch sites plan sites.csv -o areas.geojson
      sandwatch sites plan sites.csv -o areas.geojson --rivers rivers.gpkg --along-river 20
    """


@sites.command("plan")
@click.argument("sites_file", metavar="SITES", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="AREAS.geojson",
              help="The study areas (GeoJSON, EPSG:4326 outlines; the exact UTM rectangle in the properties).")
@click.option("--half-size", type=click.FloatRange(min=10), default=DEFAULT_HALF_SIZE_M, show_default=True,
              metavar="METRES", help="Half the side of the square around each site.")
@click.option("--resolution", type=click.FloatRange(min=1), default=DEFAULT_RES_M, show_default=True, metavar="METRES",
              help="Grid the rectangles are snapped to (outwards).")
@click.option("--rivers", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="River lines or polygons (any CRS), for --along-river.")
@click.option("--along-river", type=click.FloatRange(min=0), default=None, metavar="KM",
              help="Stretch each area to cover KM of the nearest river (within --half-size of the site), "
                   "centred on the site.")
def plan(sites_file, output, half_size, resolution, rivers, along_river):
    """Plan non-overlapping study areas around the sites in SITES.

    SITES is a CSV with columns lat and lon (decimal degrees; optional name, river, notes)
    or a GeoJSON/GeoPackage of points. Each site gets a square of 2 x --half-size metres in
    its UTM zone, snapped to the --resolution grid; overlapping squares are merged until no
    two areas overlap (a merged area uses the UTM zone of its centre). Every area has a
    stable id (a digest of its sites' coordinates), its sites and its km2.

    \b
    Examples:
      sandwatch sites plan sites.csv -o areas.geojson                 # 5 x 5 km squares
      sandwatch sites plan sites.csv -o areas.geojson --half-size 1000
      sandwatch sites plan sites.geojson -o areas.geojson --rivers osm_rivers.gpkg --along-river 30
    """
    from sandwatch.acquire.sites import plan_areas, read_sites, write_areas
    from sandwatch.io import ensure_writable_dir

    if along_river and not rivers:
        raise click.UsageError("--along-river needs --rivers")
    ensure_writable_dir(Path(output).parent, output)
    found = read_sites(sites_file)
    river_gdf = None
    if rivers:
        from sandwatch.errors import SandwatchError
        from sandwatch.vectors import read_vector

        river_gdf = read_vector(rivers, "river file")
        if river_gdf.crs is None:
            raise SandwatchError.about(rivers, "has projected coordinates without a CRS",
                                       "declare the file's CRS (GeoJSON: write it in EPSG:4326)")
    areas = plan_areas(found, half_size=half_size, res=resolution, rivers=river_gdf, along_river_km=along_river)
    write_areas(areas, output)
    total = sum(a.km2 for a in areas)
    click.echo(f"{len(found)} sites -> {len(areas)} areas, {total:.1f} km2 in all -> {output}")
