"""`sandwatch alerts calibrate`: the confirmation gate chosen from reviewers' decisions, on a
history written by the monitor's own writers (observation rasters + rows) and reviewed through
the map's review store and `sandwatch alerts reject`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

from sandwatch.alerts.calibrate import calibrate
from sandwatch.alerts.model import AlertRules
from sandwatch.alerts.stage import update_alerts
from sandwatch.cli.main import main
from sandwatch.grid import Grid
from sandwatch.monitor.history import History
from sandwatch.monitor.history_alerts import events
from sandwatch.monitor.run import write_observation_raster

D = [dt.date(2023, 1, 5) + dt.timedelta(days=12 * i) for i in range(5)]
GRID = Grid(CRS.from_epsg(32644), Affine(10, 0, 500000, 0, -10, 2000000), 48, 48)
# 5 x 5 boxes at (row, col) with the probability the model gives them on every date
MINES = {(2, 2): 0.95, (2, 20): 0.9, (2, 38): 0.88}
LOOKS = {(30, 2): 0.7, (30, 20): 0.78, (30, 38): 0.82}


def write_history(root):
    db = root / "history.sqlite"
    h = History(db)
    try:
        aoi = shapely.box(500000, 2000000 - 480, 500480, 2000000)      # the whole 48 x 48 px grid
        rec = h.add_site("s", crs=GRID.crs.to_wkt(), transform=list(GRID.transform)[:6], width=48, height=48,
                         window=[0, 0, 48, 48], aoi_wkt=aoi.wkt, latitude=18.0, longitude=81.0)
        for d in D:
            mine = np.zeros((48, 48), bool)
            prob = np.full((48, 48), 0.1, np.float32)
            for (r, c), p in {**MINES, **LOOKS}.items():
                mine[r:r + 5, c:c + 5] = True
                prob[r:r + 5, c:c + 5] = p
            raster = write_observation_raster(root / f"{d}.tif", mine, np.ones_like(mine), GRID, d, prob)
            h.record_date(rec.id, {"date": d, "scene": f"{d}.tif", "scene_hash": f"h{d}", "valid_fraction": 1.0,
                                   "gap": False, "mined_km2": 0.0, "n_polygons": 0, "cloud_test": "none",
                                   "observation_raster": str(raster), "polygons": None}, [], [])
    finally:
        h.close()
    return db


@pytest.fixture()
def reviewed(tmp_path):
    from sandwatch.serve.review import HistoryReviews

    db = write_history(tmp_path)
    res = update_alerts(db, "s", tmp_path / "layers", AlertRules(confirm_prob=0.0))   # every region confirmed
    assert sum(e["status"] == "confirmed" for e in res.events) == 6
    store = HistoryReviews([f"sqlite:///{db}"])
    try:
        region_key = {e["region"]: e["key"] for e in res.events}
        keys = {region_key[i.region]: i.id for i in store.alerts() if i.pixel}     # event key -> map alert id
        assert len(keys) == 6
        for (r, c) in MINES:
            store.decide(keys[f"{D[0]}:{r}:{c}"], "accepted", "", "tester")
        for (r, c) in list(LOOKS)[:2]:
            store.decide(keys[f"{D[0]}:{r}:{c}"], "rejected", "", "tester")
        store.decide(keys[f"{D[0]}:2:2"], "needs field check", "", "tester")    # the latest: no verdict
        store.decide(keys[f"{D[0]}:2:2"], "accepted", "", "tester")
    finally:
        store.close()
    (r, c) = list(LOOKS)[2]
    assert main(["alerts", "reject", str(db), "--site", "s", "--key", f"{D[0]}:{r}:{c}", "--by", "officer"]) == 0
    return db


def test_gates_are_scored_on_the_reviewed_regions_and_the_lowest_precise_one_suggested(reviewed, capsys):
    cal = calibrate(reviewed, target=0.95)
    assert (cal.accepted, cal.rejected, cal.missing) == (3, 3, [])
    rows = {r.gate: (r.confirmed, r.accepted, round(r.precision, 3), round(r.recall, 3)) for r in cal.rows}
    assert rows[0.0] == (6, 3, 0.5, 1.0)              # time alone: every look-alike confirmed (rejections ignored)
    assert rows[0.75] == (5, 3, 0.6, 1.0)             # 0.78 and 0.82 pass
    assert rows[0.8] == (4, 3, 0.75, 1.0)
    assert rows[0.85] == (3, 3, 1.0, 1.0)
    assert rows[0.9] == (2, 2, 1.0, 0.667)            # the 0.88 mine is lost
    assert rows[0.95][1] <= 1
    assert cal.suggested == 0.85 and cal.weak          # 6 reviewed regions < 20
    assert calibrate(reviewed, target=0.7).suggested == 0.8
    assert main(["alerts", "calibrate", str(reviewed), "-q"]) == 0
    out = capsys.readouterr().out
    assert "reviewed regions: 3 accepted (mining), 3 rejected" in out
    assert "suggested: --confirm-prob 0.85 (precision 1.000, recall 1.000 on the reviewed regions)" in out
    assert "weak evidence: 6 reviewed region(s)" in out


def test_without_reviews_is_one_line(tmp_path, capsys):
    db = write_history(tmp_path)
    update_alerts(db, "s", tmp_path / "layers")
    assert len(events(History(db, must_exist=True), None)) > 0
    assert main(["alerts", "calibrate", str(db), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no reviewed alert region" in err[0] and "sandwatch serve" in err[0]
    assert main(["alerts", "calibrate", str(db), "--site", "nope", "-q"]) == 2
    assert "has no site 'nope'" in capsys.readouterr().err


def test_a_map_rejection_and_what_the_alert_model_reads_of_it_are_one_transaction(tmp_path, monkeypatch):
    import sandwatch.serve.review as review
    from sandwatch.monitor.history_alerts import latest_decisions, rejected_keys

    db = write_history(tmp_path)
    update_alerts(db, "s", tmp_path / "layers")
    store = review.HistoryReviews([f"sqlite:///{db}"])
    try:
        item = next(i for i in store.alerts() if i.pixel)

        def crash(*a, **k):        # the process dies between the two writes
            raise RuntimeError("killed")

        monkeypatch.setattr(review, "add_review", crash)
        with pytest.raises(RuntimeError):
            store.decide(item.id, "rejected", "", "tester")
        h = History(db, must_exist=True)
        try:
            assert latest_decisions(h) == {} and rejected_keys(h, h.site("s").id) == set()   # neither, not half
        finally:
            h.close()
        monkeypatch.undo()
        store.decide(item.id, "rejected", "", "tester")
        h = History(db, must_exist=True)
        try:
            assert len(latest_decisions(h)) == 1 and len(rejected_keys(h, h.site("s").id)) == 1
        finally:
            h.close()
    finally:
        store.close()
