"""Monitoring the synthetic sites of ``sandwatch demo-data``: growing, stopping, never mined.

The demo data is written with six dates per site and a thick cloud over one date of the
growing site. The model is the marker U-Net of ``test_monitor_cli``; each scene's B01 is set
to the marker on the pixels of the site's *active* mining clusters at that date (the demo's
own truth, :meth:`SiteLandscape.scene`), so the model sees what a perfect detector of active
mining would see, and the alert dates can be checked against the story of each site.
"""

from __future__ import annotations

import csv
import datetime as dt

import numpy as np
import pytest
import rasterio
import yaml

from sandwatch.cli.main import main
from sandwatch.synthetic import SiteLandscape, plan_sites, write_demo_data
from test_monitor_cli import marker_checkpoint

DATES = [dt.date(2021, 1, 10) + dt.timedelta(days=30 * i) for i in range(6)]
SIZE = 128


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_demo_sites_growing_stopping_never(tmp_path):
    demo = tmp_path / "demo"
    write_demo_data(demo, sites=3, size=SIZE, seed=1, dates=DATES, clouds={"site00": {DATES[3]: 0.9}})
    info = yaml.safe_load((demo / "sites.yaml").read_text())
    assert [s["kind"] for s in info["sites"]] == ["growing", "stopping", "never"]
    specs = plan_sites(3, SIZE, 1, DATES)
    ckpt = marker_checkpoint(tmp_path / "marker.ckpt")
    active_px = {}
    for spec in specs:
        land = SiteLandscape(spec)
        active_px[spec.name] = []
        for k, date in enumerate(spec.dates):
            truth = land.scene(k)
            mask = np.zeros(truth.mine_mask.shape, bool)
            for cl in truth.clusters:
                if cl.active:
                    mask |= cl.mask
            active_px[spec.name].append(int(mask.sum()))
            with rasterio.open(demo / spec.name / f"{date}.tif", "r+") as ds:
                b01 = ds.read(1)
                b01[mask] = 6000
                ds.write(b01, 1)
    out = tmp_path / "mon"
    for spec in specs:
        scenes = [str(demo / spec.name / f"{d}.tif") for d in DATES]
        assert main(["monitor", "--checkpoint", str(ckpt), "--site", spec.name, "--rivers",
                     str(demo / spec.name / "rivers.geojson"), "--scenes", *scenes, "-o", str(out / spec.name),
                     "--edge", "8", "-q"]) == 0

    # growing: mining from the first date; the alert comes on the second (k = 2), the cloudy
    # date is a gap, and the site keeps growing
    grow = read_csv(out / "site00" / "timeseries.csv")
    assert [r["status"] for r in grow] == ["valid"] * 3 + ["gap"] + ["valid"] * 2
    assert active_px["site00"][0] * 100 >= 5000
    alerts = read_csv(out / "site00" / "alerts.csv")
    new = [a for a in alerts if a["kind"] == "new"]
    assert (new[0]["date"], new[0]["first_seen"]) == (DATES[1].isoformat(), DATES[0].isoformat())
    assert DATES[3].isoformat() not in {a["date"] for a in alerts}
    assert any(a["kind"] == "growth" for a in alerts)
    mined = [float(r["mined_km2"]) for r in grow if r["status"] == "valid"]
    valid_idx = [0, 1, 2, 4, 5]
    assert mined == pytest.approx([active_px["site00"][i] * 100 / 1e6 for i in valid_idx])
    assert mined[-1] > mined[0]

    # stopping: active in the first half of the period, then abandoned: inactive after k dates
    stop = read_csv(out / "site01" / "alerts.csv")
    firsts = [i for i, n in enumerate(active_px["site01"]) if n == 0]
    assert firsts and firsts == list(range(firsts[0], 6))
    # (a cluster's pits, disturbed sand and stockpiles may form several regions: each alerts, each stops)
    assert {(a["kind"], a["date"]) for a in stop} == {("new", DATES[1].isoformat()),
                                                      ("inactive", DATES[firsts[0] + 1].isoformat())}
    assert sum(a["kind"] == "new" for a in stop) == sum(a["kind"] == "inactive" for a in stop) >= 1

    # never: no alert at all
    assert read_csv(out / "site02" / "alerts.csv") == []
    assert all(float(r["mined_km2"]) == 0 for r in read_csv(out / "site02" / "timeseries.csv"))
