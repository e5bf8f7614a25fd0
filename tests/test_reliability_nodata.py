"""+-inf pixels of float scenes are nodata like NaN; a scene without one valid pixel says so on
the ``predict`` summary line and in the maps' tags instead of reading like a clean scene."""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from sandwatch.cli.main import main
from sandwatch.grid import Grid, Window
from sandwatch.imagery import open_scene

sys.path.insert(0, str(Path(__file__).parent))
from test_predict_e2e import L1C, tiny_checkpoint  # noqa: E402

GRID = Grid.from_bounds("EPSG:32644", 300000.0, 2199000.0, 301000.0, 2200000.0, 10)   # 100 x 100 px


def write_float_scene(path, fill=None, dtype="float32"):
    rng = np.random.default_rng(0)
    data = rng.uniform(0.05, 0.3, size=(13, 100, 100)).astype("float32")
    if fill == "nan":
        data[:] = np.nan
    elif fill == "inf":
        data[3, 10:20, 10:20] = np.inf          # B04
        data[5, 50:60, 50:60] = -np.inf         # B06
        data[0, 0, 0] = np.nan
    elif fill == "zeros":
        data[:] = 0
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=13, dtype=dtype, crs=GRID.crs,
                       transform=GRID.transform, **({"nodata": 0} if dtype == "uint16" else {})) as ds:
        ds.write(data.astype(dtype) if dtype != "uint16" else (data * 10000).astype(dtype))
        for i, b in enumerate(L1C, 1):
            ds.set_band_description(i, b)
    return path


def bad_pixels() -> np.ndarray:
    bad = np.zeros((100, 100), bool)
    bad[10:20, 10:20] = bad[50:60, 50:60] = True
    bad[0, 0] = True
    return bad


def test_inf_is_nodata_like_nan(tmp_path):
    scene = open_scene(write_float_scene(tmp_path / "inf_20210101.tif", "inf"))
    data, valid = scene.read()
    assert np.array_equal(~valid, bad_pixels())
    assert np.isfinite(data).all()          # the bad band's value is 0 there, as for NaN
    assert (data[3, 10:20, 10:20] == 0).all() and (data[5, 50:60, 50:60] == 0).all() and data[0, 0, 0] == 0
    # a window of one band only: B04's inf square is nodata, B06's is not
    _, valid_b04 = scene.read(Window(0, 0, 100, 100), bands="B04")
    assert (~valid_b04).sum() == 100 and not valid_b04[10:20, 10:20].any()
    d = scene.describe()
    assert d["nodata_fraction"] == pytest.approx(201 / 10000)
    assert all(np.isfinite(v) for s in d["stats"].values() for v in s.values())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    tiny_checkpoint(path, window=64)
    return path


def predict(capsys, ckpt, scene, out) -> tuple[int, str]:
    code = main(["predict", str(ckpt), str(scene), "-o", str(out), "--edge", "12", "-q"])
    return code, capsys.readouterr().out


def tags(path) -> dict:
    with rasterio.open(path) as ds:
        return ds.tags()


def test_inf_pixels_get_no_probability(tmp_path, capsys, ckpt):
    scene = write_float_scene(tmp_path / "inf_20210101.tif", "inf")
    code, out = predict(capsys, ckpt, scene, tmp_path / "maps")
    assert code == 0 and "mining polygon" in out
    with rasterio.open(tmp_path / "maps" / "inf_20210101.prob.tif") as ds:
        prob = ds.read(1)
    with rasterio.open(tmp_path / "maps" / "inf_20210101.mask.tif") as ds:
        mask = ds.read(1)
    assert np.array_equal(prob == 0, bad_pixels())          # 0 = nodata in the uint8 encoding
    assert np.array_equal(mask == 255, bad_pixels())
    t = tags(tmp_path / "maps" / "inf_20210101.prob.tif")
    assert t["sandwatch_status"] == "ok" and float(t["sandwatch_valid_fraction"]) == pytest.approx(0.9799)


@pytest.mark.parametrize("fill,dtype", [("nan", "float32"), ("zeros", "uint16")])
def test_scene_without_valid_pixels_says_so(tmp_path, capsys, ckpt, fill, dtype):
    scene = write_float_scene(tmp_path / "empty_20210101.tif", fill, dtype)
    code, out = predict(capsys, ckpt, scene, tmp_path / "maps")
    assert code == 0
    line = out.strip().splitlines()[-1]
    assert line.startswith("empty_20210101: NO DATA, not one valid pixel to predict"), line
    assert "mining polygon" not in out
    for kind in ("prob", "mask"):
        t = tags(tmp_path / "maps" / f"empty_20210101.{kind}.tif")
        assert t["sandwatch_status"].startswith("no data") and t["sandwatch_valid_pixels"] == "0"
        assert float(t["sandwatch_valid_fraction"]) == 0.0
    assert len(gpd.read_file(tmp_path / "maps" / "empty_20210101.polygons.gpkg")) == 0


def test_clean_scene_is_ok(tmp_path, capsys, ckpt):
    scene = write_float_scene(tmp_path / "clean_20210101.tif")
    code, out = predict(capsys, ckpt, scene, tmp_path / "maps")
    assert code == 0 and "mining polygon" in out and "NO DATA" not in out
    t = tags(tmp_path / "maps" / "clean_20210101.mask.tif")
    assert t["sandwatch_status"] == "ok" and t["sandwatch_valid_fraction"] == "1.000000"
