"""``sandwatch aoi``: the river area of interest of a scene, as a vector or a raster."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.labels import grid_like
from sandwatch.published import AOI_BUFFER_M


@click.command("aoi")
@click.option("--like", "scene", required=True, metavar="SCENE",
              help="Scene whose grid (and, without --rivers, water index) to use.")
@click.option("--rivers", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="River lines or polygons (GeoJSON, GeoPackage, Shapefile; any CRS). "
                   "Without it, water is found in the scene itself (MNDWI, else NDWI).")
@click.option("--aoi", "aoi_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="A ready-made AOI polygon file, used as is (no buffer); only clipped and reprojected.")
@click.option("--buffer", "buffer_m", type=click.FloatRange(min=0), default=AOI_BUFFER_M, show_default=True,
              metavar="METRES", help="Distance from the river (or water) included in the AOI.")
@click.option("--index", type=click.Choice(["auto", "mndwi", "ndwi"], case_sensitive=False), default="auto",
              show_default=True, help="Water index for the scene-based AOI.")
@click.option("--threshold", default="auto", show_default=True, metavar="auto|NUMBER",
              help="Water where the index is above this: 'auto' chooses it per scene (Otsu's method on the "
                   "clear pixels, kept within 0..0.3); a number fixes it.")
@click.option("--min-area", "min_area_m2", type=click.FloatRange(min=0), default=10_000.0, show_default=True,
              metavar="M2", help="Drop water bodies smaller than this many square metres.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="AOI.geojson|AOI.gpkg|AOI.tif",
              help="GeoJSON (EPSG:4326), GeoPackage (scene CRS) or GeoTIFF (uint8 0/1 on the scene grid).")
def aoi(scene, rivers, aoi_file, buffer_m, index, threshold, min_area_m2, output):
    """Area of interest: everything within --buffer metres of a river, on SCENE's grid.

    The buffer is measured in metres (in the scene's CRS when projected, else in the local
    UTM zone). With --rivers the AOI comes from river vectors (e.g. OpenStreetMap); without
    it, from the scene's own water: clouds masked first (SCL on L2A, a spectral test on L1C),
    then MNDWI (with B11, else NDWI) above a threshold chosen for the scene, and NDWI > 0
    (dark forest and shadows are not water), cleaned and with water bodies under --min-area
    dropped. A scene without water (a desert) has no AOI: one line says so. True-colour
    scenes need --rivers.

    \b
    Examples:
      sandwatch aoi --like scene.tif --rivers rivers.geojson --buffer 1000 -o aoi.geojson
      sandwatch aoi --like S2_L1C_folder/ --buffer 500 -o aoi.tif       # water index
    """
    from sandwatch.aoi import aoi_area_m2, aoi_from_file, aoi_from_rivers, aoi_from_water, require_aoi, write_aoi

    if aoi_file and rivers:
        raise click.UsageError("pass either --aoi or --rivers, not both")
    from sandwatch.io import ensure_writable_dir

    ensure_writable_dir(Path(output).parent, output)   # before the work, not after it
    if aoi_file:
        grid = grid_like(scene)
        geom = require_aoi(aoi_from_file(aoi_file, grid), aoi_file, "no AOI polygon falls on the scene")
    elif rivers:
        grid = grid_like(scene)
        geom = require_aoi(aoi_from_rivers(rivers, grid, buffer_m=buffer_m), rivers,
                           f"no river within {buffer_m:g} m of the scene (or lines with --buffer 0)")
    else:
        from sandwatch.imagery import open_scene

        from sandwatch.aoi import WaterReport

        sc = open_scene(scene)
        grid = sc.grid
        if threshold != "auto":
            try:
                threshold = float(threshold)
            except ValueError:
                raise click.BadParameter(f"{threshold!r} is neither auto nor a number", param_hint="--threshold")
        found = WaterReport()
        geom = aoi_from_water(sc, buffer_m=buffer_m, index=index, threshold=threshold, min_area_m2=min_area_m2,
                              progress=True, report=found)
        geom = require_aoi(geom, scene, f"no water found in the scene ({found.describe()})")
        click.echo(f"water: {found.describe()}; {100 * found.water_fraction:.2f} % of the scene is water", err=True)
    write_aoi(geom, grid, output)
    area = aoi_area_m2(geom, grid)
    total = grid.width * grid.height * grid.pixel_area_m2
    click.echo(f"{output}: AOI {area / 1e6:.2f} km2 ({100 * area / total:.1f} % of the scene)")
