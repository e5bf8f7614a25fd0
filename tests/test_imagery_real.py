"""sandwatch.imagery on the real Sentinel-2 samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest
import rasterio

from sandwatch.bands import L1C_BANDS, L2A_BANDS
from sandwatch.grid import Window
from sandwatch.imagery import open_scene

from conftest import shared_path
from rangeserver import RangeServer

pytestmark = pytest.mark.realdata

HAVEL = ("s2-l1c-33UUU-havel",)
COGS = ("s2-l2a-29RKH-cogs",)
ITEM = "S2A_29RKH_20200219_0_L2A.json"


def test_havel_folder_l1c():
    folder = shared_path(*HAVEL)
    scene = open_scene(folder)
    assert scene.bands == L1C_BANDS
    assert scene.level == "L1C" and scene.date == dt.date(2017, 2, 16)
    assert scene.grid.crs.to_epsg() == 32633
    assert (scene.grid.width, scene.grid.height) == (1536, 768)
    assert scene.grid.res == (10.0, 10.0)
    assert tuple(scene.grid.transform)[:6] == (10.0, 0.0, 330000.0, 0.0, -10.0, 5822040.0)
    assert scene.band_resolution["B01"] == 60.0 and scene.band_resolution["B05"] == 20.0
    b02, valid = scene.read(bands="B02", units="dn")
    assert valid.mean() > 0.999
    assert abs(np.median(b02[0][valid]) - 1456) <= 16


def test_havel_b01_window_aligns_with_60m_file():
    folder = shared_path(*HAVEL)
    scene = open_scene(folder)
    # 10 m window covering 60 m pixels rows 20..39, cols 40..69
    window = Window(20 * 6, 40 * 6, 20 * 6, 30 * 6)
    up, valid = scene.read(window, bands="B01", units="dn")
    assert valid.all()
    b01 = next(folder.glob("*_B01.jp2"))
    with rasterio.open(b01) as ds:
        raw = ds.read(1, window=rasterio.windows.Window(40, 20, 30, 20)).astype(np.float64)
    # the centre 2x2 of each 6x6 block sits at the 60 m pixel's centre: bilinear gives ~ its value
    centres = up[0].reshape(20, 6, 30, 6)[:, 2:4, :, 2:4].mean(axis=(1, 3))
    assert np.corrcoef(centres.ravel(), raw.ravel())[0, 1] > 0.97
    assert np.median(np.abs(centres - raw)) < 0.05 * np.median(raw)
    # a shift by one 60 m pixel would correlate much worse than the aligned read
    shifted = np.corrcoef(centres[:, 1:].ravel(), raw[:, :-1].ravel())[0, 1]
    assert shifted < np.corrcoef(centres.ravel(), raw.ravel())[0, 1]
    assert 1000 < np.median(raw) < 3000  # coastal-aerosol DN over a winter scene


# ---- STAC over HTTP -------------------------------------------------------------------------------------
@pytest.fixture
def served_cogs():
    folder = shared_path(*COGS)
    with RangeServer(folder) as server:
        yield folder, server.url, server


def _rewrite(item: dict, base: str) -> dict:
    item = json.loads(json.dumps(item))
    for asset in item["assets"].values():
        if asset["href"].startswith("https://"):
            asset["href"] = f"{base}{asset['href'].rsplit('/', 1)[1]}"
    return item


@pytest.mark.slow
def test_stac_item_over_http(served_cogs, tmp_path):
    folder, url, handler = served_cogs
    item = json.loads((folder / ITEM).read_text())
    path = tmp_path / ITEM
    path.write_text(json.dumps(_rewrite(item, url + "/")))
    scene = open_scene(path, allow_remote=["127.0.0.1"])   # a local item reads the network only when told
    assert scene.bands == L2A_BANDS
    assert scene.level == "L2A" and scene.date == dt.date(2020, 2, 19)
    assert scene.offset == 0.0 and "02.14" in scene.offset_source  # baseline before 04.00
    assert (scene.grid.width, scene.grid.height) == (1098, 1098) and scene.grid.res == (100.0, 100.0)
    assert scene.grid.crs.to_epsg() == 32629
    assert scene.band_resolution["B02"] == 100.0 and scene.band_resolution["B01"] == 600.0
    assert all(b.startswith(url) for b in (f["file"] for f in scene.describe(stats=False)["bands"]))
    assert any("bytes=" in r for r in handler.requests)  # GDAL used range requests

    window = Window(300, 500, 160, 160)
    data, valid = scene.read(window, units="dn")
    assert valid.all()
    with rasterio.open(folder / "B02.tif") as ds:
        direct = ds.read(1, window=window.to_rasterio()).astype(np.float32)
    np.testing.assert_array_equal(data[scene.bands.index("B02")], direct)
    local = open_scene(folder)  # same files, read from disk
    local_data, _ = local.read(window, units="dn")
    np.testing.assert_array_equal(data, local_data)
    # desert sand: bright in every band, reflectance well above water
    refl, _ = scene.read(window, bands="B04,B08,B11")
    assert (np.median(refl, axis=(1, 2)) > 0.15).all()

    scl = scene.read_scl()
    with rasterio.open(folder / "SCL.tif") as ds:
        raw_scl = ds.read(1)
    np.testing.assert_array_equal(scl[::2, ::2], raw_scl)  # nearest: every 200 m pixel -> 2x2
    assert set(np.unique(scl)) <= set(range(12)) and np.bincount(scl.ravel()).argmax() == 5


def test_stac_relative_hrefs_local_and_http(served_cogs, tmp_path):
    folder, url, handler = served_cogs
    item = json.loads((folder / ITEM).read_text())
    # local: hrefs relative to the item file (not to its s3:// self link)
    rel = json.loads(json.dumps(item))
    for asset in rel["assets"].values():
        if asset["href"].startswith("https://"):
            asset["href"] = os.path.relpath(folder / asset["href"].rsplit("/", 1)[1], tmp_path)
    (tmp_path / "rel.json").write_text(json.dumps(rel))
    scene = open_scene(tmp_path / "rel.json", bands="B02,B8A", allow_outside=True)   # hrefs leave the item's folder
    assert scene.bands == ("B02", "B8A")
    # http: an item served beside its assets with bare file names as hrefs
    rel_http = json.loads(json.dumps(item))
    for asset in rel_http["assets"].values():
        if asset["href"].startswith("https://"):
            asset["href"] = asset["href"].rsplit("/", 1)[1]
    handler.extra["/item.json"] = json.dumps(rel_http).encode()
    remote = open_scene(f"{url}/item.json", bands="B02,B8A")
    a, _ = scene.read(Window(0, 0, 64, 64), units="dn")
    b, _ = remote.read(Window(0, 0, 64, 64), units="dn")
    np.testing.assert_array_equal(a, b)
    assert remote.date == dt.date(2020, 2, 19)


def test_cli_info_json_on_havel():
    from click.testing import CliRunner

    from sandwatch.cli.imagery import info

    folder = shared_path(*HAVEL)
    result = CliRunner().invoke(info, [str(folder), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert [b["name"] for b in d["bands"]] == list(L1C_BANDS)
    assert d["grid"]["crs"] == "EPSG:32633" and (d["grid"]["width"], d["grid"]["height"]) == (1536, 768)
    assert d["level"] == "L1C" and d["date"] == "2017-02-16"
    assert abs(d["stats"]["B02"]["median"] - 1456) <= 16
    assert d["nodata_fraction"] < 0.001


def test_india_rgb_geotiff():
    path = shared_path("india-sandmining", "bhargavi-khordha-2018-12", "rgb.tif")
    scene = open_scene(path)
    assert scene.bands == ("R", "G", "B") and scene.level == "RGB"
    assert (scene.grid.width, scene.grid.height) == (459, 1231) and scene.grid.crs.to_epsg() == 4326
    assert 9.0 < scene.band_resolution["R"] < 10.5
    ql = scene.quicklook(max_size=256)
    assert ql.shape == (256, 96, 3)
