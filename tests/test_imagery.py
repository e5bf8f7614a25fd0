"""sandwatch.imagery on small synthetic rasters written in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from sandwatch.bands import L1C_BANDS, L2A_BANDS
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.imagery import date_from_text, open_scene

CRS = "EPSG:32633"
X0, Y0 = 330000.0, 5822040.0


def write_tif(path, data, res=10.0, crs=CRS, x0=X0, y0=Y0, nodata=None, descriptions=None, tags=None,
              scales=None, offsets=None, driver="GTiff", **extra):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), **extra)
    if nodata is not None:
        profile["nodata"] = nodata
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or []):
            ds.set_band_description(i + 1, d)
        if tags:
            ds.update_tags(**tags)
        if scales is not None:
            ds.scales = scales
        if offsets is not None:
            ds.offsets = offsets
    return path


def ramp(count, h, w, start=100):
    """uint16 bands whose values encode band, row and column: 1000*b + 10*r + c + start."""
    b, r, c = np.meshgrid(np.arange(count), np.arange(h), np.arange(w), indexing="ij")
    return (1000 * b + 10 * r + c + start).astype(np.uint16)


def one_line_error(excinfo, name):
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert str(name) in msg
    return msg


# ---- multi-band GeoTIFF ---------------------------------------------------------------------------
def test_band_names_from_descriptions_and_aliases(tmp_path):
    path = write_tif(tmp_path / "s.tif", ramp(4, 6, 8), descriptions=["B2", "green", "red", "nir"])
    scene = open_scene(path)
    assert scene.bands == ("B02", "B03", "B04", "B08")
    assert scene.grid.same_as(Grid(CRS, Affine(10, 0, X0, 0, -10, Y0), 8, 6))
    assert scene.band_resolution == {b: 10.0 for b in scene.bands}
    data, valid = scene.read(units="dn")
    np.testing.assert_array_equal(data, ramp(4, 6, 8).astype(np.float32))
    assert valid.all()
    # a subset in another order
    data, _ = scene.read(bands="B08,B02", units="dn")
    np.testing.assert_array_equal(data[0], ramp(4, 6, 8)[3])
    np.testing.assert_array_equal(data[1], ramp(4, 6, 8)[0])


def test_rgb_uint8_level_and_scale(tmp_path):
    rgb = np.stack([np.full((4, 5), v, np.uint8) for v in (51, 102, 255)])
    path = write_tif(tmp_path / "rgb.tif", rgb, descriptions=["vis-red", "vis-green", "vis-blue"])
    scene = open_scene(path)
    assert scene.bands == ("R", "G", "B") and scene.level == "RGB"
    assert (scene.offset, scene.scale) == (0.0, 255.0)
    data, valid = scene.read()
    np.testing.assert_allclose(data[:, 0, 0], [0.2, 0.4, 1.0], rtol=1e-6)
    # true colour is not Sentinel-2 reflectance: asking for B04 is refused with the fix
    with pytest.raises(SandwatchError, match="rgb.tif: is a true-colour.*bands R,G,B"):
        scene.read(bands=["B04"])
    ql = scene.quicklook()
    assert ql.shape == (4, 5, 3) and ql.dtype == np.uint8
    assert tuple(ql[0, 0]) == (51, 102, 255)
    # without descriptions, 3 uint8 bands are true colour too
    assert open_scene(write_tif(tmp_path / "rgb2.tif", rgb)).bands == ("R", "G", "B")


def test_bands_option_and_count_mismatch(tmp_path):
    path = write_tif(tmp_path / "four.tif", ramp(4, 3, 3))
    with pytest.raises(SandwatchError) as e:
        open_scene(path)
    assert "pass --bands with 4 names" in one_line_error(e, path)
    scene = open_scene(path, bands="B02,B03,B04,B08")
    assert scene.bands == ("B02", "B03", "B04", "B08")
    with pytest.raises(SandwatchError) as e:
        open_scene(path, bands=",".join(L1C_BANDS))
    assert "has 4 bands but 13 names were given; pass --bands with 4 names" in one_line_error(e, path)
    with pytest.raises(SandwatchError) as e:
        open_scene(path, bands="B02,B03,B04,B99")
    assert "B99" in str(e.value)
    with pytest.raises(SandwatchError):
        open_scene(path, bands="B02,B03,B02,B08")


@pytest.mark.parametrize("count,order,level", [(13, L1C_BANDS, "L1C"), (12, L2A_BANDS, "L2A")])
def test_default_band_orders(tmp_path, count, order, level):
    scene = open_scene(write_tif(tmp_path / "x.tif", ramp(count, 2, 2)))
    assert scene.bands == order and scene.level == level
    data, _ = scene.read(bands=["B12"], units="dn")
    assert data[0, 0, 0] == 1000 * (count - 1) + 100


def test_reflectance_and_offsets(tmp_path):
    dn = np.array([[[0, 1000, 1500], [2000, 11000, 1]]], np.uint16)
    path = write_tif(tmp_path / "T33UUU_20230105_B02.tif", dn)
    scene = open_scene(path)
    assert scene.bands == ("B02",) and scene.date == dt.date(2023, 1, 5)
    # a date after 2022-01-25 alone does not imply the offset (Earth Engine harmonised exports)
    assert scene.offset == 0.0
    data, valid = scene.read()
    np.testing.assert_allclose(data[0], [[0, 0.1, 0.15], [0.2, 1.1, 0.0001]], rtol=1e-6)
    assert valid.tolist() == [[False, True, True], [True, True, True]]
    scene = open_scene(path, offset=1000)
    data, valid = scene.read()
    np.testing.assert_allclose(data[0], [[0, 0, 0.05], [0.1, 1.0, -0.0999]], rtol=1e-5, atol=1e-7)
    assert data[0, 0, 0] == 0 and not valid[0, 0]  # nodata stays 0, not -0.1
    dn_data, _ = scene.read(units="dn")
    np.testing.assert_array_equal(dn_data[0], dn[0].astype(np.float32))
    # GDAL scale/offset metadata (reflectance = DN * 1e-4 - 0.1) means offset 1000
    meta = write_tif(tmp_path / "meta.tif", dn, descriptions=["B02"], scales=[0.0001], offsets=[-0.1])
    assert open_scene(meta).offset == 1000.0
    tagged = write_tif(tmp_path / "tag.tif", dn, descriptions=["B02"], tags={"BOA_ADD_OFFSET": "-1000"})
    assert open_scene(tagged).offset == 1000.0
    assert open_scene(tagged, offset=0).offset == 0.0
    # tags as written by sandwatch.synthetic: RADIO_ADD_OFFSET, QUANTIFICATION_VALUE
    syn = write_tif(tmp_path / "syn.tif", dn, descriptions=["B02"],
                    tags={"RADIO_ADD_OFFSET": "0", "QUANTIFICATION_VALUE": "1000", "PROCESSING_LEVEL": "L2A"})
    scene = open_scene(syn)
    assert (scene.offset, scene.scale, scene.level) == (0.0, 1000.0, "L2A")
    assert scene.read()[0][0, 1, 0] == pytest.approx(2.0)


def test_windowed_and_boundless_reads(tmp_path):
    data = ramp(2, 10, 12)
    data[1, 4, 5] = 0  # nodata in one band only
    path = write_tif(tmp_path / "s.tif", data, descriptions=["B03", "B08"], nodata=0)
    scene = open_scene(path)
    d, v = scene.read(Window(3, 4, 3, 3), units="dn")
    np.testing.assert_array_equal(d, data[:, 3:6, 4:7].astype(np.float32))
    assert v.tolist() == [[True] * 3, [True, False, True], [True] * 3]
    # a window hanging over the top-left corner
    d, v = scene.read(Window(-2, -3, 5, 6), units="dn")
    assert d.shape == (2, 5, 6)
    assert not v[:2].any() and not v[:, :3].any() and v[2:, 3:].all()
    assert (d[:, :2] == 0).all() and (d[:, :, :3] == 0).all()
    np.testing.assert_array_equal(d[:, 2:, 3:], data[:, :3, :3].astype(np.float32))
    # over the bottom-right corner and entirely outside
    d, v = scene.read(Window(8, 10, 4, 4), units="dn")
    assert v.sum() == 4 and d[0, 1, 1] == data[0, 9, 11]
    d, v = scene.read(Window(50, 50, 4, 4))
    assert not v.any() and not d.any()
    # missing bands: error by default, zeros on request
    with pytest.raises(SandwatchError) as e:
        scene.read(bands="B03,B11")
    one_line_error(e, path)
    d, v = scene.read(Window(0, 0, 2, 2), bands="B03,B11", fill_missing=True, units="dn")
    assert (d[1] == 0).all() and v.all() and d[0, 0, 0] == 100


def test_big_tile_window_read_is_windowed(tmp_path):
    """A 160 x 160 window of a 10980 x 10980 (sparse, tiled) file reads only that window."""
    path = tmp_path / "T33UUU_20200101T000000_B02.tif"
    profile = dict(driver="GTiff", width=10980, height=10980, count=1, dtype="uint16", crs=CRS, nodata=0,
                   transform=Affine(10, 0, X0, 0, -10, Y0), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", SPARSE_OK=True)
    block = ramp(1, 256, 256)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(block, window=rasterio.windows.Window(5120, 5120, 256, 256))
    scene = open_scene(path)
    assert scene.grid.shape == (10980, 10980)
    tracemalloc.start()
    d, v = scene.read(Window(5150, 5140, 160, 160), units="dn")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(d[0], block[0, 30:190, 20:180].astype(np.float32))
    assert v.all()
    assert peak < 5_000_000, f"a 160x160 read allocated {peak} bytes"
    # statistics sample windows instead of the whole tile
    desc = scene.describe(sample=65536 * 4)
    assert desc["sampled_pixels"] <= 4 * 65536


# ---- folders of per-band files -----------------------------------------------------------------------
def test_folder_20m_and_60m_on_10m_grid(tmp_path):
    folder = tmp_path / "scene"
    write_tif(folder / "T33UUU_20170216T102101_B02.tif", ramp(1, 12, 12))
    write_tif(folder / "T33UUU_20170216T102101_B08.tif", ramp(1, 12, 12, start=200))
    # 20 m band: a plane 1000 + 40 * col + 8 * row  (bilinear reproduces planes exactly)
    r, c = np.mgrid[0:6, 0:6]
    write_tif(folder / "T33UUU_20170216T102101_B05.tif", (1000 + 40 * c + 8 * r).astype(np.uint16), res=20)
    write_tif(folder / "T33UUU_20170216T102101_B01.tif", np.array([[500, 700], [900, 1100]], np.uint16), res=60)
    (folder / "notes.txt").write_text("not a band")
    scene = open_scene(folder)
    assert scene.bands == ("B01", "B02", "B05", "B08")
    assert scene.band_resolution == {"B01": 60.0, "B02": 10.0, "B05": 20.0, "B08": 10.0}
    assert scene.grid.same_as(Grid(CRS, Affine(10, 0, X0, 0, -10, Y0), 12, 12))
    assert scene.date == dt.date(2017, 2, 16)
    d, v = scene.read(units="dn")
    assert d.shape == (4, 12, 12) and v.all()
    # interior 10 m pixel (i, j) has its centre at 20 m pixel coordinate (i + 0.5) / 2 - 0.5
    ii, jj = np.mgrid[1:11, 1:11]
    expect = 1000 + 40 * ((jj + 0.5) / 2 - 0.5) + 8 * ((ii + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(d[2, 1:11, 1:11], expect, atol=0.51)  # uint16 rounding
    # each 60 m pixel's 6x6 block keeps the pixel's value at its centre and its mean nearby
    assert abs(d[0, 2:4, 2:4].mean() - 500) < 60 and abs(d[0, 8:10, 8:10].mean() - 1100) < 60
    assert d[0, :6, :6].mean() < d[0, 6:, 6:].mean()
    # a window read equals the same part of the full read (same georeferencing, no seams)
    dw, _ = scene.read(Window(3, 5, 6, 4), units="dn")
    np.testing.assert_allclose(dw, d[:, 3:9, 5:9], atol=0.51)


def test_safe_layout_l2a(tmp_path):
    safe = tmp_path / "S2A_MSIL2A_20220301T102101_N0400_R065_T33UUU_20220301T120000.SAFE"
    img = safe / "GRANULE" / "L2A_T33UUU_A000001_20220301T102101" / "IMG_DATA"
    jp2 = dict(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    write_tif(img / "R10m" / "T33UUU_20220301T102101_B02_10m.jp2", ramp(1, 8, 8, start=1100), **jp2)
    write_tif(img / "R20m" / "T33UUU_20220301T102101_B02_20m.jp2", ramp(1, 4, 4, start=5000), res=20, **jp2)
    write_tif(img / "R20m" / "T33UUU_20220301T102101_B11_20m.jp2", ramp(1, 4, 4, start=3000), res=20, **jp2)
    scl = np.array([[4, 5, 6, 9]] * 4, np.uint8)
    write_tif(img / "R20m" / "T33UUU_20220301T102101_SCL_20m.jp2", scl, res=20, **jp2)
    write_tif(img / "R20m" / "T33UUU_20220301T102101_AOT_20m.jp2", ramp(1, 4, 4), res=20, **jp2)
    write_tif(safe / "GRANULE" / "L2A_T33UUU_A000001_20220301T102101" / "QI_DATA" / "MSK_CLASSI_B00.jp2",
              ramp(1, 4, 4), res=20, **jp2)
    (safe / "MTD_MSIL2A.xml").write_text(
        "<x><PRODUCT_START_TIME>2022-03-01T10:21:01.024Z</PRODUCT_START_TIME>"
        "<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>"
        '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>'
        '<BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE><BOA_ADD_OFFSET_VALUES_LIST>'
        '<BOA_ADD_OFFSET band_id="0">-1000</BOA_ADD_OFFSET></BOA_ADD_OFFSET_VALUES_LIST></x>')
    scene = open_scene(safe)
    assert scene.bands == ("B02", "B11")
    assert scene.level == "L2A" and scene.date == dt.date(2022, 3, 1)
    assert scene.offset == 1000.0 and "MTD_MSIL2A.xml" in scene.offset_source and scene.scale == 10000.0
    assert scene.band_resolution == {"B02": 10.0, "B11": 20.0}  # the 10 m B02, not the 20 m copy
    assert scene.grid.shape == (8, 8)
    d, v = scene.read(Window(0, 0, 2, 3))
    np.testing.assert_allclose(d[0], (ramp(1, 8, 8, start=1100)[0, :2, :3] - 1000) / 10000, rtol=1e-5)
    s = scene.read_scl()
    assert s.dtype == np.uint8 and s.shape == (8, 8)
    np.testing.assert_array_equal(s, np.kron(scl, np.ones((2, 2), np.uint8)))  # nearest, not blended
    s = scene.read_scl(Window(-1, 6, 3, 3))
    assert s.tolist() == [[0, 0, 0], [9, 9, 0], [9, 9, 0]]
    # the IMG_DATA folder itself works too (metadata found two levels up)
    assert open_scene(img).offset == 1000.0


def test_pickle_and_reopen(tmp_path):
    path = write_tif(tmp_path / "s.tif", ramp(4, 6, 6), descriptions=["B02", "B03", "B04", "B08"])
    scene = open_scene(path)
    before, _ = scene.read(Window(1, 1, 3, 3))
    blob = pickle.dumps(scene)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    after, _ = clone.read(Window(1, 1, 3, 3))
    np.testing.assert_array_equal(before, after)
    with clone:
        clone.read()
    assert clone.read(Window(0, 0, 1, 1))[0].shape == (4, 1, 1)  # re-opens after close


def test_describe_numbers(tmp_path):
    data = np.array([[[0, 100, 200], [300, 400, 500]], [[10, 20, 30], [40, 50, 60]]], np.uint16)
    path = write_tif(tmp_path / "s.tif", data, descriptions=["B03", "B08"])
    d = open_scene(path).describe()
    assert d["nodata_fraction"] == pytest.approx(1 / 6)
    assert d["stats"]["B03"] == {"min": 100.0, "max": 500.0, "mean": 300.0,
                                 "std": pytest.approx(np.std([100, 200, 300, 400, 500])), "median": 300.0}
    assert d["stats"]["B08"]["mean"] == pytest.approx(40.0)  # pixel 0 is excluded in every band
    assert d["grid"]["width"] == 3 and d["grid"]["crs"] == CRS
    assert json.loads(json.dumps(d)) == d


# ---- errors -----------------------------------------------------------------------------------------
def test_error_missing_and_corrupt(tmp_path):
    with pytest.raises(SandwatchError) as e:
        open_scene(tmp_path / "nope.tif")
    one_line_error(e, tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(SandwatchError) as e:
        open_scene(bad)
    assert "cannot be read as a raster" in one_line_error(e, bad)
    bad_json = tmp_path / "item.json"
    bad_json.write_text("{not json")
    with pytest.raises(SandwatchError) as e:
        open_scene(bad_json)
    one_line_error(e, bad_json)


def test_error_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(SandwatchError) as e:
        open_scene(empty)
    assert "no recognisable Sentinel-2 band files" in one_line_error(e, empty)

    dup = tmp_path / "dup"
    write_tif(dup / "B02.tif", ramp(1, 4, 4))
    write_tif(dup / "T33UUU_20170216T102101_B02.tif", ramp(1, 4, 4))
    with pytest.raises(SandwatchError) as e:
        open_scene(dup)
    assert "twice" in one_line_error(e, dup)

    crs = tmp_path / "crs"
    write_tif(crs / "B02.tif", ramp(1, 4, 4))
    write_tif(crs / "B05.tif", ramp(1, 2, 2), res=20, crs="EPSG:32632")
    with pytest.raises(SandwatchError) as e:
        open_scene(crs)
    assert "EPSG:32632" in one_line_error(e, crs / "B05.tif")

    ext = tmp_path / "extent"
    write_tif(ext / "B02.tif", ramp(1, 4, 4))
    write_tif(ext / "B05.tif", ramp(1, 2, 2), res=20, x0=X0 + 200)
    with pytest.raises(SandwatchError) as e:
        open_scene(ext)
    assert "same extent" in one_line_error(e, ext / "B05.tif")

    sub = tmp_path / "sub"
    write_tif(sub / "B02.tif", ramp(1, 4, 4))
    with pytest.raises(SandwatchError) as e:
        open_scene(sub, bands="B02,B03")
    assert "lacks band(s) B03" in one_line_error(e, sub)


def test_date_from_text():
    assert date_from_text("T33UUU_20170216T102101_B02.jp2") == dt.date(2017, 2, 16)
    assert date_from_text("site00/2021-01-15.tif") == dt.date(2021, 1, 15)
    assert date_from_text("S2A_29RKH_20200219_0_L2A") == dt.date(2020, 2, 19)
    assert date_from_text("B02.tif") is None
    assert date_from_text("tile_99999999.tif") is None


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_info_json_and_table(tmp_path):
    from sandwatch.cli.imagery import info

    data = np.stack([np.full((4, 6), v, np.uint16) for v in (1200, 3400)])
    data[:, 0, 0] = 0
    path = write_tif(tmp_path / "2021-01-15.tif", data, descriptions=["B03", "B11"])
    result = CliRunner().invoke(info, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert [b["name"] for b in d["bands"]] == ["B03", "B11"]
    assert d["grid"]["width"] == 6 and d["grid"]["height"] == 4 and d["grid"]["pixel_size"] == [10.0, 10.0]
    assert d["grid"]["transform"] == [10.0, 0.0, X0, 0.0, -10.0, Y0]
    assert d["date"] == "2021-01-15" and d["offset"] == 0.0
    assert d["nodata_fraction"] == pytest.approx(1 / 24)
    assert d["stats"]["B11"]["mean"] == 3400.0 and d["stats"]["B03"]["std"] == 0.0
    result = CliRunner().invoke(info, [str(path), "--no-stats", "--offset", "1000"])
    assert result.exit_code == 0 and "(DN - 1000) / 10000" in result.output and "median" not in result.output
    result = CliRunner().invoke(info, [str(path)])
    assert "3400.0" in result.output and "EPSG:32633" in result.output


def test_cli_error_is_one_line(tmp_path, capsys):
    from sandwatch.cli.main import main

    path = write_tif(tmp_path / "four.tif", ramp(4, 2, 2))
    assert main(["info", str(path), "--bands", "B02,B03"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "four.tif" in err and "Traceback" not in err


# ---- STAC items (local files; HTTP is exercised in test_imagery_real.py) -------------------------------
def _item(tmp_path, props, assets, name="item.json", collection="sentinel-2-l2a"):
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_33UUU_20230105_0_L2A", "collection": collection,
        "geometry": {"type": "Point", "coordinates": [12.6, 52.5]}, "bbox": [12.6, 52.5, 12.6, 52.5],
        "properties": {"datetime": "2023-01-05T10:21:01Z", **props},
        "links": [{"rel": "self", "href": "s3://bucket/elsewhere/item.json"}],
        "assets": {k: {"href": v, "type": "image/tiff; application=geotiff"} for k, v in assets.items()},
    }
    path = tmp_path / name
    path.write_text(json.dumps(item))
    return path


@pytest.mark.parametrize("props,offset", [
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": False}, 1000.0),
    ({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}, 0.0),
    ({"s2:processing_baseline": "03.01"}, 0.0),
    ({}, 0.0),
])
def test_stac_item_local(tmp_path, props, offset):
    write_tif(tmp_path / "data" / "B02.tif", ramp(1, 8, 8, start=1500))
    write_tif(tmp_path / "data" / "B8A.tif", ramp(1, 4, 4, start=2500), res=20)
    write_tif(tmp_path / "data" / "SCL.tif", np.full((4, 4), 4, np.uint8), res=20)
    write_tif(tmp_path / "data" / "TCI.tif", np.zeros((3, 8, 8), np.uint8))
    assets = {"blue": "data/B02.tif", "nir08": "data/B8A.tif", "scl": "data/SCL.tif", "visual": "data/TCI.tif",
              "blue-jp2": "s3://bucket/B02.jp2", "thumbnail": "data/thumb.jpg"}
    scene = open_scene(_item(tmp_path, {"s2:product_type": "S2MSI2A", **props}, assets))
    assert scene.bands == ("B02", "B8A") and scene.level == "L2A" and scene.date == dt.date(2023, 1, 5)
    assert scene.offset == offset
    assert scene.grid.shape == (8, 8) and scene.band_resolution == {"B02": 10.0, "B8A": 20.0}
    d, v = scene.read(Window(0, 0, 1, 1))
    assert d[0, 0, 0] == pytest.approx((1500 - offset) / 10000) and v.all()
    assert (scene.read_scl() == 4).all()


def test_stac_item_errors(tmp_path):
    write_tif(tmp_path / "B02.tif", ramp(1, 8, 8))
    path = _item(tmp_path, {}, {"blue": "B02.tif", "red": "missing_B04.tif"})
    with pytest.raises(SandwatchError) as e:
        open_scene(path)
    one_line_error(e, "missing_B04.tif")
    path = _item(tmp_path, {}, {"thumbnail": "B02.tif"}, name="nothing.json")
    with pytest.raises(SandwatchError) as e:
        open_scene(path)
    assert "no Sentinel-2 band assets" in one_line_error(e, path)
    l1c = _item(tmp_path, {"s2:product_type": "S2MSI1C"}, {"B02": "B02.tif"}, name="l1c.json",
                collection="sentinel-2-l1c")
    assert open_scene(l1c).level == "L1C"
    assert open_scene(l1c, level="L2A").level == "L2A"


def test_concurrent_threads_and_forked_processes(tmp_path):
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "scene"
    write_tif(folder / "B02.tif", ramp(1, 64, 64))
    write_tif(folder / "B05.tif", ramp(1, 32, 32, start=500), res=20)
    scene = open_scene(folder)
    windows = [Window(r, c, 16, 16) for r in range(0, 64, 16) for c in range(0, 64, 16)]
    expected = [scene.read(w)[0] for w in windows]  # the parent now holds open handles
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda w: scene.read(w)[0], windows * 3))
    for a, b in zip(got, expected * 3):
        np.testing.assert_array_equal(a, b)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(_read_window, [(scene, w) for w in windows])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # rasterio windows are accepted too
    np.testing.assert_array_equal(scene.read(rasterio.windows.Window(16, 0, 16, 16))[0], expected[1])


def _read_window(args):
    scene, window = args
    return scene.read(window)[0]


def test_a_reading_thread_closes_its_own_handles(tmp_path):
    """Scene handles are per thread; a worker thread that is done closes its own, the
    caller's stay open."""
    import threading

    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from sandwatch.imagery import open_scene

    path = tmp_path / "s.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=4, dtype="uint16", crs="EPSG:32644",
                       transform=from_origin(0, 80, 10, 10)) as ds:
        ds.write(np.full((4, 8, 8), 1200, np.uint16))
    scene = open_scene(str(path), bands="B02,B03,B04,B08")
    scene.read()
    seen = {}

    def worker():
        scene.read()
        seen["during"] = len(scene._handles)
        scene.close_thread()
        seen["after"] = len(scene._handles)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"during": 2, "after": 1}
    data, valid = scene.read()               # the calling thread's handle still works
    assert valid.all() and np.allclose(data, 0.12)
