"""``sandwatch acquire fetch``: the area's window of each band over HTTP (nginx, range
requests), bit for bit what the imagery stage reads, one COG per area and date that
``open_scene`` reads right; offsets per item, mosaics across tiles, resume, and faults."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import shared_path
from staccatalogue import AREA_A, AREA_B, EPSG, REAL_ITEM, fast_fetch, fault_proxy, servers_or_skip

from sandwatch.acquire.fetch import FetchConfig, FetchFailed, clear_http_cache, fetch
from sandwatch.acquire.search import Candidate, SearchConfig, search
from sandwatch.acquire.sites import Area, Site
from sandwatch.errors import SandwatchError
from sandwatch.grid import Window
from sandwatch.imagery import open_scene

CHUNK = 16384
FAST = fast_fetch()


@pytest.fixture(scope="module")
def servers():
    return servers_or_skip()


@pytest.fixture(scope="module")
def real():
    """The imagery stage's reading of the real item (its files are beside it)."""
    return open_scene(shared_path("s2-l2a-29RKH-cogs") / f"{REAL_ITEM}.json")


def area(bounds, name="A") -> Area:
    return Area(name, EPSG, bounds, [Site(name, 24.5, -11.5)])


def candidates(servers, bounds, day: str, name="A") -> list[Candidate]:
    d = dt.date.fromisoformat(day)
    return search([area(bounds, name)], d, d, SearchConfig(stac_url=servers.stac.url))


