"""The CLI shell: help lists the stages, user errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from sandwatch.cli.main import main


def test_help_lists_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Find and monitor river sand mining" in out
    for name in ("info", "labels", "aoi", "dataset", "demo-data"):
        assert name in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_sandwatch_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    proc = subprocess.run([sys.executable, "-m", "sandwatch", "dataset", "stats", str(missing)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {missing}: no such manifest file; check the path"]


def _walk(group, ctx, path=()):
    """Every command and sub-command under ``group`` as its argv path."""
    import click

    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*path, name)
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, click.Context(cmd, info_name=name, parent=ctx), (*path, name))


def test_every_command_has_a_help_that_teaches(capsys):
    """Each command and sub-command: --help exits 0, says what it does and shows an example or
    at least one option with its help; none is missing from the top-level list."""
    import click

    from sandwatch.cli.main import COMMANDS, cli

    ctx = click.Context(cli, info_name="sandwatch")
    paths = list(_walk(cli, ctx))
    assert {p[0] for p in paths} == set(COMMANDS)
    assert len(paths) > len(COMMANDS)                  # sub-commands are walked too
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"Usage: sandwatch {' '.join(path)}"), path
        body = out.split("\n", 2)[-1].strip()
        assert len(body.split()) >= 8, (path, body)   # a sentence at least, not an empty help
        assert "Options:" in out or "Commands:" in out, path
