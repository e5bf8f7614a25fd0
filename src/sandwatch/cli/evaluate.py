"""``sandwatch evaluate``: metrics and a report for probability maps of a manifest split."""

from __future__ import annotations

from pathlib import Path

import click

from sandwatch.published import BORDER_PX, EDGE_PX


@click.command("evaluate")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--predictions", "predictions", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of probability rasters from `sandwatch predict` (repeat to compare models). "
                   "For observation ID it takes ID.prob.tif (or ID_*prob*.tif), else ID/*prob*.tif, else the "
                   "scene's own name as `sandwatch predict` writes it: NAME.prob.tif or FOLDER-NAME.prob.tif.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to run `predict` with first, into REPORT_DIR/predictions/<name>/ (repeatable).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
              help="Manifest split to score (all: every observation).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (created): metrics.json, report.html, pr_curve.png, overlays/, CSV tables.")
@click.option("--border", default=BORDER_PX, show_default=True, type=int,
              help="Pixels dropped at each image edge before scoring (published: 30).")
@click.option("--low-confidence", type=click.Choice(["count", "exclude", "weight"]), default="count",
              show_default=True,
              help="Pixels of Low-confidence polygons: count as mine (published), exclude, or weight by confidence.")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="Decision threshold for P/R/F1.")
@click.option("--edge", default=EDGE_PX, show_default=True, type=int,
              help="With --checkpoint: pixels discarded at each window edge when predicting (published: 30).")
@click.option("--tta", is_flag=True,
              help="With --checkpoint: test-time augmentation, every window predicted in its 8 rotations/flips "
                   "and the probabilities averaged. Costs 8x the forward time.")
@click.option("--name", "names", multiple=True, help="Model names for the comparison table (repeatable): checkpoints first, then prediction folders. "
                   "Default: the checkpoint's file stem or the folder's name.")
@click.option("--no-overlays", is_flag=True, help="Skip the per-scene pictures (faster).")
@click.option("--all-touched/--centre-inside", default=True, show_default=True,
              help="Label rule: every pixel a polygon touches (as `sandwatch labels`), or pixel centres inside.")
def evaluate(manifest, predictions, checkpoints, split, out_dir, border, low_confidence, threshold, edge, tta,
             names, no_overlays, all_touched):
    """Score probability maps against the labels of a manifest split and write a report.

    Metrics are pixel-wise and exact: average precision (equal to scikit-learn's on pixels
    pooled over the split), precision, recall and F1 at the threshold and at the best-F1
    threshold; per scene (AP left out when a scene has no mine pixel), per geographic cluster
    and pooled; over the whole image and inside the river AOI. Rasters are read block by block.

    \b
    Examples:
      sandwatch evaluate --predictions maps/ demo/manifest.yaml --split val -o report/
      sandwatch evaluate --checkpoint run/checkpoints/best.pt demo/manifest.yaml -o report/
      sandwatch evaluate --predictions unet/ --predictions rn50/ --name U-Net --name RN50 m.yaml -o cmp/
    """
    from sandwatch.errors import SandwatchError
    from sandwatch.evaluate import EvalConfig, evaluate_predictions, predict_split, write_report

    if not predictions and not checkpoints:
        raise SandwatchError.about("evaluate", "needs --predictions DIR or --checkpoint CKPT", "pass one of them")
    config = EvalConfig(border=border, low_confidence=low_confidence, threshold=threshold, all_touched=all_touched)
    split_arg = None if split == "all" else split
    names = list(names)
    results = []
    for ckpt in checkpoints:
        name = names.pop(0) if names else ckpt.stem
        pred_dir = out_dir / "predictions" / name
        click.echo(f"predicting with {ckpt} into {pred_dir}")
        found, n_params, arch = predict_split(ckpt, manifest, pred_dir, split=split_arg, edge=edge, tta=tta)
        results.append(evaluate_predictions(manifest, found, split=split_arg, config=config, name=name,
                                            source=str(ckpt), parameters=n_params))
    for pdir in predictions:
        name = names.pop(0) if names else None   # the checkpoint its tags name, else the folder
        results.append(evaluate_predictions(manifest, pdir, split=split_arg, config=config, name=name))
    metrics = write_report(results, out_dir, split=split_arg, overlays=not no_overlays)
    w = max([24] + [len(row["model"]) + 1 for row in metrics["comparison"]])
    click.echo(f"{'model':<{w}} {'AP':>7} {'F1@' + format(threshold, 'g'):>7} {'best F1':>8}   (whole image, pooled)")
    for row in metrics["comparison"]:
        f = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        click.echo(f"{row['model']:<{w}} {f(row['ap']):>7} {f(row['f1_at_0.5']):>7} {f(row['best_f1']):>8}")
    click.echo(f"report: {out_dir / 'report.html'}")
