"""Date choice, monthly composites, the manifest and the monitoring feed
(``acquire update``), against the real STAC API and nginx of the acquisition tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import rasterio
from conftest import shared_path
from pyproj import Transformer
from staccatalogue import AREA_A, EPSG, REAL_ITEM, fast_fetch, servers_or_skip

from sandwatch.acquire.composite import fetch_composites, median_of
from sandwatch.acquire.dates import DateChoice, choose, choose_dates, difference, landscape
from sandwatch.acquire.record import append_to_manifest, update
from sandwatch.acquire.search import SearchConfig, search
from sandwatch.acquire.sites import Area, Site
from sandwatch.cli.main import main
from sandwatch.dataset.manifest import load_manifest
from sandwatch.imagery import open_scene

D = dt.date.fromisoformat
FAST = fast_fetch()


@pytest.fixture(scope="module")
def servers():
    return servers_or_skip()


@pytest.fixture(scope="module")
def year(servers):
    return search([AREA], D("2020-01-01"), D("2020-12-31"), SearchConfig(stac_url=servers.stac.url))


CENTRE = ((AREA_A[0] + AREA_A[2]) / 2, (AREA_A[1] + AREA_A[3]) / 2)
LON, LAT = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True).transform(*CENTRE)
AREA = Area("A", EPSG, AREA_A, [Site("mine", LAT, LON)])


def test_two_dates_far_apart_with_the_most_different_landscape(servers, year):
    chosen = choose_dates([AREA], year, DateChoice(2, 3, 0.8))
    # the water of 2020-06-08 makes it the most different date; its partner is the farthest
    # clear date at least 3 months away. Far apart alone would take 02-19 and 11-05.
    assert [c.date.isoformat() for c in chosen] == ["2020-06-08", "2020-11-05"]
    import pystac

    scape = {c.date.isoformat(): landscape(AREA, pystac.Item.from_file(c.item_urls[0])) for c in year
             if c.date.isoformat() in ("2020-02-19", "2020-06-08", "2020-08-12", "2020-11-05")}
    assert difference(scape["2020-02-19"], scape["2020-06-08"]) > 0.5
    assert difference(scape["2020-02-19"], scape["2020-08-12"]) < 1e-3     # baseline 04.00: offset applied
    assert difference(scape["2020-02-19"], scape["2020-11-05"]) < 1e-3
    assert [c.date.month for c in choose(year, DateChoice("monthly", 3, 0.8))] == [2, 3, 6, 7, 8, 9, 10, 11]
    assert len(choose(year, DateChoice("all", 3, 0.5))) == 9                # 04-29 is half clear
    with pytest.warns(UserWarning, match="no two clear dates are 12 months apart"):
        one = choose(year, DateChoice(2, 12, 0.8), lambda c: None)
    assert [c.date.isoformat() for c in one] == ["2020-02-19"]


def test_monthly_median_masks_clouds(servers, year, tmp_path):
    april = [c for c in year if c.date.month == 4]           # 04-19 cloudy everywhere, 04-29 west half cloudy
    (res,) = fetch_composites([AREA], april, tmp_path, FAST)
    assert res.path.name == "A_2020-04_median.tif" and res.clear_fraction == 0.5
    out = open_scene(res.path)
    got, valid = out.read(units="dn")
    real = open_scene(shared_path("s2-l2a-29RKH-cogs") / f"{REAL_ITEM}.json")
    want, _ = real.read(real.grid.window_from_bounds(*AREA_A), units="dn")
    half = got.shape[2] // 2
    assert not valid[:, :half].any() and valid[:, half:].all()
    assert np.array_equal(got[:, :, half:], want[:, :, half:])       # one clear date: its values
    with rasterio.open(res.path) as ds:
        assert ds.tags()["SANDWATCH_DATES"] == "2020-04-19;2020-04-29" and "SCL" not in ds.descriptions
    # a rerun keeps the file and reports the date a fresh run did (the manifest date must not change)
    (kept,) = fetch_composites([AREA], april, tmp_path, FAST)
    assert kept.status == "kept" and kept.date == res.date


def test_a_failing_server_while_choosing_dates_is_one_line_naming_the_url(servers, year):
    import pystac

    from sandwatch.errors import SandwatchError

    item = pystac.Item.from_file(year[0].item_urls[0]).clone()
    key = next(k for k in item.assets if k.lower() in ("green", "b03"))
    broken = f"{servers.nginx.url}/fail500/B03.tif"
    item.assets[key].href = broken
    with pytest.raises(SandwatchError) as err:
        landscape(AREA, item, timeout_s=5)
    assert str(err.value).startswith(broken) and "could not be read" in str(err.value) and "\n" not in str(err.value)


def test_median_of_clear_dates_only():
    stacks = [np.full((1, 1, 3), v, np.uint16) for v in (100, 200, 900)]
    clear = [np.array([[True, True, False]]), np.array([[True, False, False]]), np.array([[True, True, False]])]
    med, count = median_of(stacks, clear)
    assert med.tolist() == [[[200, 500, 0]]] and count.tolist() == [[3, 2, 0]]


def test_update_appends_new_clear_dates_only(servers, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    cfg = SearchConfig(stac_url=servers.stac.url)
    done = update([AREA], D("2020-06-01"), tmp_path, manifest, until=D("2020-07-31"), search_cfg=cfg, fetch_cfg=FAST)
    assert sorted(f.date.isoformat() for f in done) == ["2020-06-08", "2020-07-03"]
    m = load_manifest(manifest)
    obs = {o.id: o for o in m.observations}
    assert set(obs) == {"A_2020-06-08", "A_2020-07-03"}
    o = obs["A_2020-06-08"]
    assert (o.site, o.date, o.latitude, o.longitude) == ("A", D("2020-06-08"), pytest.approx(LAT, abs=1e-5),
                                                        pytest.approx(LON, abs=1e-5))
    assert open_scene(o.scene).date == D("2020-06-08")
    fetched = {f.date.isoformat(): f for f in done}
    assert o.clear_fraction == pytest.approx(fetched["2020-06-08"].clear_fraction, abs=1e-4) and o.clear_fraction >= 0.8
    assert update([AREA], D("2020-06-01"), tmp_path, manifest, until=D("2020-07-31"), search_cfg=cfg,
                  fetch_cfg=FAST) == []
    more = update([AREA], D("2020-01-01"), tmp_path, manifest, until=D("2020-07-31"), search_cfg=cfg, fetch_cfg=FAST)
    assert sorted(f.date.isoformat() for f in more) == ["2020-02-19", "2020-03-10"]   # April is not clear
    assert len(load_manifest(manifest).observations) == 4
    assert append_to_manifest(manifest, [AREA], done) == 0                              # nothing twice


def test_cli_from_sites_to_manifest(servers, tmp_path, capsys):
    (tmp_path / "sites.csv").write_text(f"name,lat,lon\nmine,{LAT},{LON}\n")
    areas, table, out = tmp_path / "areas.geojson", tmp_path / "candidates.csv", tmp_path / "imagery"
    assert main(["sites", "plan", str(tmp_path / "sites.csv"), "-o", str(areas), "--half-size", "1000"]) == 0
    assert main(["acquire", "search", str(areas), "--start", "2020-01-01", "--end", "2020-12-31",
                 "--stac-url", servers.stac.url, "-o", str(table), "-q"]) == 0
    args = ["acquire", "fetch", str(areas), str(table), "-o", str(out), "--dates", "2", "--min-gap-months", "3", "-q"]
    assert main(args) == 0
    assert "2 files fetched, 0 already there; 2 new observations" in capsys.readouterr().out
    m = load_manifest(out / "manifest.yaml")
    assert sorted(o.date.isoformat() for o in m.observations) == ["2020-06-08", "2020-11-05"]
    scene = open_scene(m.observations[0].scene)
    assert scene.grid.bounds == AREA_A                     # the planned rectangle, exactly
    assert main(args) == 0
    assert "0 files fetched, 2 already there; 0 new observations" in capsys.readouterr().out
    assert main(["acquire", "update", str(areas), "--since", "2020-12-01", "--until", "2020-12-31", "-o", str(out),
                 "--stac-url", servers.stac.url, "-q"]) == 0
    assert "nothing new since 2020-12-01" in capsys.readouterr().out
    assert main(["acquire", "fetch", str(areas), str(table), "-o", str(out), "--dates", "none"]) == 2
    assert "--dates: 'none' is not a number of dates" in capsys.readouterr().err
