"""``sandwatch train``: parse arguments, call :func:`sandwatch.train.runner.train`."""

from __future__ import annotations

import click


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the YAML file (dotted key, YAML value); repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in run_dir from its last checkpoint (exactly).")
@click.option("--print-config", is_flag=True, help="Print the resolved config (defaults filled in) and exit.")
@click.option("--folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="Cross-validate over K folds of whole geographic clusters, then train the final model "
                   "on everything (K + 1 trainings; see below).")
@click.option("--fold-seed", type=int, default=0, show_default=True,
              help="With --folds: seed that breaks ties when clusters are dealt to folds.")
@click.option("--no-final", is_flag=True, help="With --folds: skip the final training on every observation.")
def train(config, overrides, resume, print_config, folds, fold_seed, no_final):
    """Train a model on a dataset manifest, as one YAML CONFIG file says.

    Windows of 160 px are drawn with their centre uniformly inside each training scene's river
    AOI (1 km buffer), ceil(AOI pixels / 160^2) x 2 per scene per epoch, rotated and flipped;
    the loss is BCE with logits, pos_weight 6, weighted by annotation confidence (nodata 0);
    AdamW, LR 5e-4 (1e-3 SatMAE), batch 128 (64 SatMAE), 20 epochs: the published method.
    Each epoch is validated on the manifest's 'val' split (average precision, F1 at 0.5).

    \b
    Output, in run_dir:
      checkpoints/best.pt   best validation AP: what `sandwatch predict` takes
      checkpoints/last.ckpt resume point, written every epoch (also loadable by predict)
      mlflow.db             tracking: mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db
      plots/, metrics.json  PR curves, prediction overlays, metrics per epoch

    \b
    Examples:
      sandwatch train configs/default.yaml --set manifest=demo/manifest.yaml
      sandwatch train configs/cpu.yaml --set model.arch=ssl4eo-resnet50 \\
          --set model.weights=B13_rn50_moco_0099.pth --set model.freeze_encoder=true
      sandwatch train configs/cpu.yaml --set optim.epochs=30 --resume   # after a crash or kill
      sandwatch train configs/default.yaml --print-config               # every setting, with defaults

    A frozen encoder (linear probing) turns the feature cache on: a fixed pool of windows
    whose encoder features are computed once (see configs/default.yaml, section cache).

    \b
    Cross-validation (--folds K): one train/val split of a few images is mostly noise. With
    --folds every observation of the manifest (whatever its split) is held out exactly once,
    always with its whole geographic cluster (run `sandwatch dataset split` first: it sets the
    clusters; K may not exceed their number). Each fold trains with the same settings but
    without validation (its held-out scenes never choose, calibrate or stop its training), then
    predicts its held-out scenes and scores them exactly (AP, F1 at 0.5, best F1; whole image
    and inside the AOI). Last, the final model trains on every observation, without validation.
    It takes K + 1 trainings (each as long as one ordinary run on that many images) plus one
    prediction of every scene. Output, in run_dir:
      folds/foldK/          one ordinary run per fold, its manifest.yaml, predictions/, scores.json
      cv.json, cv.csv       metrics per fold, mean +- std over folds, pooled over all held-out pixels
      final/checkpoints/best.pt   the model to use (trained on everything)
    Running the same command again continues: finished folds are kept, a half-trained fold is
    resumed (no --resume needed); other folds or settings in the same run_dir are refused.
      sandwatch train configs/cpu.yaml --folds 5 --set run_dir=runs/cv5
    """
    from sandwatch.train.config import load_config

    cfg = load_config(config, list(overrides))
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    if folds is not None:
        from sandwatch.train.cv import cross_validate, format_cv_table

        cv = cross_validate(cfg, folds, seed=fold_seed, final=not no_final, progress=cfg.trainer.progress_bar, log=lambda text: click.echo(text, err=True))
        click.echo(format_cv_table(cv))
        click.echo(f"metrics: {cv.run_dir / 'cv.json'}, {cv.run_dir / 'cv.csv'}")
        if cv.final is not None:
            click.echo(f"final model (use this one): {cv.final}")
        return
    from sandwatch.train.runner import train as run

    result = run(cfg, resume=resume)
    best = result.best_ap
    click.echo(f"run: {result.run_dir}")
    click.echo(f"best checkpoint: {result.best}" + (f" (validation AP {best:.4f})" if best is not None else ""))
    click.echo(f"last checkpoint: {result.last}")
    if result.best is not None:
        click.echo(f"next: sandwatch predict {result.best} SCENE.tif -o maps/")
