"""``sandwatch pretrain``: parse arguments, call :func:`sandwatch.pretrain.runner.pretrain`."""

from __future__ import annotations

import click


@click.command("pretrain", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in run_dir from its last checkpoint (exactly).")
@click.option("--print-config", is_flag=True, help="Print the resolved config (defaults filled in) and exit.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the YAML file (dotted key, YAML value); repeatable.")
def pretrain(config, overrides, resume, print_config):
    """Continue the self-supervised pre-training of an encoder on unlabelled river windows.

    Labels are scarce, river imagery is not: windows are drawn inside the river AOI of every
    scene of a manifest (annotations are not read; observations without them are fine) or of
    a folder of scenes (`scenes:`; AOI from each scene's water index), and the encoder learns
    from them without labels, starting from a published checkpoint (`model.weights`) or from
    scratch. Two methods, the ones the published encoders were made with:

    \b
      ssl4eo-resnet18/50  MoCo v2 (or v3): two augmented views of a window (crop, rotation,
                          colour and haze); the same place on another date when the manifest
                          has several dates of a site (seasonal contrast, as SSL4EO-S12)
      satmae-base/large   masked autoencoding: 75 % of each band group's patches hidden,
                          the decoder (re-created when the checkpoint lacks it) redraws them
      --set method=mim    for the ResNets: masked image modelling (SimMIM): 60 % of 16 px
                          squares hidden, a U-Net decoder redraws them; keeps the colour
                          cues that contrastive views teach the encoder to ignore

    \b
    Output, in run_dir:
      checkpoints/pretrained.pth  the encoder in the published layout (SSL4EO MoCo / SatMAE):
                                  give it to train as model.weights, like the published file
      checkpoints/last.ckpt       resume point, written every epoch
      mlflow.db, metrics.json     loss per step and per epoch

    \b
    Examples:
      sandwatch pretrain configs/pretrain-cpu.yaml --set manifest=demo-out/data/manifest.yaml
      sandwatch pretrain configs/pretrain.yaml --set model.weights=B13_rn50_moco_0099_ckpt.pth
      sandwatch pretrain configs/pretrain.yaml --set model.arch=satmae-large \\
          --set model.weights=pretrain-vit-large-e199.pth --set data.window=96
      sandwatch pretrain configs/pretrain-cpu.yaml --resume          # after a crash or kill
      sandwatch train configs/linear-probe.yaml --set model.arch=ssl4eo-resnet18 \\
          --set model.weights=runs/pretrain-cpu/checkpoints/pretrained.pth   # then probe it

    Precision and devices as in train: --set trainer.precision=bf16-mixed,
    --set trainer.strategy=ddp --set trainer.devices=4.
    """
    from sandwatch.pretrain.config import load_pretrain_config

    cfg = load_pretrain_config(config, list(overrides))
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    from sandwatch.pretrain.runner import pretrain as run

    result = run(cfg, resume=resume)
    if result.history:
        first, last = result.history[0], result.history[-1]
        click.echo(f"loss: {first['loss']:.4f} (epoch {first['epoch']}) -> {last['loss']:.4f} (epoch {last['epoch']})")
    click.echo(f"run: {result.run_dir}")
    click.echo(f"pre-trained encoder: {result.weights}")
    click.echo(f"next: sandwatch train CONFIG --set model.arch={cfg.model.arch} --set model.weights={result.weights} "
               "--set model.freeze_encoder=true")
