"""``sandwatch models``: list the model zoo; ``sandwatch models inspect``: check a weights file."""

from __future__ import annotations

import json

import click


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def _bands_text(bands) -> str:
    bands = list(bands)
    return f"{len(bands)}: {','.join(bands)}"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_context
def models(ctx, as_json):
    """The model zoo: list architectures, inspect weight files.

    With no sub-command, lists every model with its input bands, total parameters, the
    parameters that train by default (linear probing for the pretrained encoders: only the
    decoder; everything for the U-Net, which trains from scratch), the published learning
    rate and batch size, and the weight-file layouts it reads.

    \b
    Examples:
      sandwatch models
      sandwatch models --json
      sandwatch models inspect B13_rn50_moco_0099.pth
      sandwatch models inspect pretrain-vit-large-e199.pth --arch satmae-large
    """
    if ctx.invoked_subcommand is not None:
        return
    from sandwatch.models.listing import zoo_listing

    listing = zoo_listing()
    rows = listing["models"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    head = (f"{'name':<17} {'bands':<46} {'parameters':>11} {'trainable':>11}  {'encoder':<8} "
            f"{'lr':>7} {'batch':>5}  window  weights")
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        bands = ",".join(r["bands"])
        bands = bands if len(bands) <= 46 else bands[:43] + "..."
        click.echo(f"{r['name']:<17} {bands:<46} {_millions(r['parameters']):>11} {_millions(r['trainable']):>11}  "
                   f"{'frozen' if r['freeze_encoder'] else 'trained':<8} {r['lr']:>7g} {r['batch_size']:>5}  "
                   f"x{r['window_multiple']:<5} {','.join(r['weights']) or '-'}")
    click.echo("\ntrainable = parameters that train by default (encoder frozen: the decoder only); "
               "lr, batch = the published values.")
    click.echo("weight layouts (`sandwatch models inspect FILE` checks a file):")
    for layout in listing["layouts"]:
        click.echo(f"  {layout['name']}: {layout['description']}")


@models.command("inspect")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--arch", default=None, help="Model to load the file into (default: recognised from the file).")
@click.option("--bands", default=None, help="Band names of the file's input channels, comma-separated "
                                            "(default: implied by the file, e.g. 13 channels = B01..B12 with B10).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also list every loaded and ignored tensor.")
@click.pass_context
def inspect(ctx, weights, arch, bands, as_json, verbose):
    """Check that a pretrained weights file loads, before a long training job.

    Recognises the layout (any the zoo reads, listed by `sandwatch models`, or a sandwatch
    checkpoint), the architecture and the band count; loads the file into the matching model and prints the loaded, missing and unexpected tensors. Exits with status 1
    when the file would not load, 2 when it cannot be read. A file that needs unsafe
    unpickling (anything beyond tensors, plain containers and argparse.Namespace) is refused
    without running any of it.

    \b
    Example:
      sandwatch models inspect ~/weights/B13_rn18_moco_0099_ckpt.pth
    """
    from sandwatch.bands import parse_band_list
    from sandwatch.models.registry import inspect_weights
    from sandwatch.models.weights import describe_layout

    band_list = parse_band_list(bands) if bands else None
    result = inspect_weights(weights, arch=arch, bands=band_list)
    rep, wf = result.report, result.weights
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"file:        {wf.path}")
        click.echo(f"layout:      {wf.layout}: {describe_layout(wf.layout)}")
        detected = wf.arch or "not recognised"
        click.echo(f"architecture: {result.arch}" + ("" if wf.arch == result.arch else f" (file looks like: {detected})"))
        click.echo(f"file bands:  {wf.n_bands if wf.n_bands else '?'} input channels")
        click.echo(f"model bands: {_bands_text(result.bands)}")
        if wf.options:
            click.echo(f"options:     {wf.options}")
        for k, v in wf.info.items():
            click.echo(f"{k + ':':<12} {v}")
        click.echo(f"loaded:      {len(rep.loaded)} tensors")
        if verbose:
            for k in rep.loaded:
                click.echo(f"  + {k}")
        click.echo(f"ignored:     {len(rep.ignored)} tensors (pretraining extras)")
        if verbose:
            for k in rep.ignored:
                click.echo(f"  . {k}")
        for title, keys, mark in (("missing", rep.missing, "-"), ("unexpected", rep.unexpected, "?"),
                                  ("wrong shape", rep.mismatched, "!")):
            click.echo(f"{title + ':':<12} {len(keys)}")
            for k in keys:
                click.echo(f"  {mark} {k}")
        if rep.ok:
            click.echo(f"result:      OK, loads into {result.arch}")
        else:
            click.echo(f"result:      WOULD NOT LOAD into {result.arch}: {rep.problem(3)}")
    if not rep.ok:
        # a ClickException (not ctx.exit) so that sandwatch.cli.main returns the status
        err = click.ClickException(f"{wf.path} would not load into {result.arch} (see the lists above)")
        err.exit_code = 1
        raise err
