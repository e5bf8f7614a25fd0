"""``sandwatch monitor`` end to end on synthetic scenes whose "mine" pixels are exactly known.

The checkpoint is a tiny U-Net with hand-set weights (no training): an identity path from
band B01 through the top level of the U-Net (centre taps of the 3x3 convolutions, batch norms
at identity, every other weight zero) to the head, ``logit = 40 (B01 - 0.35)``. Scenes are
rendered with :func:`sandwatch.synthetic.make_scene` and their B01 set to 0.6 reflectance on
the mine mask we choose per date, so the model predicts exactly that mask (natural B01 stays
below 0.23). Thick clouds have B01 about 0.46: the model calls them mine, so any cloud not
masked would show up as mining.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from sandwatch.bands import BandSpec, Normalization
from sandwatch.cli.main import main
from sandwatch.models import build_model
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.synthetic import cloud_opacity, make_scene, utm_grid, write_lines

SIZE = 96
GRID = utm_grid(85.85, 20.30, size=SIZE)
D = [dt.date(2021, 1, 5) + dt.timedelta(days=10 * i) for i in range(8)]
EDGE = ["--edge", "8"]


def marker_checkpoint(path: Path, band: str = "B01", level: float = 0.35, gain: float = 40.0) -> Path:
    model = build_model("unet", [band], width=2)
    sd = model.state_dict()
    for key, v in sd.items():
        if not v.is_floating_point():
            continue
        v.zero_()
        if key.endswith("running_var") or (key.endswith(".weight") and v.ndim == 1):
            v.fill_(1.0)                                        # batch norm at identity
    for key in ("encoder.inc.0.weight", "encoder.inc.3.weight", "decoder.ups.3.conv.0.weight",
                "decoder.ups.3.conv.3.weight"):
        sd[key][0, 0, 1, 1] = 1.0                               # channel 0 carries the band through
    sd["decoder.head.weight"][0, 0, 0, 0] = gain
    sd["decoder.head.bias"][0] = -gain * level
    model.load_state_dict(sd)
    spec = BandSpec((band,), Normalization.constant(1))
    return Checkpoint.from_model(model, window=64, threshold=0.5, band_spec=spec).save(path)


def marked_scene(path: Path, date: dt.date, mine: np.ndarray, *, cloud: float = 0.0, seed: int = 0) -> Path:
    clouds = cloud_opacity(GRID.shape, cloud, seed=seed + 11) if cloud else None
    make_scene(path, GRID, date=date, seed=seed, clouds=clouds)
    with rasterio.open(path, "r+") as ds:
        b01 = ds.read(1)
        b01[mine] = 6000
        ds.write(b01, 1)
    return path


def box(r0, c0, h, w):
    m = np.zeros(GRID.shape, bool)
    m[r0:r0 + h, c0:c0 + w] = True
    return m


def rivers(path: Path) -> Path:
    from shapely.geometry import LineString

    left, bottom, right, top = GRID.bounds
    x = (left + right) / 2
    return write_lines(path, [LineString([(x, bottom - 50), (x, top + 50)])], GRID.crs)


NONE = np.zeros(GRID.shape, bool)
A1 = box(30, 30, 12, 12)           # 144 px = 1.44 ha
A2 = box(30, 30, 12, 24)           # 288 px
A3 = box(30, 30, 20, 24)           # 480 px
GROWING = [(NONE, 0.0), (A1, 0.0), (A1, 0.0), (A2, 0.0), (A2, 0.9), (A3, 0.0)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    ckpt = marker_checkpoint(root / "marker.ckpt")
    riv = rivers(root / "rivers.geojson")
    grow = [marked_scene(root / f"grow_{D[i]}.tif", D[i], m, cloud=c, seed=i) for i, (m, c) in enumerate(GROWING)]
    never = [marked_scene(root / f"never_{D[i]}.tif", D[i], NONE, cloud=0.3 if i == 2 else 0.0, seed=20 + i)
             for i in range(4)]
    stop_masks = [A1, A1, A1, NONE, NONE, NONE]
    stop = [marked_scene(root / f"stop_{D[i]}.tif", D[i], m, seed=40 + i) for i, m in enumerate(stop_masks)]
    extra = marked_scene(root / f"grow_{D[6]}.tif", D[6], A3, seed=6)
    return {"root": root, "ckpt": ckpt, "rivers": riv, "grow": grow, "never": never, "stop": stop, "extra": extra}


def run_cli(world, site, scenes, out, *extra):
    args = ["monitor", "--checkpoint", str(world["ckpt"]), "--site", site, "--rivers", str(world["rivers"]),
            "--scenes", *map(str, scenes), "-o", str(out), "-q", *EDGE, *extra]
    return main(args)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def db_counts(db):
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("sites", "observations", "detections", "alerts")}
    finally:
        con.close()


def test_the_marker_model_predicts_exactly_the_mask(world, tmp_path):
    from sandwatch.predict import predict_scene

    res = predict_scene(world["ckpt"], world["grow"][1], tmp_path, edge=8, progress=False)
    with rasterio.open(res.paths["mask"]) as src:
        m = src.read(1)
    assert np.array_equal(m == 1, A1)


def test_growing_site_alerts_on_the_right_date_and_cloudy_date_is_a_gap(world, tmp_path, capsys):
    out = tmp_path / "grow"
    scenes = list(reversed(world["grow"]))                     # any order
    assert run_cli(world, "grow", scenes, out) == 0
    said = capsys.readouterr().out
    assert "6 new date(s)" in said and "alert region 1: new, " in said and " ha on " in said
    series = read_csv(out / "timeseries.csv")
    assert [r["date"] for r in series] == [d.isoformat() for d in D[:6]]
    assert [r["status"] for r in series] == ["valid"] * 4 + ["gap", "valid"]
    assert series[4]["mined_km2"] == "" and series[4]["n_polygons"] == ""
    assert float(series[4]["valid_fraction"]) < 0.5
    mined = [float(r["mined_km2"]) for r in series if r["status"] == "valid"]
    assert mined == pytest.approx([0.0, 0.0144, 0.0144, 0.0288, 0.0480])
    assert [r["n_polygons"] for r in series if r["status"] == "valid"] == ["0", "1", "1", "1", "1"]

    alerts = read_csv(out / "alerts.csv")
    assert [(a["kind"], a["region"], a["date"], a["first_seen"]) for a in alerts] == [
        ("new", "1", D[2].isoformat(), D[1].isoformat()),
        # the added half (seen on D3) is confirmed on the next *valid* date: D5, since D4 is a gap
        ("growth", "1", D[5].isoformat(), D[1].isoformat()),
    ]
    assert [float(a["area_ha"]) for a in alerts] == pytest.approx([1.44, 2.88])
    assert [float(a["growth_ha"]) for a in alerts] == pytest.approx([1.44, 1.44])
    # centroid of the first alert = centre of A1 (rows 30..42, cols 30..42) in lat/lon
    x, y = GRID.transform * (36, 36)
    lon, lat = Transformer.from_crs(GRID.crs, "EPSG:4326", always_xy=True).transform(x, y)
    assert float(alerts[0]["latitude"]) == pytest.approx(lat, abs=1e-6)
    assert float(alerts[0]["longitude"]) == pytest.approx(lon, abs=1e-6)
    assert alerts[0]["polygons"] == f"polygons/{D[2]}.geojson"

    gj = json.loads((out / "alerts.geojson").read_text())
    assert len(gj["features"]) == 2 and gj["features"][0]["geometry"]["type"] == "Polygon"
    polys = json.loads((out / "polygons" / f"{D[1]}.geojson").read_text())
    assert [f["properties"]["area_m2"] for f in polys["features"]] == [14400.0]
    png = (out / "timeseries.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with rasterio.open(out / "observations" / f"{D[4]}_{series[4]['scene_hash'][:8]}.tif") as src:
        obs = src.read(1)
        assert src.crs == GRID.crs
    assert (obs == 255).mean() > 0.5                           # the cloud is "not observed"


def test_rerun_is_idempotent_and_a_new_date_adds_only_its_own(world, tmp_path, capsys):
    out = tmp_path / "grow"
    assert run_cli(world, "grow", world["grow"][:4], out) == 0
    first = db_counts(out / "history.sqlite")
    assert first["observations"] == 4 and first["alerts"] == 1
    capsys.readouterr()
    assert run_cli(world, "grow", world["grow"][:4], out) == 0
    assert db_counts(out / "history.sqlite") == first
    assert "0 new date(s), 4 already known" in capsys.readouterr().out
    # the two next dates: one gap (nothing), one growth alert
    assert run_cli(world, "grow", world["grow"][4:5], out) == 0
    after_gap = db_counts(out / "history.sqlite")
    assert after_gap["observations"] == 5 and after_gap["alerts"] == 1
    assert run_cli(world, "grow", world["grow"], out) == 0     # old ones again + the new date
    now = db_counts(out / "history.sqlite")
    assert now["observations"] == 6 and now["alerts"] == 2
    assert [a["kind"] for a in read_csv(out / "alerts.csv")] == ["new", "growth"]
    # one more date later on: one observation and its growth alert (A3 seen on D5 and D6)
    assert run_cli(world, "grow", [world["extra"]], out) == 0
    later = db_counts(out / "history.sqlite")
    assert later["observations"] == 7 and later["alerts"] == 3
    assert read_csv(out / "alerts.csv")[-1]["date"] == D[6].isoformat()
    now = later
    # the same date's scene under another name is the same content: nothing new
    copy = tmp_path / "renamed.tif"
    copy.write_bytes(world["grow"][5].read_bytes())
    assert run_cli(world, "grow", [copy], out) == 0
    assert db_counts(out / "history.sqlite") == now


def test_never_mined_site_with_a_partly_cloudy_date_raises_nothing(world, tmp_path):
    out = tmp_path / "never"
    assert run_cli(world, "never", world["never"], out) == 0
    series = read_csv(out / "timeseries.csv")
    assert [r["status"] for r in series] == ["valid"] * 4
    assert 0.5 < float(series[2]["valid_fraction"]) < 0.85
    assert [float(r["mined_km2"]) for r in series] == [0.0] * 4
    assert read_csv(out / "alerts.csv") == []
    # control: without the cloud test the clouds of that date look like mining to this model
    out2 = tmp_path / "never-nocloud"
    assert run_cli(world, "never", world["never"], out2, "--cloud-test", "none") == 0
    series2 = read_csv(out2 / "timeseries.csv")
    assert float(series2[2]["mined_km2"]) > 0.01


def test_stopping_site_is_reported_inactive_and_report_lists_open_alerts(world, tmp_path, capsys):
    out = tmp_path / "mon"
    assert run_cli(world, "stop", world["stop"], out) == 0
    alerts = read_csv(out / "alerts.csv")
    assert [(a["kind"], a["date"]) for a in alerts] == [("new", D[1].isoformat()), ("inactive", D[4].isoformat())]
    assert run_cli(world, "grow", world["grow"], out) == 0          # a second site in the same database
    capsys.readouterr()
    assert main(["monitor", "report", str(out / "history.sqlite")]) == 0
    text = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith(("grow", "stop"))}
    # areas in hectares (0.0480 km2 = 4.80 ha); the open-alert count; the trend fitted over the series
    assert lines["grow"].split()[2] == "4.80" and lines["grow"].split()[5] == "1"
    assert "growing (+" in lines["grow"] and "ha/month" in lines["grow"]
    assert lines["stop"].split()[5] == "0" and "ha/month" in lines["stop"]
    assert f"region 1: grew +" in text and f"ha since the previous observation, now" in text and f"on {D[5]}" in text


@pytest.mark.slow
def test_kill_mid_run_keeps_committed_dates_and_rerun_completes(world, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from sandwatch.monitor import MonitorConfig, monitor_site
        from sandwatch.predict import PredictConfig
        def stop(date, scene):
            if date.isoformat() == {D[2].isoformat()!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        monitor_site({str(world['ckpt'])!r}, "grow", {str(world['rivers'])!r}, {[str(p) for p in world['grow']]!r},
                     {str(out)!r}, config=MonitorConfig(predict=PredictConfig(edge=8, progress=False)), progress=False, on_commit=stop)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    counts = db_counts(out / "history.sqlite")
    assert counts["observations"] == 3 and counts["alerts"] == 1    # D0, D1, D2 and the new alert of D2
    assert not (out / "timeseries.csv").exists()
    assert not list(out.rglob("*.partial*"))
    assert run_cli(world, "grow", world["grow"], out) == 0
    again = db_counts(out / "history.sqlite")
    assert (again["observations"], again["alerts"]) == (6, 2)
    kinds = [(a["kind"], a["date"]) for a in read_csv(out / "alerts.csv")]
    assert kinds == [("new", D[2].isoformat()), ("growth", D[5].isoformat())]


def test_bad_input_is_one_line(world, tmp_path, capsys):
    assert main(["monitor", "--site", "x", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing --checkpoint, --rivers or --aoi, --scenes" in err
    both = ["monitor", "--checkpoint", str(world["ckpt"]), "--site", "x", "--rivers", str(world["rivers"]),
            "--aoi", str(world["rivers"]), "--scenes", str(world["grow"][0]), "-o", str(tmp_path / "both")]
    assert main(both) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rivers: given with --aoi" in err and not (tmp_path / "both").exists()
    assert run_cli(world, "grow", [tmp_path / "nope.tif"], tmp_path / "o") == 2
    assert "nope.tif: no such scene" in capsys.readouterr().err
    other = utm_grid(79.8, 21.1, size=SIZE)
    make_scene(tmp_path / "elsewhere.tif", other, date=D[0])
    assert run_cli(world, "grow", [world["grow"][0], tmp_path / "elsewhere.tif"], tmp_path / "o2") == 2
    assert "is not on the grid of site 'grow'" in capsys.readouterr().err
    assert main(["monitor", "report", str(tmp_path / "missing.sqlite")]) == 2
    assert "no such history database" in capsys.readouterr().err
