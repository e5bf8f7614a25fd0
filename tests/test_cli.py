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
