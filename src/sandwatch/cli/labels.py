"""``sandwatch labels``: mining polygons -> mask (and weights) GeoTIFF on a scene's grid."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from sandwatch.labels import (AssumedCRSWarning, ConfidenceWeights, EmptyVectorWarning, grid_like,
                              write_label_rasters)


@click.group("labels")
def labels():
    """Ground truth: rasterise mining polygons onto a scene's grid.

    \b
    Example:
      sandwatch labels rasterize annotations.geojson --like scene.tif -o mask.tif --weights weights.tif
    """


@labels.command("rasterize")
@click.argument("polygons", type=click.Path(dir_okay=False))
@click.option("--like", "scene", required=True, metavar="SCENE",
              help="Scene whose grid to use: GeoTIFF/COG, band folder, STAC item (or any GeoTIFF).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="MASK.tif",
              help="Output mask: uint8 GeoTIFF, 1 = mine, 0 = background, on the scene's grid.")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), default=None, metavar="WEIGHTS.tif",
              help="Also write float32 per-pixel loss weights (from the polygons' confidence).")
@click.option("--low-weight", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Weight of pixels in Confidence=Low polygons.")
@click.option("--high-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of pixels in Confidence=High polygons.")
@click.option("--background-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of pixels outside every polygon.")
@click.option("--confidence-field", default="Confidence", show_default=True,
              help="Attribute holding High/Low or a number in 0..1 (missing = High).")
@click.option("--all-touched/--centre-inside", default=True, show_default=True,
              help="Mark every pixel a polygon touches (as the published dataset's masks), "
                   "or only pixels whose centre is inside.")
def rasterize(polygons, scene, output, weights_path, low_weight, high_weight, background_weight,
              confidence_field, all_touched):
    """Rasterise mining POLYGONS (GeoJSON, GeoPackage, Shapefile; any CRS) onto SCENE's grid.

    A pixel is mine when a polygon touches it (the rule of the published dataset's masks;
    --centre-inside for the stricter pixel-centre rule); where polygons overlap, the
    highest confidence wins. Invalid polygons are repaired. Polygons that miss the scene
    entirely are an error (wrong CRS or wrong scene); an empty file gives an all-background
    mask with a warning.

    \b
    Example:
      sandwatch labels rasterize site/annotations.geojson --like site/scene.tif \\
          -o site/mask.tif --weights site/weights.tif --low-weight 0.3
    """
    from sandwatch.io import ensure_writable_dir

    for out in (output, weights_path):
        if out:
            ensure_writable_dir(Path(out).parent, out)   # before the work, not after it
    grid = grid_like(scene)
    weights = ConfidenceWeights(high=high_weight, low=low_weight, background=background_weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmptyVectorWarning)
        warnings.simplefilter("always", AssumedCRSWarning)
        count = write_label_rasters(polygons, grid, output, weights_path, weights, require_overlap=True,
                                    all_touched=all_touched, confidence_field=confidence_field)
    for w in caught:
        if issubclass(w.category, (EmptyVectorWarning, AssumedCRSWarning)):
            click.echo(f"warning: {w.message}", err=True)
    total = grid.width * grid.height
    click.echo(f"{output}: {grid.width} x {grid.height} px, {count} mine pixels ({100 * count / total:.3f} %)"
               + (f"; weights in {weights_path}" if weights_path else ""))
