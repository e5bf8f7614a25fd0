"""The ``sandwatch`` command.

Sub-commands live in one module per stage (``sandwatch/cli/<stage>.py``) and are imported only
when used, so ``sandwatch --help`` stays fast (torch is not imported for it). Errors the user
can fix (:class:`sandwatch.errors.SandwatchError`) are printed as one line, exit status 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from sandwatch import __version__
from sandwatch.errors import SandwatchError, forget_warnings

# name -> (module, attribute, one-line help shown by `sandwatch --help`), in pipeline order.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sites": ("sandwatch.cli.sites", "sites", "Study areas from a list of mining sites (CSV/GeoJSON points)."),
    "acquire": ("sandwatch.cli.acquire", "acquire", "Sentinel-2 for study areas through STAC: search, fetch, update."),
    "info": ("sandwatch.cli.imagery", "info", "Describe a Sentinel-2 scene: bands, grid, level, statistics."),
    "labels": ("sandwatch.cli.labels", "labels", "Rasterise mining polygons onto a scene's grid."),
    "aoi": ("sandwatch.cli.aoi", "aoi", "Area of interest: everything within N metres of a river."),
    "dataset": ("sandwatch.cli.dataset", "dataset", "Dataset manifests: import, statistics, geographic split."),
    "demo-data": ("sandwatch.cli.synthetic", "demo_data", "Write synthetic Sentinel-2 demo sites to a folder."),
    "models": ("sandwatch.cli.models", "models", "The model zoo: list architectures, inspect weight files."),
    "pretrain": ("sandwatch.cli.pretrain", "pretrain", "Continue self-supervised pre-training on unlabelled river windows."),
    "train": ("sandwatch.cli.train", "train", "Train a model on a dataset manifest."),
    "predict": ("sandwatch.cli.predict", "predict", "Map mining probability on new scenes with a checkpoint."),
    "evaluate": ("sandwatch.cli.evaluate", "evaluate", "Precision, recall, PR curve, average precision; a report."),
    "monitor": ("sandwatch.cli.monitor", "monitor", "Follow a site over many dates; alert on new mining."),
    "alerts": ("sandwatch.cli.alerts", "alerts", "Pixel alerts (provisional/confirmed), layers, delivery, reviews."),
    "serve": ("sandwatch.cli.serve", "serve", "A local web map: review alerts, draw and correct mining polygons."),
    "export": ("sandwatch.cli.export", "export", "Stretched 8-bit true-colour quicklook COGs for reviewers."),
}


def _available() -> dict[str, tuple[str, str, str]]:
    out = {}
    for name, spec in COMMANDS.items():
        if importlib.util.find_spec(spec[0]) is not None:
            out[name] = spec
    return out


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx):
        return list(_available())

    def get_command(self, ctx, name):
        spec = _available().get(name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        return getattr(module, spec[1])

    def format_commands(self, ctx, formatter):
        rows = [(name, spec[2]) for name, spec in _available().items()]
        if rows:
            with formatter.section("Commands (in pipeline order)"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sandwatch")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show what the libraries print (Lightning tips, MLflow database set-up, known deprecations).")
def cli(verbose):
    """Find and monitor river sand mining in Sentinel-2 imagery.

    \b
    A typical run, from nothing to a map of mining:
      sandwatch demo-data demo/ --sites 6          # or bring your own scenes + polygons
      sandwatch info demo/site00/2021-01-15.tif     # what is in a scene
      sandwatch dataset split demo/manifest.yaml --clusters 3
      sandwatch train config.yaml                   # -> run/checkpoints/best.pt
      sandwatch predict run/checkpoints/best.pt SCENE.tif -o maps/

    Every command has its own --help with examples.
    """
    from sandwatch.chatter import quiet_libraries

    quiet_libraries(verbose)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)   # above any progress bar, not through it


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning  # users see what happened, not our source lines
    forget_warnings()                         # one run: each file is warned about once
    try:
        rv = cli.main(args=argv, prog_name="sandwatch", standalone_mode=False)
    except SandwatchError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    except OSError as err:
        # A full or read-only disk met outside sandwatch.io (a stage's own mkdir, a library's
        # file): still one line naming the file, not a traceback. Other OS errors are bugs.
        from sandwatch.io import write_error

        target = err.filename or "output"
        mapped = write_error(target, err) if err.errno is not None else None
        if mapped is None:
            raise
        click.echo(f"error: {mapped}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    return rv if isinstance(rv, int) else 0  # ctx.exit(n) comes back as n here


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
