"""``sandwatch acquire search`` against a real STAC API (stac-fastapi-pgstac on PostgreSQL +
PostGIS) and COGs served by nginx, all on 127.0.0.1: the clear fraction is measured over the
area from SCL, dates of two tiles are mosaicked, reprocessed copies kept once."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import rasterio
from conftest import shared_path
from staccatalogue import AREA_A, AREA_B, EPSG, servers_or_skip

from sandwatch.acquire.fetch import clear_http_cache
from sandwatch.acquire.search import SearchConfig, dedupe, read_candidates, search, write_candidates
from sandwatch.acquire.sites import Area, Site, write_areas
from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError

YEAR = (dt.date(2020, 1, 1), dt.date(2020, 12, 31))


@pytest.fixture(scope="module")
def servers():
    return servers_or_skip()


def area(bounds, name="A") -> Area:
    return Area(name, EPSG, bounds, [Site(name, 24.5, -11.5)])


def test_clear_fraction_is_measured_over_the_area(servers):
    clear_http_cache()                    # count every request, whatever ran before in this process
    servers.nginx.clear_log()
    rows = search([area(AREA_A)], *YEAR, SearchConfig(stac_url=servers.stac.url, workers=2))
    by_date = {r.date.isoformat(): r for r in rows}
    assert len(rows) == servers.facts["n_dates"]
    assert by_date["2020-04-19"].clear_fraction == 0.0            # cloud over everything
    assert by_date["2020-04-29"].clear_fraction == 0.5            # cloud over the west half of the area
    assert by_date["2020-04-29"].cloud_cover == pytest.approx(4.052, abs=1e-3)   # not the scene-wide figure
    for day in ("2020-02-19", "2020-03-10", "2020-06-08", "2020-08-12"):
        assert by_date[day].clear_fraction == 1.0 and by_date[day].covered_fraction == 1.0
    # only the SCL assets were read (the item without SCL: its B02-B04), and only in part
    uris = {uri for _, uri, *_ in servers.nginx.log_lines()}
    assert all(u.endswith("SCL.tif") for u in uris if "real/B0" not in u)
    assert {u for u in uris if "real/B0" in u} == {"/real/B02.tif", "/real/B03.tif", "/real/B04.tif"}


def test_reprocessed_copy_kept_once_newest_baseline(servers):
    rows = search([area(AREA_A)], dt.date(2020, 10, 1), dt.date(2020, 10, 31), SearchConfig(stac_url=servers.stac.url))
    assert [(r.items, r.baselines) for r in rows] == [(["S2A_29RKH_20201011_1_L2A"], ["04.00"])]


def test_item_without_scl_uses_the_spectral_test(servers):
    from sandwatch.imagery.clouds import l1c_cloud

    (row,) = search([area(AREA_A)], dt.date(2020, 11, 1), dt.date(2020, 11, 30), SearchConfig(stac_url=servers.stac.url))
    assert row.clear_source == "spectral"
    # the same test on a direct read of the files (100 m pixels; the search reads at 60 m)
    real = shared_path("s2-l2a-29RKH-cogs")
    refl = []
    for b in ("B02", "B03", "B04"):
        with rasterio.open(real / f"{b}.tif") as ds:
            w = rasterio.windows.from_bounds(*AREA_A, ds.transform)
            refl.append(ds.read(1, window=w).astype(np.float32) / 10000)
    assert row.clear_fraction == pytest.approx(1 - l1c_cloud(*refl).mean(), abs=0.05)


def test_an_area_over_two_tiles_is_covered_by_their_mosaic(servers):
    (row,) = search([area(AREA_B, "B")], dt.date(2020, 9, 16), dt.date(2020, 9, 16),
                    SearchConfig(stac_url=servers.stac.url))
    assert sorted(row.tiles) == ["29RKH", "29RKJ"] and row.covered_fraction == 1.0
    assert row.clear_fraction == 1.0


def test_empty_search_and_sites_outside_every_tile(servers):
    with pytest.raises(SandwatchError, match="no sentinel-2-l2a items between 2019-01-01") as e:
        search([area(AREA_A)], dt.date(2019, 1, 1), dt.date(2019, 12, 31), SearchConfig(stac_url=servers.stac.url))
    assert servers.stac.url in str(e.value) and "\n" not in str(e.value)
    at_sea = Area("sea", EPSG, (100_000.0, 2_900_000.0, 102_000.0, 2_902_000.0))   # north-west of the tile, at sea
    with pytest.warns(UserWarning, match="area sea: no sentinel-2-l2a item"):
        rows = search([area(AREA_A), at_sea], *YEAR, SearchConfig(stac_url=servers.stac.url))
    assert {r.area for r in rows} == {"A"}
    with pytest.raises(SandwatchError, match="no sentinel-2-l2a items"):       # every item has 4.05 % cloud
        search([area(AREA_A)], *YEAR, SearchConfig(stac_url=servers.stac.url, max_cloud=4.0))
    assert len(search([area(AREA_A)], *YEAR, SearchConfig(stac_url=servers.stac.url, max_cloud=4.1))) == 10
    with pytest.raises(SandwatchError, match="is not a reachable STAC API"):
        search([area(AREA_A)], *YEAR, SearchConfig(stac_url=servers.nginx.url + "/nothing-here"))


def test_cli_search_writes_csv_and_parquet(servers, tmp_path, capsys):
    write_areas([area(AREA_A), area(AREA_B, "B")], tmp_path / "areas.geojson")
    for name in ("c.csv", "c.parquet"):
        assert main(["acquire", "search", str(tmp_path / "areas.geojson"), "--start", "2020-04-01", "--end",
                     "2020-04-30", "--stac-url", servers.stac.url, "-o", str(tmp_path / name), "-q"]) == 0
    assert "4 dates over 2 of 2 areas (1 at least 80% clear" in capsys.readouterr().out
    csv_rows, pq_rows = read_candidates(tmp_path / "c.csv"), read_candidates(tmp_path / "c.parquet")
    assert [r.row() for r in csv_rows] == [r.row() for r in pq_rows]
    assert [(r.area, r.date.isoformat(), r.clear_fraction) for r in csv_rows] == [
        ("A", "2020-04-19", 0.0), ("A", "2020-04-29", 0.5), ("B", "2020-04-19", 0.0), ("B", "2020-04-29", 1.0)]
    write_candidates(csv_rows, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "c.csv").read_text()


def test_dedupe_keeps_both_orbits_and_the_newest_reprocessing():
    import pystac

    def item(item_id, when, baseline):
        return pystac.Item(item_id, None, None, dt.datetime.fromisoformat(when),
                           {"grid:code": "MGRS-43PGQ", "s2:processing_baseline": baseline})

    items = [item("S2B_43PGQ_20230415_0_L2A", "2023-04-15T05:21:10+00:00", "05.09"),   # orbit 1
             item("S2B_43PGQ_20230415_1_L2A", "2023-04-15T05:21:10+00:00", "05.10"),   # its reprocessing
             item("S2B_43PGQ_20230415_2_L2A", "2023-04-15T07:01:40+00:00", "05.09")]   # orbit 2, same day
    assert sorted(i.id for i in dedupe(items)) == ["S2B_43PGQ_20230415_1_L2A", "S2B_43PGQ_20230415_2_L2A"]
