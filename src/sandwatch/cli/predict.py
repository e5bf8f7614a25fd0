"""``sandwatch predict``: map mining probability on scenes with a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.published import AOI_BUFFER_M, EDGE_PX

HELP = """Map mining probability on new scenes with a trained checkpoint.

\b
Windows of the checkpoint's size slide over each scene; EDGE pixels on each side of
a window are discarded (default 30: 160 px windows step by 100 px, as published),
scene borders are mirrored for context. Bands, normalisation, window, probability
calibration (temperature) and mask threshold come from the checkpoint (the last two
fitted on validation data). Per scene, in OUT_DIR (NAME = the scene's file or folder name; with
--manifest the observation id, SITE_DATE):
  NAME.prob.tif          probability COG: uint8 1 + 254 p, nodata 0 (or --dtype float32)
  NAME.mask.tif          mining mask COG at the threshold: 1 mine, 0 not, 255 nodata
  NAME.polygons.gpkg     mining polygons in the scene CRS (area_m2, mean/max prob, date)
  NAME.polygons.geojson  the same polygons in EPSG:4326
  NAME.polygons.parquet  the same polygons as GeoParquet, scene CRS (GeoPandas, DuckDB)
Each file appears only when complete; finished scenes are skipped on a re-run (so a
killed batch resumes) unless --overwrite, and a scene killed midway resumes from its last
finished row block (same checkpoint and options: the same pixels as a run never killed).
Several runs may share OUT_DIR: a scene being predicted by another run on this machine
(OUT_DIR/.NAME.lock) is waited for, then skipped; a lock left by a dead run is taken over.
\b
Examples:
  sandwatch predict run/checkpoints/best.pt scene.tif -o maps/
  sandwatch predict best.pt S2A_*.SAFE -o maps/ --aoi auto          # near water only
  sandwatch predict best.pt site/rgb.tif -o maps/ --rivers site/rivers.geojson   # within 1 km
  sandwatch predict best.pt site/rgb.tif -o maps/ --aoi site/aoi.geojson         # a ready AOI
  sandwatch predict best.pt scenes/*.tif -o maps/ --scheduler tcp://10.0.0.5:8786
  sandwatch predict best.pt scenes/*.tif -o maps/ --config predict.yaml --tta   # YAML, then options
  sandwatch predict s2s1.pt 2021-01-15.tif --s1 2021-01-17_s1.tif -o maps/    # S2 + S1 model
  sandwatch predict best.pt --manifest demo/manifest.yaml --split val -o maps/   # maps/site03_2021-01-30.*
"""


@click.command("predict", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("scenes", nargs=-1, required=False)
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the outputs (created if missing).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="PREDICT.yaml", help="Settings (edge, threshold, batch_size, blend, dtype, tta, aoi_buffer_m, "
                                           "...: the fields of PredictConfig) from a YAML file; options given here win.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Predict the scenes of a dataset manifest instead of SCENES (with their s1 scenes); outputs are "
                   "named by observation id, SITE_DATE.prob.tif, which evaluate and monitor find.")
@click.option("--split", type=click.Choice(["all", "train", "val"]), default="all", show_default=True,
              help="With --manifest: only the observations of this split.")
@click.option("--s1", "s1", multiple=True, metavar="S1_SCENE",
              help="A Sentinel-1 scene (VV, VH) to stack on each scene's 10 m grid, once per scene in the same "
                   "order: for models trained on S2+S1 bands (the manifest's s1).")
@click.option("--edge", type=int, default=EDGE_PX, show_default=True,
              help="Pixels discarded on each side of every window.")
@click.option("--aoi", default="none", show_default=True, metavar="auto|FILE|none",
              help="Predict only windows touching the AOI: FILE = a ready AOI polygon file used as it is (as the "
                   "manifest's aoi: and `sandwatch aoi` output), 'auto' = the scene's own water buffered by "
                   "--aoi-buffer, 'none' = the whole scene. Elsewhere is nodata.")
@click.option("--rivers", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="River vectors: the AOI is everything within --aoi-buffer of them (as the manifest's rivers:).")
@click.option("--aoi-buffer", type=float, default=AOI_BUFFER_M, show_default=True,
              help="AOI buffer in metres around --rivers or the 'auto' water.")
@click.option("--threshold", type=float, default=None, help="Mask threshold (default: the checkpoint's).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per forward pass.")
@click.option("--blend", type=click.Choice(["none", "cosine"]), default="none", show_default=True,
              help="'cosine' averages neighbouring windows across seams with cosine weights.")
@click.option("--dtype", type=click.Choice(["uint8", "float32"]), default="uint8", show_default=True,
              help="Probability raster type.")
@click.option("--scheduler", default="local", show_default=True, metavar="local|ADDRESS",
              help="'local' runs here; tcp://HOST:PORT sends scenes to a running dask-scheduler.")
@click.option("--band-rows", type=int, default=None, metavar="N",
              help="With --scheduler ADDRESS: also split each scene into row bands of about N rows, one task each.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--bf16", is_flag=True, help="Run the model in bfloat16 autocast.")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: predict every window in its 8 rotations/flips, turn the outputs back "
                   "and average the probabilities. Costs 8x the forward time.")
@click.option("--allow-outside", is_flag=True,
              help="Let STAC items' asset hrefs reach files outside each item's folder.")
@click.option("--allow-remote", "allow_remote", multiple=True, metavar="HOST",
              help="Let STAC items' assets be read from HOST over http(s) (repeat, or comma-separate; '*' any).")
@click.option("--overwrite", is_flag=True, help="Recompute scenes whose outputs exist.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def predict(ctx, checkpoint, scenes, out_dir, config_file, manifest, split, s1, edge, aoi, rivers, aoi_buffer, threshold, batch_size, blend, dtype,
            scheduler, band_rows, device, bf16, tta, allow_outside, allow_remote, overwrite, quiet):
    from sandwatch.errors import SandwatchError
    from sandwatch.imagery import set_stac_access, stack_each
    from sandwatch.models.checkpoint import Checkpoint
    from sandwatch.predict import PredictConfig, manifest_scenes, predict_scenes

    given = dict(edge=edge, aoi_buffer_m=aoi_buffer, threshold=threshold, batch_size=batch_size, blend=blend,
                 dtype=dtype, overwrite=overwrite, device=device, bf16=bf16, tta=tta, progress=not quiet)
    if config_file is None:
        config = PredictConfig(**given)
    else:    # the file, then the options given on the command line
        option = {"aoi_buffer_m": "aoi_buffer", "progress": "quiet"}
        config = PredictConfig.from_yaml(config_file, **{
            k: v for k, v in given.items()
            if ctx.get_parameter_source(option.get(k, k)) is not click.core.ParameterSource.DEFAULT})

    set_stac_access(allow_outside, [h.strip() for item in allow_remote for h in item.split(",") if h.strip()])
    ckpt = Checkpoint.load(checkpoint)   # validated: a bad file stops here, before any output
    if scheduler == "local":
        from sandwatch.io import ensure_writable_dir

        ensure_writable_dir(out_dir)   # before predicting, not after
    from sandwatch.aoi import aoi_choice

    aoi_arg = aoi_choice(rivers, aoi)
    if manifest is not None:
        if scenes or s1:
            raise SandwatchError.about("--manifest", "given with SCENES or --s1", "predict either a manifest or scene files")
        scene_list, names = manifest_scenes(manifest, split)
    elif scenes:
        scene_list, names = stack_each(list(scenes), list(s1)), None
    else:
        raise SandwatchError.about("SCENES", "none given", "name scene files, or --manifest MANIFEST")
    results = predict_scenes(ckpt, scene_list, out_dir, config, aoi=aoi_arg, names=names,
                             scheduler=None if scheduler == "local" else scheduler, band_rows=band_rows)
    for res in results:
        s = res.stats
        if res.skipped:
            if s.get("waited_for"):
                click.echo(f"{s['name']}: predicted meanwhile by {s['waited_for']} (waited for it), skipped")
            else:
                click.echo(f"{s['name']}: outputs exist, skipped (--overwrite to redo)")
            continue
        extra = f", {s['windows']} windows" if s.get("windows") else ""
        if s.get("resumed_rows"):
            extra += f" (resumed at row {s['resumed_rows']}, {s.get('resumed_windows', 0)} windows done before)"
        if s.get("skipped_windows"):
            extra += f" ({s['skipped_windows']} outside the AOI skipped)"
        if s.get("tta"):
            extra += ", 8x TTA"
        if s.get("predicted_pixels") == 0:   # not a clean scene: nothing could be looked at
            click.echo(f"{s['name']}: NO DATA, not one valid pixel to predict (the scene is all nodata/NaN"
                       f"{', or outside the AOI' if s.get('aoi_fraction') is not None else ''}); "
                       f"the maps are empty{extra}, {s['seconds']:.1f} s -> {res.paths['probability'].parent}")
            continue
        click.echo(f"{s['name']}: {s['polygons']} mining polygon{'s' * (s['polygons'] != 1)}, {s['mine_area_m2'] / 1e4:.2f} ha{extra}, "
                   f"{s['seconds']:.1f} s -> {res.paths['probability'].parent}")