def blocks_under(path, bounds, grid) -> int:
    """Bytes of the COG blocks (in 16 kB chunks) a read of ``bounds`` needs: for a band on ``grid`` (10 m) the
    blocks under it; for a coarser band those under the 512 px blocks of ``grid`` that the
    imagery stage's WarpedVRT warps whole, grown by one source pixel (the bilinear kernel)."""
    with rasterio.open(path) as ds:
        if ds.res[0] != grid.res[0]:
            w = grid.window_from_bounds(*bounds)
            r0, c0 = w.row // 512 * 512, w.col // 512 * 512
            r1 = min(grid.height, -(-(w.row + w.height) // 512) * 512)
            c1 = min(grid.width, -(-(w.col + w.width) // 512) * 512)
            bounds = grid.window_grid(Window(r0, c0, r1 - r0, c1 - c0)).bounds
        w = rasterio.windows.from_bounds(*bounds, ds.transform)
        bh, bw = ds.block_shapes[0]
        r0, r1 = int(max(0, w.row_off - 1) // bh), int(min(ds.height - 1, w.row_off + w.height) // bh)
        c0, c1 = int(max(0, w.col_off - 1) // bw), int(min(ds.width - 1, w.col_off + w.width) // bw)
        chunks = set()          # GDAL's /vsicurl/ reads whole 16 kB chunks
        for i in range(r0, r1 + 1):
            for j in range(c0, c1 + 1):
                start = int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1))
                chunks.update(range(start // CHUNK, (start + ds.block_size(1, i, j) - 1) // CHUNK + 1))
        size = os.path.getsize(path)
        return sum(min(CHUNK, size - c * CHUNK) for c in chunks)


def test_window_only_and_bit_for_bit(servers, real, tmp_path):
    cands = candidates(servers, AREA_A, "2020-02-19")
    clear_http_cache()
    servers.nginx.clear_log()
    (res,) = fetch([area(AREA_A)], cands, tmp_path, FAST)
    assert res.status == "fetched" and res.path == tmp_path / "A" / "A_2020-02-19.tif"
    out = open_scene(res.path)
    assert (out.level, out.date, out.offset, out.bands) == ("L2A", dt.date(2020, 2, 19), 0.0, real.bands)
    assert out.grid.bounds == AREA_A and out.grid.crs.to_epsg() == EPSG and out.has_scl
    window = real.grid.window_from_bounds(*AREA_A)
    want, _ = real.read(window, units="dn")
    got, _ = out.read(units="dn")
    assert np.array_equal(got, want)                                   # every band, 20/60 m ones included
    assert np.array_equal(out.read_scl(), real.read_scl(window))
    for band in ("B02", "B03", "B04", "B08"):                          # 10 m bands: the file's own pixels
        with rasterio.open(shared_path("s2-l2a-29RKH-cogs") / f"{band}.tif") as ds:
            direct = ds.read(1, window=window.to_rasterio())
        assert np.array_equal(got[real.bands.index(band)], direct)
    with rasterio.open(res.path) as ds:
        assert ds.tags()["PROCESSING_BASELINE"] == "02.14" and ds.tags()["BOA_ADD_OFFSET"] == "0"
        assert ds.descriptions[-1] == "SCL" and ds.profile["compress"].lower() == "deflate"
    # only a small part of the files travelled: no file was sent whole
    folder = shared_path("s2-l2a-29RKH-cogs")
    names = [f"{b}.tif" for b in real.bands] + ["SCL.tif"]
    total = sum((folder / n).stat().st_size for n in names)
    sent = servers.nginx.bytes_sent("/real/")
    per_file = {n: servers.nginx.bytes_sent(f"/real/{n}") for n in names}
    for n in names:      # each file: the blocks the read needs, its header (16 kB) and the size probe
        assert per_file[n] <= blocks_under(folder / n, AREA_A, real.grid) + 40_000, (n, per_file[n])
    ten = [f"{b}.tif" for b in ("B02", "B03", "B04", "B08")]
    ten_total = sum((folder / n).stat().st_size for n in ten)
    assert sum(per_file[n] for n in ten) < 0.05 * ten_total          # the 10 m bands: under 5 % of their bytes
    print(f"fetched {sent / 1e6:.2f} MB of {total / 1e6:.2f} MB ({sent / total:.1%})")


def test_offset_per_item_and_mosaic_of_two_tiles(servers, real, tmp_path):
    """2020-08-12 is baseline 04.00 (DN + 1000): kept, tagged 1000. 2020-09-16 covers area B
    with a west half in 04.00 and an east half in 02.14: one file at offset 0."""
    (shifted,) = fetch([area(AREA_A)], candidates(servers, AREA_A, "2020-08-12"), tmp_path, FAST)
    out = open_scene(shifted.path)
    assert (out.offset, out.offset_source) == (1000.0, "tag BOA_ADD_OFFSET")
    want, _ = real.read(real.grid.window_from_bounds(*AREA_A))
    got, _ = out.read()
    ten = [real.bands.index(b) for b in ("B02", "B03", "B04", "B08")]
    assert np.array_equal(got[ten], want[ten])                         # the same reflectance
    assert np.abs(got - want).max() <= 1.5e-4        # resampled bands: a bilinear tie may round 1 DN apart
    (mosaic,) = fetch([area(AREA_B, "B")], candidates(servers, AREA_B, "2020-09-16", "B"), tmp_path, FAST)
    out = open_scene(mosaic.path)
    assert out.offset == 0.0 and out.grid.bounds == AREA_B
    window = real.grid.window_from_bounds(*AREA_B)
    want, _ = real.read(window, units="dn")
    got, valid = out.read(units="dn")
    assert valid.all()
    assert np.array_equal(got[ten], want[ten])                         # both halves, both offsets, exact
    # coarser bands resampled inside each half agree except next to a half's cut edge
    assert np.mean(got == want) > 0.95
    with rasterio.open(mosaic.path) as ds:
        assert ds.tags()["SANDWATCH_TILES"] == "29RKH;29RKJ"
        assert ds.tags()["SANDWATCH_SOURCE_BASELINES"] == "02.14;04.00"
    assert np.array_equal(out.read_scl(), real.read_scl(window))


def test_candidates_of_an_unknown_area_are_one_line(servers, tmp_path):
    cands = candidates(servers, AREA_A, "2020-02-19", "elsewhere")
    with pytest.raises(SandwatchError, match="area elsewhere: is in the candidates but not in the areas file"):
        fetch([area(AREA_A)], cands, tmp_path, FAST)


def test_resume_keeps_finished_files(servers, tmp_path):
    cands = search([area(AREA_A)], dt.date(2020, 2, 1), dt.date(2020, 3, 31), SearchConfig(stac_url=servers.stac.url))
    first = fetch([area(AREA_A)], cands, tmp_path, FAST)
    assert [r.status for r in first] == ["fetched", "fetched"]
    keep, redo = (r.path for r in first)
    stamp = keep.stat().st_mtime_ns
    redo.unlink()
    again = {r.path: r.status for r in fetch([area(AREA_A)], cands, tmp_path, FAST)}
    assert again == {keep: "kept", redo: "fetched"} and keep.stat().st_mtime_ns == stamp


# ---- faults ------------------------------------------------------------------------------------------------
def local_item(tmp_path, base_url: str, prefix: str = "") -> Candidate:
    """The real item saved locally with its assets at ``base_url/prefix/real/NAME``."""
    item = json.loads((shared_path("s2-l2a-29RKH-cogs") / f"{REAL_ITEM}.json").read_text())
    item["assets"] = {k: {**a, "href": f"{base_url}/{prefix}real/{os.path.basename(a['href'])}"}
                      for k, a in item["assets"].items() if k in ("blue", "green", "red", "nir", "swir16", "scl")}
    item["links"] = []
    path = tmp_path / "items" / f"{REAL_ITEM}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(item))
    return Candidate("A", dt.date(2020, 2, 19), 1.0, 1.0, "scl", [REAL_ITEM], [str(path)], ["29RKH"], ["02.14"],
                     None, "sentinel-2-l2a", "local")


def no_tifs(folder) -> bool:
    return not [p for p in folder.rglob("*") if ".tif" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("prefix, words", [("fail500/", "500"), ("stall/", "timed out")])
def test_server_errors_and_stalls_fail_in_one_line_naming_the_url(servers, tmp_path, prefix, words):
    cand = local_item(tmp_path, servers.nginx.url, prefix)
    out = tmp_path / "out"
    with pytest.raises(FetchFailed, match=words) as e:
        fetch([area(AREA_A)], [cand], out, FetchConfig(retries=0, timeout_s=1))   # GDAL itself tries 4 times
    msg = str(e.value)
    assert msg.startswith(f"{servers.nginx.url}/{prefix}real/") and "failed after 1 try" in msg and "\n" not in msg
    assert no_tifs(out)


def test_dropped_connections_are_retried_then_resumed(servers, real, tmp_path):
    proxy = fault_proxy(servers.nginx.port, faults=None, after=30_000)   # every connection cut after 30 kB
    try:
        cand = local_item(tmp_path, proxy.url)
        out = tmp_path / "out"
        with pytest.raises(FetchFailed, match=f"{proxy.url}/real/") as e:
            fetch([area(AREA_A)], [cand], out, FetchConfig(retries=1, backoff_s=0.05, timeout_s=3))
        assert "\n" not in str(e.value) and no_tifs(out) and proxy.dropped >= 2
        proxy.faults = proxy.dropped + 1          # one more cut, then the network is well again
        (res,) = fetch([area(AREA_A)], [cand], out, FetchConfig(retries=2, backoff_s=0.05, timeout_s=3))
        assert res.status == "fetched"
        got = open_scene(res.path)
        want, _ = real.read(real.grid.window_from_bounds(*AREA_A), ["B02", "B03", "B04", "B08", "B11"], units="dn")
        assert np.array_equal(got.read(units="dn")[0], want)
        assert [p.name for p in out.rglob("*.tif")] == ["A_2020-02-19.tif"]
    finally:
        proxy.stop()


def test_tile_in_another_utm_zone_is_warped_onto_the_area(servers, real, tmp_path):
    """An area planned in zone 28 over a zone-29 tile: bands warped with the imagery stage's
    resampling (bilinear; SCL nearest) onto the area's own grid."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    b = transform_bounds(f"EPSG:{EPSG}", "EPSG:32628", *AREA_A)
    bounds = tuple(float(round(v / 100) * 100) for v in b)
    west = Area("W", 32628, bounds, [Site("w", 24.5, -11.5)])
    d = dt.date(2020, 2, 19)
    cands = search([west], d, d, SearchConfig(stac_url=servers.stac.url))
    (res,) = fetch([west], cands, tmp_path, FAST)
    out = open_scene(res.path)
    assert out.grid.crs.to_epsg() == 32628 and out.grid.bounds == bounds and out.grid.res == (100.0, 100.0)
    got, valid = out.read(units="dn")
    assert valid.all()
    with rasterio.open(shared_path("s2-l2a-29RKH-cogs") / "B02.tif") as src:
        want = np.zeros(out.grid.shape, np.float32)
        reproject(rasterio.band(src, 1), want, dst_transform=out.grid.transform, dst_crs=out.grid.crs,
                  resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    b02 = got[out.bands.index("B02")]
    # a warp of the same pixels to the same place (the kernels of WarpedVRT and reproject differ a little
    # across zones): well within 1 % on average, and much closer than a one-pixel shift
    err = np.abs(b02 - want).mean()
    assert err < 0.005 * want.mean()
    assert err * 3 < np.abs(b02[:, 1:] - want[:, :-1]).mean() and err * 3 < np.abs(b02[1:] - want[:-1]).mean()
    assert set(np.unique(out.read_scl())) <= set(np.unique(real.read_scl()))   # classes, never blends


def test_signing_hook_reaches_every_asset_request(servers, tmp_path):
    def sign(href: str) -> str:
        return href + "?token=s3cr3t"

    d = dt.date(2020, 3, 10)
    clear_http_cache()
    servers.nginx.clear_log()
    cands = search([area(AREA_A)], d, d, SearchConfig(stac_url=servers.stac.url, sign=sign))
    (res,) = fetch([area(AREA_A)], cands, tmp_path, FetchConfig(workers=2, retries=0, sign=sign))
    uris = [uri for _, uri, *_ in servers.nginx.log_lines()]
    assert len(uris) > 13 and all(u.endswith("?token=s3cr3t") for u in uris)
    assert open_scene(res.path).date == d

    # a later run (the token has expired, the hook gives a new one) signs the cached item afresh
    def fresh(href: str) -> str:
        return href + "?token=fresh"

    res.path.unlink()
    clear_http_cache()
    servers.nginx.clear_log()
    (again,) = fetch([area(AREA_A)], cands, tmp_path, FetchConfig(workers=2, retries=0, sign=fresh))
    uris = [uri for _, uri, *_ in servers.nginx.log_lines()]
    assert len(uris) > 13 and all(u.endswith("?token=fresh") for u in uris), [u for u in uris if not u.endswith("?token=fresh")]
    assert open_scene(again.path).date == d


def test_an_item_without_scl_gives_a_file_without_scl(servers, real, tmp_path):
    (res,) = fetch([area(AREA_A)], candidates(servers, AREA_A, "2020-11-05"), tmp_path, FAST)
    out = open_scene(res.path)
    assert not out.has_scl and out.bands == real.bands and res.clear_fraction is None
    want, _ = real.read(real.grid.window_from_bounds(*AREA_A), units="dn")
    assert np.array_equal(out.read(units="dn")[0], want)


def test_an_l1c_collection(servers, real, tmp_path):
    d = dt.date(2020, 11, 5)
    (cand,) = search([area(AREA_A)], d, d, SearchConfig(stac_url=servers.stac.url, collection="sentinel-2-l1c"))
    assert cand.clear_source == "spectral" and cand.items == ["S2A_29RKH_20201105_0_L1C"]
    (res,) = fetch([area(AREA_A)], [cand], tmp_path, FAST)
    out = open_scene(res.path)
    assert (out.level, out.offset, out.offset_source, out.has_scl) == ("L1C", 1000.0, "tag RADIO_ADD_OFFSET", False)
    with rasterio.open(res.path) as ds:
        assert ds.tags()["RADIO_ADD_OFFSET"] == "-1000" and ds.tags()["PROCESSING_LEVEL"] == "L1C"
    want, _ = real.read(real.grid.window_from_bounds(*AREA_A), ["B02", "B03", "B04", "B08"])
    assert np.array_equal(out.read(bands=["B02", "B03", "B04", "B08"])[0], want)


def test_a_local_item_with_relative_hrefs_is_read_where_it_lies(real, tmp_path):
    import shutil

    from sandwatch.acquire.fetch import absolute_href, cached_item, open_item_scene

    src = shared_path("s2-l2a-29RKH-cogs")
    cat = tmp_path / "catalogue"
    cat.mkdir()
    item = json.loads((src / f"{REAL_ITEM}.json").read_text())
    keep = {k: a for k, a in item["assets"].items() if Path(a["href"]).name in ("B03.tif", "B04.tif", "SCL.tif")}
    for asset in keep.values():                            # a static catalogue on disk: hrefs relative to the item
        name = Path(asset["href"]).name
        shutil.copyfile(src / name, cat / name)
        asset["href"] = f"./{name}"
    item["assets"] = keep
    (cat / "item.json").write_text(json.dumps(item))
    path = cached_item(str(cat / "item.json"), tmp_path / "out" / ".items", None, 5.0)
    assert path == cat / "item.json" and not (tmp_path / "out" / ".items").exists()
    scene = open_item_scene(path, ["B04", "B03"])
    window = Window(10, 20, 32, 48)
    got, _ = scene.read(window, bands=["B04", "B03"])
    want, _ = real.read(window, bands=["B04", "B03"])
    assert np.array_equal(got, want)
    assert absolute_href("../cogs/B04.tif", "http://127.0.0.1:8080/cat/items/a.json") == \
        "http://127.0.0.1:8080/cat/cogs/B04.tif"
    assert absolute_href("https://example.org/B08.tif", "http://127.0.0.1/x.json") == "https://example.org/B08.tif"
