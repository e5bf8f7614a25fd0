"""Shared test helpers: paths to the real Sentinel-2 samples beside the project (skip when
absent), a UTM grid and a GeoTIFF writer for small synthetic rasters."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sandwatch.grid import Grid

# Caches (the `sandwatch models` listing) go to a folder of this test session, not the user's ~/.cache.
os.environ["SANDWATCH_CACHE"] = tempfile.mkdtemp(prefix="sandwatch-test-cache-")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data beside the project)")
    return path


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture
def scene(tmp_path):
    """A synthetic 13-band 128 x 128 px Sentinel-2 scene (UTM 44N, 10 m) and its grid."""
    from sandwatch.synthetic import make_scene

    grid = Grid.from_bounds("EPSG:32644", 400000, 2200000, 401280, 2201280, 10)
    path = tmp_path / "scene.tif"
    make_scene(path, grid, seed=1)
    return path, grid


UTM = "EPSG:32645"
X0, Y0 = 500_000.0, 2_300_000.0


def make_utm_grid(width: int, height: int, res: float = 10.0) -> Grid:
    """A north-up UTM 45N grid whose top-left corner is (X0, Y0)."""
    return Grid(UTM, Affine(res, 0, X0, 0, -res, Y0), width, height)


def write_tif(path, grid: Grid, data=None, dtype="uint8", descriptions=None):
    """A GeoTIFF on ``grid`` (zeros when ``data`` is None), band descriptions optional."""
    data = np.zeros((1, *grid.shape), dtype) if data is None else np.asarray(data, dtype)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=data.shape[0],
                       dtype=dtype, crs=grid.crs, transform=grid.transform) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or []):
            ds.set_band_description(i + 1, d)
    return path


# ---- real-data accounting: say how many ran; data present but tests skipped is a failure ----------
_REALDATA: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}


def pytest_runtest_logreport(report):
    if "realdata" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _REALDATA[report.outcome].append(f"{report.nodeid}: {report.longrepr[-1] if report.skipped else ''}")


def pytest_sessionfinish(session, exitstatus):
    if SHARED_DATA.exists() and _REALDATA["skipped"] and exitstatus == 0:
        session.exitstatus = 1      # the data is here: a skipped real-data test hides a broken path or setup


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = {k: len(v) for k, v in _REALDATA.items()}
    where = "present" if SHARED_DATA.exists() else "absent"
    terminalreporter.write_line(f"real-data tests ({SHARED_DATA} {where}): {n['passed']} passed, "
                                f"{n['failed']} failed, {n['skipped']} skipped")
    if SHARED_DATA.exists() and n["skipped"]:
        terminalreporter.write_line("real data is present but these real-data tests skipped (the run fails):", red=True)
        for line in _REALDATA["skipped"]:
            terminalreporter.write_line(f"  {line}", red=True)
