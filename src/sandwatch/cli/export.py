"""``sandwatch export quicklook``: stretched 8-bit true-colour COGs for reviewers."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("export", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def export():
    """Files for people and other tools (quicklooks)."""


@export.command("quicklook", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: NAME.quicklook.tif per scene.")
def quicklook(scenes, out_dir):
    """A true-colour, stretched 8-bit RGB COG per scene, on the scene's own grid.

    \b
    Red, green, blue (B04, B03, B02; R, G, B for true-colour files) with one stretch per scene
    (dark-object offset per band at the 1st percentile, one gain to the 99.5th, gamma 1.3):
    the colours the `sandwatch serve` map shows. Nodata is 0. For annotating in QGIS or
    uploading to Labelbox. Written block by block, atomically.
    Example:
      sandwatch export quicklook demo-out/data/site00/20??-??-??.tif -o quicklooks/
    """
    from sandwatch.io import ensure_writable_dir
    from sandwatch.predict.naming import unique_names
    from sandwatch.serve.quicklook import export_quicklook

    ensure_writable_dir(out_dir)
    for scene, name in zip(scenes, unique_names([str(s) for s in scenes])):
        out = export_quicklook(scene, out_dir / f"{name}.quicklook.tif")
        click.echo(f"{scene} -> {out}")
