"""``sandwatch train``: parse arguments, call :func:`sandwatch.train.runner.train`."""

from __future__ import annotations

import click


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the YAML file (dotted key, YAML value); repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in run_dir from its last checkpoint (exactly).")
@click.option("--print-config", is_flag=True, help="Print the resolved config (defaults filled in) and exit.")
def train(config, overrides, resume, print_config):
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
    """
    from sandwatch.train.config import load_config

    cfg = load_config(config, list(overrides))
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    from sandwatch.train.runner import train as run

    result = run(cfg, resume=resume)
    best = result.best_ap
    click.echo(f"run: {result.run_dir}")
    click.echo(f"best checkpoint: {result.best}" + (f" (validation AP {best:.4f})" if best is not None else ""))
    click.echo(f"last checkpoint: {result.last}")
