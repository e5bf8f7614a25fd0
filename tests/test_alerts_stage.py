"""``sandwatch monitor`` -> pixel alerts: events once, layers (COGs + GeoJSON) with their
georeferencing and values, reviews; on the marker-model scenes of ``test_monitor_cli``."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import numpy as np
import pytest
import rasterio

from sandwatch.cli.main import main
from sandwatch.predict.writer import validate_cog
from alerts_fixtures import grown  # noqa: F401 - the fixture
from test_monitor_cli import D, GRID


def events(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("select key, status, date, first_date, count, area_m2, confirmed_m2 from alert_events "
                           "order by id").fetchall()
    finally:
        con.close()


def site_window(db):
    con = sqlite3.connect(db)
    try:
        return json.loads(con.execute("select window from sites").fetchone()[0])
    finally:
        con.close()


def test_events_are_raised_once_with_dates_and_areas(grown, capsys):
    db = grown["out"] / "history.sqlite"
    row, col, _, _ = site_window(db)
    key = f"{D[1]}:{30 - row}:{30 - col}"
    ev = events(db)
    # D1: A1 seen (provisional); D2, D3 agree -> confirmed on D3; D4 is a gap; D5 only grows it
    assert ev == [(key, "provisional", str(D[1]), str(D[1]), 1, 14400.0, 0.0),
                  (key, "confirmed", str(D[3]), str(D[1]), 3, 28800.0, 14400.0)]
    capsys.readouterr()
    assert main(grown["args"]) == 0                               # a re-run raises nothing again
    said = capsys.readouterr().out
    assert "alerts of grow: 0 new event(s); 1 provisional, 1 confirmed, 0 expired in all" in said
    assert events(db) == ev


def test_layers_are_cogs_on_the_aoi_window_with_the_documented_values(grown):
    folder = grown["out"] / "alerts"
    db = grown["out"] / "history.sqlite"
    row, col, h, w = site_window(db)
    wgrid = GRID.window_grid(__import__("sandwatch.grid", fromlist=["Window"]).Window(row, col, h, w))
    layers = {}
    for name in ("status", "first_date", "confidence", "count"):
        path = folder / f"{D[5]}.{name}.tif"
        ok, errors, _ = validate_cog(path)
        assert ok, errors
        with rasterio.open(path) as src:
            assert src.crs == GRID.crs and src.transform == wgrid.transform and (src.height, src.width) == (h, w)
            layers[name] = (src.read(1), src.nodata)
    a1 = np.zeros((h, w), bool)
    a1[30 - row:42 - row, 30 - col:42 - col] = True
    a3 = np.zeros((h, w), bool)
    a3[30 - row:50 - row, 30 - col:54 - col] = True
    status, nodata = layers["status"]
    assert nodata == 255 and (status[a1] == 2).all() and (status[a3 & ~a1] == 1).all()
    inside = status != 255
    assert (status[inside & ~a3] == 0).all() and inside.mean() > 0.3
    first, fnd = layers["first_date"]
    assert fnd == -32768
    assert (first[a1] == (D[1] - dt.date(2020, 12, 31)).days).all()       # 15 days since the DIST-ALERT epoch
    assert (first[a3 & ~a1 & (status == 1)] >= (D[3] - dt.date(2020, 12, 31)).days).all()
    assert (first[inside & ~a3] == -32768).all()
    count, _ = layers["count"]
    assert (count[a1] == 4).all()                                     # D1, D2, D3, D5 (D4 a gap)
    conf, _ = layers["confidence"]
    assert (conf[a1] == 100).all() and (conf[a3 & ~a1] < 100).all()
    gj = json.loads((folder / f"{D[5]}.alerts.geojson").read_text())
    assert len(gj["features"]) == 1
    p = gj["features"][0]["properties"]
    assert (p["status"], p["area_ha"], p["confirmed_ha"], p["first_date"]) == ("confirmed", 4.8, 1.44, str(D[1]))
    assert gj["features"][0]["geometry"]["type"] == "Polygon"


def test_reject_sets_status_4_and_stops_events(grown, tmp_path, capsys):
    import shutil

    db = tmp_path / "history.sqlite"
    shutil.copy(grown["out"] / "history.sqlite", db)
    key = events(db)[0][0]
    assert main(["alerts", "reject", str(db), "--site", "grow", "--key", key, "--by", "tester"]) == 0
    assert main(["alerts", "reject", str(db), "--site", "grow", "--key", "nope", "--by", "t"]) == 2
    assert "no alert 'nope'" in capsys.readouterr().err
    assert main(["alerts", "update", str(db), "--site", "grow", "-o", str(tmp_path / "layers")]) == 0
    with rasterio.open(tmp_path / "layers" / f"{D[5]}.status.tif") as src:
        status = src.read(1)
    assert set(np.unique(status)) - {255} == {0, 4}                  # A2, A3 joined the rejected A1
    assert len(events(db)) == 2                                       # history kept, nothing new
    assert "alerts of grow: 0 new event(s)" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["alerts", "list", str(db)]) == 0
    assert "outbox: 0 sent, 0 pending, 0 sending" in capsys.readouterr().out


def test_observation_raster_keeps_the_probability_and_old_rasters_still_read(tmp_path):
    from sandwatch.monitor.run import read_observation_raster, write_observation_raster

    grid = GRID.window_grid(__import__("sandwatch.grid", fromlist=["Window"]).Window(0, 0, 4, 5))
    mine = np.zeros((4, 5), bool)
    mine[1, 1:3] = True
    observed = np.ones((4, 5), bool)
    observed[3] = False
    prob = np.full((4, 5), 0.2, np.float32)
    prob[mine] = 0.75
    path = write_observation_raster(tmp_path / "o.tif", mine, observed, grid, D[0], prob)
    m, o, p = read_observation_raster(path, probability=True)
    assert (m == mine).all() and (o == observed).all()
    assert p[mine] == pytest.approx(0.75, abs=1 / 254) and p[1, 0] == pytest.approx(0.2, abs=1 / 254)
    assert (p[3] == 0).all()                                          # not observed
    with rasterio.open(path) as src:
        assert src.count == 2 and src.read(2)[3, 0] == 255 and src.transform == grid.transform
    old = write_observation_raster(tmp_path / "old.tif", mine, observed, grid, D[0])   # one band, as before
    assert (read_observation_raster(old, probability=True)[2] == mine).all()


def test_a_confirmation_probability_out_of_range_is_one_line(grown, tmp_path, capsys):
    db = grown["out"] / "history.sqlite"
    assert main(["alerts", "update", str(db), "--site", "grow", "-o", str(tmp_path / "l"), "--confirm-prob", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "confirm_prob must lie in [0, 1), got 1.5" in err[0] and "--confirm-prob" in err[0]
    assert not (tmp_path / "l").exists()
