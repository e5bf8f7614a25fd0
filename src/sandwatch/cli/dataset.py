"""``sandwatch dataset``: import, validate, describe and split dataset manifests."""

from __future__ import annotations

import json
from pathlib import Path

import click

MANIFEST_HELP = """Dataset manifests: import, statistics, geographic split.

\b
A manifest (YAML or JSON) lists observations: one scene of one site at one date,
with its mining polygons and its river AOI. Paths are relative to the manifest.
\b
  version: 1
  name: demo
  aoi_buffer_m: 1000                  # AOI = within this distance of `rivers`
  observations:
    - site: site00                    # all dates of a site stay on one split side
      date: 2021-01-15
      scene: site00/2021-01-15.tif    # GeoTIFF/COG, band folder, STAC item, URL
      annotations: site00/2021-01-15_mining.geojson   # optional
      rivers: site00/rivers.geojson   # river lines/polygons, buffered
      aoi: null                       # or a ready AOI polygon file (no buffer)
      bands: null                     # names when the scene lacks them
      latitude: 20.44                 # optional; else the scene centre
      longitude: 85.85
      cluster: null                   # filled by `split`
      split: null                     # train | val, filled by `split`
\b
Typical use:
  sandwatch dataset import dataset_v0.1.0_2023-11-16.json -o manifest.yaml --imagery s2_l1c
  sandwatch dataset validate manifest.yaml
  sandwatch dataset split manifest.yaml --clusters 9 --val-fraction 0.2
  sandwatch dataset stats manifest.yaml
"""


@click.group(help=MANIFEST_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def dataset():
    pass


@dataset.command("import", short_help="Convert the original project's JSON manifest.")
@click.argument("original", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Manifest to write (.yaml or .json).")
@click.option("--imagery", type=click.Choice(["s2", "s2_l1c", "rgb"]), default="s2", show_default=True,
              help="Which scene of each observation: L2A (s2), L1C (s2_l1c) or true colour (rgb).")
@click.option("--base-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with local copies: gs:// and https:// URLs become paths under it.")
@click.option("--map", "maps", multiple=True, metavar="PATTERN=TARGET",
              help="Map matching URLs to local files, tried before --base-dir (repeatable): * matches within a "
                   "path segment, ** across; TARGET uses {1}, {2} ... and {name} (the URL's file name).")
@click.option("--name", default=None, help="Dataset name (default: the file's stem).")
def import_(original, out, imagery, base_dir, maps, name):
    """Convert the original sandmining-watch JSON manifest to a sandwatch manifest.

    \b
    Site = the observation name without its date; the 1000 m river buffers go to `aoi`;
    cluster_id is kept as `cluster`. URLs stay URLs unless --base-dir maps them to a
    local mirror (DIR/PATH, DIR/BUCKET/PATH or DIR/FILE, the first that exists).
    \b
    Example:
      sandwatch dataset import dataset_v0.1.0_2023-11-16.json -o data/manifest.yaml \\
          --imagery s2_l1c --base-dir data/gcs
      sandwatch dataset import dataset_v0.1.0_2023-11-16.json -o data/manifest.yaml --imagery rgb \\
          --map 'gs://*/**/rgb/*.tif=mirror/rgb/{3}' --map 'gs://**/annotations/*.geojson=mirror/labels/{name}'
    """
    from sandwatch.dataset.importers import PathMap, import_original_manifest

    m = import_original_manifest(original, out, imagery=imagery, base_dir=base_dir, name=name,
                                 path_maps=tuple(PathMap.parse(t) for t in maps))
    click.echo(f"wrote {out}: {len(m.observations)} observations at {len(m.sites())} sites ({imagery})")


@dataset.command(short_help="Check a manifest: fields, unique ids, files exist, labels on their scenes.")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check-files/--no-check-files", default=True, show_default=True,
              help="Also check that local scene, annotation and AOI files exist, and that each label file's "
                   "polygons fall on its scene.")
@click.option("--allow-empty", is_flag=True,
              help="A label file whose polygons all miss its scene is a warning (a true negative), not an error. "
                   "A label file with no features is always a valid negative.")
def validate(manifest, check_files, allow_empty):
    """Check a manifest: syntax, fields, unique ids, (local) files, and labels on their scenes.

    A label file whose polygons all miss its scene (wrong CRS, wrong scene) would train as
    all background: an error unless --allow-empty. A label file without features is a
    negative scene (no mining), said once.

    \b
    Example:
      sandwatch dataset validate data/manifest.yaml
    """
    from sandwatch.dataset.manifest import load_manifest
    from sandwatch.dataset.validate import check_labels, missing_files
    from sandwatch.errors import SandwatchError

    m = load_manifest(manifest)
    if check_files:
        missing = missing_files(m)
        if missing:
            for obs_id, field, path in missing[:20]:
                click.echo(f"{obs_id}: {field} {path} does not exist", err=True)
            raise SandwatchError.about(manifest, f"{len(missing)} referenced file(s) do not exist",
                                       "fix the paths listed above")
        negatives = check_labels(m.observations, allow_empty=allow_empty)
    splits = {s: len(m.split_of(s)) for s in ("train", "val")}
    extra = f"; {len(negatives)} label file(s) miss their scene (allowed)" if check_files and negatives else ""
    click.echo(f"{manifest}: valid, {len(m.observations)} observations at {len(m.sites())} sites"
               f" (train {splits['train']}, val {splits['val']}){extra}")


@dataset.command(short_help="Cluster sites by distance; whole clusters to train/val.")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", "--clusters", type=int, default=9, show_default=True, help="Number of geographic clusters.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Target share of observations in validation (whole clusters only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Order in which clusters are tried for validation.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of rewriting MANIFEST in place.")
def split(manifest, clusters, val_fraction, seed, out):
    """Cluster sites by distance and split whole clusters into train / val.

    \b
    Sites (not single images) are clustered by great-circle distance, so every date
    of a site, and every site at one coordinate, lands on one side. Clusters are
    tried in a seeded order and go to validation while that brings the validation
    share closer to --val-fraction. Same seed, same split.
    \b
    Example:
      sandwatch dataset split data/manifest.yaml --clusters 9 --val-fraction 0.2 --seed 0
    """
    from sandwatch.dataset.manifest import load_manifest, save_manifest
    from sandwatch.dataset.split import format_split_table, geographic_split, split_table
    from sandwatch.io import ensure_writable_dir

    m = load_manifest(manifest)
    target = out or manifest
    ensure_writable_dir(Path(target).resolve().parent, target)
    result = geographic_split(m, clusters=clusters, val_fraction=val_fraction, seed=seed)
    save_manifest(result, target)
    click.echo(format_split_table(split_table(result)))
    click.echo(f"wrote {target}")


@dataset.command(short_help="Sites, images, km2, mine share inside/outside the AOI.")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--block", type=int, default=1024, show_default=True, help="Read scenes in blocks of this many pixels.")
@click.option("--per-observation/--summary-only", default=False, help="Also list every observation.")
def stats(manifest, as_json, block, per_observation):
    """Sites, images, area and mining share (overall, inside and outside the AOI).

    \b
    Reads every scene block by block (valid pixels), rasterises its mining polygons
    and its river AOI. Area counts each site once (its largest valid image).
    \b
    Example:
      sandwatch dataset stats data/manifest.yaml
      sandwatch dataset stats data/manifest.yaml --json > stats.json
    """
    from sandwatch.dataset.manifest import load_manifest
    from sandwatch.dataset.stats import dataset_stats, format_stats

    m = load_manifest(manifest)
    result = dataset_stats(m, progress=not as_json, block=block)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_stats(result, per_observation=per_observation))
