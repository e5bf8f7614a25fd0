"""Study areas from sites (``sandwatch sites plan``): UTM rectangles on the 10 m grid, merged
until none overlap, stable ids, river stretches, and one-line errors for bad site files."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from pyproj import Transformer
from shapely.geometry import LineString, box

from sandwatch.acquire.sites import Site, plan_areas, read_areas, read_sites, utm_epsg, write_areas
from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError

TO_LL = Transformer.from_crs("EPSG:32645", "EPSG:4326", always_xy=True).transform


def site(name, x, y, epsg=32645):
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    return Site(name, lat, lon)


def test_one_site_is_a_snapped_square_in_its_utm_zone():
    (a,) = plan_areas([site("s", 500_003.0, 2_300_007.0)], half_size=2500)
    assert a.epsg == 32645
    assert a.bounds == (497_500.0, 2_297_500.0, 502_510.0, 2_302_510.0)   # outwards to 10 m
    assert a.km2 == pytest.approx(5.01 * 5.01)
    assert all(v % 10 == 0 for v in a.bounds)


def test_overlapping_sites_merge_and_areas_never_overlap():
    sites = [site("a", 500_000, 2_300_000), site("b", 503_000, 2_300_000),    # overlap a
             site("c", 506_500, 2_300_000),                                   # overlaps b only
             site("d", 520_000, 2_300_000)]                                   # alone
    areas = plan_areas(sites, half_size=2000)
    assert sorted(len(a.sites) for a in areas) == [1, 3]
    big = next(a for a in areas if len(a.sites) == 3)
    assert big.bounds == (498_000.0, 2_298_000.0, 508_500.0, 2_302_000.0)
    for i, a in enumerate(areas):
        for b in areas[i + 1:]:
            assert box(*a.bounds).intersection(box(*b.bounds)).area == 0


def test_merging_repeats_when_a_merged_box_reaches_a_third_site():
    # a and b overlap; their union's box overlaps c, which overlapped neither square alone
    sites = [site("a", 500_000, 2_300_000), site("b", 503_500, 2_303_500), site("c", 499_000, 2_307_400)]
    areas = plan_areas(sites, half_size=2000)
    assert len(areas) == 1 and len(areas[0].sites) == 3


def test_ids_are_stable_under_order_and_unrelated_sites():
    a, b, far = site("a", 500_000, 2_300_000), site("b", 502_000, 2_300_000), site("far", 600_000, 2_300_000)
    ids1 = {tuple(sorted(s.name for s in x.sites)): x.id for x in plan_areas([a, b])}
    ids2 = {tuple(sorted(s.name for s in x.sites)): x.id for x in plan_areas([far, b, a])}
    assert ids1[("a", "b")] == ids2[("a", "b")]
    assert len(set(ids2.values())) == 2


def test_area_across_a_zone_edge_uses_the_zone_of_its_centre():
    # two sites either side of 90 E (zones 45 and 46), 1.5 km apart
    sites = [Site("w", 22.0, 89.995), Site("e", 22.0, 90.009)]
    (area,) = plan_areas(sites, half_size=1500)
    assert utm_epsg(89.995, 22.0) == 32645 and utm_epsg(90.009, 22.0) == 32646
    assert area.epsg == utm_epsg((89.995 + 90.009) / 2, 22.0) == 32646
    poly = area.lonlat_polygon()
    assert poly.bounds[0] < 89.995 and poly.bounds[2] > 90.009


def test_areas_stretch_along_the_river():
    river = LineString([TO_LL(500_000, 2_280_000), TO_LL(500_000, 2_320_000)])
    rivers = gpd.GeoDataFrame(geometry=[river], crs="EPSG:4326")
    (a,) = plan_areas([site("s", 500_400, 2_300_000)], half_size=1000, rivers=rivers, along_river_km=10)
    x0, y0, x1, y1 = a.bounds
    assert (y1 - y0) == pytest.approx(12_000, abs=30)      # 10 km of river + 1 km either end
    assert (x0, x1) == pytest.approx((499_000, 501_400), abs=10)   # the river +- 1 km, and the site's square
    (b,) = plan_areas([site("s", 504_000, 2_300_000)], half_size=1000, rivers=rivers, along_river_km=10)
    assert b.km2 == pytest.approx(4.0, abs=0.05)            # no river within the half size: no stretch


def test_areas_file_round_trip(tmp_path):
    areas = plan_areas([site("a", 500_000, 2_300_000), site("b", 530_000, 2_300_000)], half_size=1000)
    path = write_areas(areas, tmp_path / "areas.geojson")
    back = read_areas(path)
    assert [(a.id, a.epsg, a.bounds, [s.name for s in a.sites]) for a in back] == \
        [(a.id, a.epsg, a.bounds, [s.name for s in a.sites]) for a in areas]
    feat = json.loads(path.read_text())["features"][0]
    assert feat["properties"]["km2"] == pytest.approx(4.0)
    lon, lat = TO_LL(500_000, 2_300_000)
    assert feat["properties"]["lon"] == pytest.approx(lon, abs=1e-4)


def test_csv_and_geojson_sites(tmp_path):
    (tmp_path / "s.csv").write_text("Name,Latitude,Longitude,river\nkhordha,20.44,85.85,Bhargavi\n,21.0,86.0,\n")
    sites = read_sites(tmp_path / "s.csv")
    assert sites == [Site("khordha", 20.44, 85.85, "Bhargavi"), Site("site002", 21.0, 86.0)]
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "p"}, "geometry": {"type": "Point", "coordinates": [85.85, 20.44]}}]}
    (tmp_path / "s.geojson").write_text(json.dumps(gj))
    assert read_sites(tmp_path / "s.geojson") == [Site("p", 20.44, 85.85)]


@pytest.mark.parametrize("text, words", [
    ("name,x1,y1\na,1,2\n", "has no lat/lon columns"),
    ("lat,lon\n95,10\n", "not a point on Earth"),
    ("lat,lon\nabc,10\n", "are not numbers"),
    ("lat,lon\n", "lists no sites"),
    ("name,lat,lon\na,1,2\na,3,4\n", "more than once"),
])
def test_bad_sites_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "sites.csv"
    path.write_text(text)
    with pytest.raises(SandwatchError, match=words) as e:
        read_sites(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_plan(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("lat,lon\n20.44,85.85\n20.45,85.86\n25.0,80.0\n")
    assert main(["sites", "plan", str(tmp_path / "s.csv"), "-o", str(tmp_path / "a.geojson"), "--half-size", "1000"]) == 0
    assert "3 sites -> 2 areas" in capsys.readouterr().out
    assert len(read_areas(tmp_path / "a.geojson")) == 2
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["sites", "plan", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "b.geojson")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add columns named lat and lon" in err
    assert not (tmp_path / "b.geojson").exists()


def test_areas_file_errors_and_hand_drawn_rectangles(tmp_path):
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(SandwatchError, match="is not valid JSON"):
        read_areas(tmp_path / "bad.geojson")
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(SandwatchError, match="holds no areas; make it with `sandwatch sites plan"):
        read_areas(tmp_path / "empty.geojson")
    with pytest.raises(SandwatchError, match="no such areas file"):
        read_areas(tmp_path / "missing.geojson")
    ring = [list(TO_LL(x, y)) for x, y in ((500_000, 2_300_000), (502_000, 2_300_000), (502_000, 2_302_000),
                                            (500_000, 2_302_000), (500_000, 2_300_000))]
    drawn = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "my pit"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (tmp_path / "drawn.geojson").write_text(json.dumps(drawn))
    (a,) = read_areas(tmp_path / "drawn.geojson")
    assert (a.id, a.epsg) == ("my pit", 32645)
    assert a.bounds == pytest.approx((500_000, 2_300_000, 502_000, 2_302_000), abs=10)
    no_id = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                        "geometry": drawn["features"][0]["geometry"]}]}
    (tmp_path / "noid.geojson").write_text(json.dumps(no_id))
    with pytest.raises(SandwatchError, match="feature 0 lacks the area properties"):
        read_areas(tmp_path / "noid.geojson")
