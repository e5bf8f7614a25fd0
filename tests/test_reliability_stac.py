"""STAC asset hrefs are contained: relative ones stay in the item's folder, local items read their
assets from beside them and the network only for hosts allowed, remote items read from their
own server only. Served for real on 127.0.0.1 by a small static server that honours HTTP
Range (what GDAL's /vsicurl/ sends; Python's http.server ignores it)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.imagery import open_scene
from conftest import shared_path, write_tif
from rangeserver import RangeServer

COGS = ("s2-l2a-29RKH-cogs",)
ITEM = "S2A_29RKH_20200219_0_L2A.json"


# ---- a small local scene to serve -----------------------------------------------------------------------
GRID = Grid.from_bounds("EPSG:32633", 300000, 5800000, 300640, 5800640, 10)     # 64 x 64 px


def item_json(assets: dict[str, str], item_id="S2B_33UUU_20230105_0_L2A") -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "geometry": {"type": "Point", "coordinates": [12.6, 52.5]}, "bbox": [12.6, 52.5, 12.6, 52.5],
            "properties": {"datetime": "2023-01-05T10:21:01Z", "s2:processing_baseline": "05.09",
                           "earthsearch:boa_offset_applied": True},
            "links": [], "assets": {k: {"href": v, "type": "image/tiff"} for k, v in assets.items()}}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "item"
    d.mkdir()
    rng = np.random.default_rng(0)
    for band in ("B02", "B03", "B11"):
        write_tif(d / f"{band}.tif", GRID, rng.integers(500, 3000, (1, 64, 64)), dtype="uint16")
    (tmp_path / "secret.tif").write_bytes((d / "B02.tif").read_bytes())      # outside the item's folder
    return d


def write_item(path: Path, assets: dict[str, str]) -> Path:
    path.write_text(json.dumps(item_json(assets)))
    return path


def refused(call, *words) -> str:
    with pytest.raises(SandwatchError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


# ---- local items --------------------------------------------------------------------------------------
@pytest.mark.parametrize("href", ["../secret.tif", "../../../../../../etc/passwd", "/etc/passwd", "file:///etc/passwd",
                                  "sub/../../secret.tif"])
def test_local_item_hrefs_stay_in_its_folder(folder, href):
    path = write_item(folder / "item.json", {"blue": "B02.tif", "green": href})
    refused(lambda: open_scene(path), str(path), "asset 'green' points outside the item's folder", href,
            "--allow-outside")


def test_allow_outside_lifts_it(folder):
    path = write_item(folder / "item.json", {"blue": "B02.tif", "green": "../secret.tif"})
    scene = open_scene(path, allow_outside=True)
    assert scene.bands == ("B02", "B03")
    a, _ = scene.read(bands="B02")
    b, _ = scene.read(bands="B03")
    assert np.array_equal(a, b)           # secret.tif is a copy of B02
    # /etc/passwd is not a raster: still one line, never a traceback
    path = write_item(folder / "passwd.json", {"blue": "B02.tif", "green": "/etc/passwd"})
    refused(lambda: open_scene(path, allow_outside=True), "/etc/passwd", "cannot be read as a raster")


def test_cli_one_line_for_an_escaping_href(folder, capsys):
    path = write_item(folder / "item.json", {"blue": "B02.tif", "green": "../../etc/passwd"})
    assert main(["info", str(path), "--no-stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "outside the item's folder" in err


def test_local_item_with_remote_hrefs_needs_the_host_allowed(folder, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for band in ("B02", "B03"):
        (served / f"{band}.tif").write_bytes((folder / f"{band}.tif").read_bytes())
        (folder / f"{band}.tif").unlink()          # not beside the item: only on the server
    with RangeServer(served) as srv:
        path = write_item(folder / "item.json", {"blue": f"{srv.url}/B02.tif", "green": f"{srv.url}/B03.tif"})
        refused(lambda: open_scene(path), "asset 'blue' is on " + srv.netloc, "a local item does not read from "
                "the network", "--allow-remote " + srv.netloc)
        assert srv.requests == []                  # refused before any request
        scene = open_scene(path, allow_remote=[srv.netloc])
        data, valid = scene.read(Window(10, 10, 20, 20), units="dn")
        with rasterio.open(served / "B03.tif") as ds:
            assert np.array_equal(data[1], ds.read(1, window=((10, 30), (10, 30))))
        assert any("bytes=" in r for r in srv.requests)       # read with range requests
        assert open_scene(path, allow_remote=["127.0.0.1"]).bands == ("B02", "B03")     # the host alone works too


def test_assets_beside_a_local_item_are_used_first(folder):
    """An item downloaded with its assets: https hrefs, files beside it: read offline."""
    path = write_item(folder / "item.json", {"blue": "https://attacker.invalid/x/B02.tif",
                                             "green": "https://sentinel-cogs.example/y/B03.tif"})
    scene = open_scene(path)
    assert [Path(f["file"]).parent for f in scene.describe(stats=False)["bands"]] == [folder, folder]


# ---- remote items -------------------------------------------------------------------------------------
def test_remote_item_reads_from_its_own_server(folder):
    item = item_json({"blue": "B02.tif", "green": "./B03.tif", "swir16": "B11.tif"})
    with RangeServer(folder, {"/item.json": json.dumps(item).encode()}) as srv:
        scene = open_scene(f"{srv.url}/item.json")
        assert scene.bands == ("B02", "B03", "B11") and scene.date == dt.date(2023, 1, 5)
        local = open_scene(write_item(folder / "local.json", {"blue": "B02.tif", "green": "B03.tif",
                                                                "swir16": "B11.tif"}))
        w = Window(0, 0, 64, 64)
        assert np.array_equal(scene.read(w, units="dn")[0], local.read(w, units="dn")[0])
        assert any("bytes=" in r for r in srv.requests)


@pytest.mark.parametrize("href,words", [
    ("{other}/B03.tif", "on another server"),
    ("http://attacker.invalid/B03.tif", "on another server (attacker.invalid)"),
    ("../B03.tif", "points outside the item's folder"),
    ("/etc/passwd", "points at a local file"),
    ("file:///etc/passwd", "points at a local file"),
])
def test_remote_item_cannot_reach_elsewhere(folder, tmp_path, href, words):
    with RangeServer(tmp_path) as other:
        item = item_json({"blue": "B02.tif", "green": href.format(other=other.url)})
        with RangeServer(folder, {"/items/item.json": json.dumps(item).encode()}) as srv:
            refused(lambda: open_scene(f"{srv.url}/items/item.json"), words)
            assert [r.split()[1] for r in srv.requests] == ["/items/item.json"]   # only the item was fetched
        assert other.requests == []


def test_remote_item_other_host_when_allowed(folder, tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "B03.tif").write_bytes((folder / "B03.tif").read_bytes())
    with RangeServer(tmp_path / "mirror") as other:
        item = item_json({"blue": "B02.tif", "green": f"{other.url}/B03.tif"})
        with RangeServer(folder, {"/item.json": json.dumps(item).encode()}) as srv:
            scene = open_scene(f"{srv.url}/item.json", allow_remote=[other.netloc])
            assert scene.bands == ("B02", "B03")
            scene.read(Window(0, 0, 8, 8))
        assert any("B03.tif" in r for r in other.requests)


# ---- the real Earth Search item, offline and over HTTP ----------------------------------------------------
def test_real_item_with_its_cogs_beside_it_reads_offline(capsys):
    folder = shared_path(*COGS)
    assert main(["info", str(folder / ITEM), "--json", "--no-stats"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["date"] == "2020-02-19" and d["level"] == "L2A" and d["processing_baseline"] == "02.14"
    assert all(Path(b["file"]).parent == folder.resolve() for b in d["bands"])
    assert len(d["bands"]) == 12 and d["scl"] == str(folder.resolve() / "SCL.tif")


def test_real_folder_takes_date_and_metadata_from_its_item(capsys):
    folder = shared_path(*COGS)
    assert main(["info", str(folder), "--no-stats"]) == 0
    out = capsys.readouterr().out
    assert "date       2020-02-19" in out and "date unknown" not in out
    assert "STAC item  " in out and ITEM in out
    assert "offset: STAC s2:processing_baseline=02.14" in out and "baseline   02.14" in out


@pytest.mark.slow
def test_real_item_served_remotely(tmp_path):
    folder = shared_path(*COGS)
    item = json.loads((folder / ITEM).read_text())
    for asset in item["assets"].values():
        if asset["href"].startswith("https://"):
            asset["href"] = asset["href"].rsplit("/", 1)[1]           # relative: beside the item on the server
    with RangeServer(folder, {"/S2A_29RKH_20200219_0_L2A/item.json": json.dumps(item).encode()}) as srv:
        refused(lambda: open_scene(f"{srv.url}/S2A_29RKH_20200219_0_L2A/item.json"), "404")     # not there
    with RangeServer(folder, {"/item.json": json.dumps(item).encode()}) as srv:
        scene = open_scene(f"{srv.url}/item.json")
        assert scene.date == dt.date(2020, 2, 19) and scene.level == "L2A"
        data, valid = scene.read(Window(300, 500, 64, 64), bands="B02", units="dn")
        with rasterio.open(folder / "B02.tif") as ds:
            assert np.array_equal(data[0], ds.read(1, window=((300, 364), (500, 564))))
        assert any("bytes=" in r for r in srv.requests)
