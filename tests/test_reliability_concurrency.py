"""Runs at the same time on one output folder or history database: shared safely, or
refused with one line.

* ``predict``: a scene being predicted into a folder is locked (``.NAME.lock``: PID, host);
  another run of that scene on this machine waits for it, then skips it; other scenes go on
  in parallel; a dead owner's lock is taken over; an owner on another host is refused.
* ``monitor``: a site's history is locked the same way; runs of different sites share the
  database (each write is one ``BEGIN IMMEDIATE`` transaction); a new database is published
  with ``link``, never over one another run has just created.

The two-run tests start real ``sandwatch`` processes and check exit codes, messages, the
files on disk (against runs made one after the other) and the database rows.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.predict.lock import RunLock, process_start

sys.path.insert(0, str(Path(__file__).parent))
from test_monitor_cli import EDGE, GROWING, D, marked_scene, marker_checkpoint, rivers  # noqa: E402
from test_predict_e2e import tiny_checkpoint, write_scene  # noqa: E402

ENV = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}


def sandwatch(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sandwatch.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def maps(folder: Path, name: str) -> dict:
    out = {}
    for key in ("prob", "mask"):
        with rasterio.open(folder / f"{name}.{key}.tif") as ds:
            out[key] = ds.read(1)
    out["polygons"] = len(json.loads((folder / f"{name}.polygons.geojson").read_text())["features"])
    return out


def same_maps(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in ("prob", "mask")) and a["polygons"] == b["polygons"]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock_of(pid: int, host: str | None = None, **extra) -> str:
    return json.dumps({"pid": pid, "host": host or socket.gethostname(), "start": process_start(pid),
                       "time": "2026-01-01T00:00:00+00:00", "what": "predicting x", "token": f"t{pid}", **extra})


# ---- predict ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    ckpt = root / "m.pt"
    tiny_checkpoint(ckpt, window=64, seed=3)
    paths = []
    for i in range(2):
        write_scene(root / f"s{i}.tif", height=720, width=560, seed=10 + i)
        paths.append(root / f"s{i}.tif")
    ref = root / "ref"
    assert main(["predict", str(ckpt), *map(str, paths), "-o", str(ref), "--edge", "12", "-q"]) == 0
    return {"root": root, "ckpt": ckpt, "scenes": paths, "ref": {p.stem: maps(ref, p.stem) for p in paths}}


@pytest.mark.slow
def test_two_predict_runs_share_one_folder_each_scene_predicted_once(scenes, tmp_path):
    """Run A predicts s0 then s1, run B s1 then s0, into the same folder at the same time.
    Before: B deleted the stream files of A's scene, and A failed ("could not be written").
    Now every scene is predicted by exactly one of them (the other waits for it or finds it
    done), both exit 0, and the maps are those of a run alone."""
    out = tmp_path / "maps"
    s0, s1 = scenes["scenes"]
    a = sandwatch("predict", scenes["ckpt"], s0, s1, "-o", out, "--edge", "12", "-q")
    b = sandwatch("predict", scenes["ckpt"], s1, s0, "-o", out, "--edge", "12", "-q")
    (ca, oa, ea), (cb, ob, eb) = finish(a), finish(b)
    assert (ca, cb) == (0, 0), ea + eb
    said = [ln for ln in (oa + ob).splitlines() if ln.strip()]
    assert len(said) == 4, said
    for name in ("s0", "s1"):
        lines = [ln for ln in said if ln.startswith(f"{name}:")]
        predicted = [ln for ln in lines if "mining polygon" in ln]
        others = [ln for ln in lines if ln not in predicted]
        assert len(predicted) == 1 and len(others) == 1, lines
        assert "(waited for it), skipped" in others[0] or "outputs exist, skipped" in others[0], others[0]
        if "waited for it" in others[0]:
            assert f"{name}.lock: predicting {name} is going on in process" in ea + eb
        assert same_maps(maps(out, name), scenes["ref"][name])
    assert hidden(out) == []


def test_a_live_owner_is_waited_for_and_a_dead_one_taken_over(scenes, tmp_path):
    """The lock of a live process (a sleeper standing in for another run) makes predict wait,
    saying so; when that process dies the lock is stale, predict takes it over and finishes."""
    import threading

    out = tmp_path / "maps"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (out / ".s0.lock").write_text(lock_of(sleeper.pid))
        run = sandwatch("predict", scenes["ckpt"], scenes["scenes"][0], "-o", out, "--edge", "12", "-q")
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(iter(run.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while not any("waiting for it to finish" in ln for ln in err_lines) and time.monotonic() < deadline:
            assert run.poll() is None, "".join(err_lines)
            time.sleep(0.1)
        time.sleep(2)                                # a few polls of the lock: still waiting
        assert run.poll() is None and not (out / "s0.prob.tif").exists()
        assert json.loads((out / ".s0.lock").read_text())["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    said = run.stdout.read()
    assert run.wait(600) == 0, "".join(err_lines)
    reader.join(10)
    err = "".join(err_lines)
    assert "Traceback" not in err
    assert f"predicting s0 is going on in process {sleeper.pid} on host {socket.gethostname()}" in err
    assert f"took over the lock of process {sleeper.pid}" in err and "no longer running" in err
    assert said.startswith("s0: ") and "mining polygon" in said
    assert same_maps(maps(out, "s0"), scenes["ref"]["s0"]) and hidden(out) == []


def test_a_dead_owners_lock_is_taken_over_at_once(scenes, tmp_path, capfd):
    out = tmp_path / "maps"
    out.mkdir()
    pid = dead_pid()
    (out / ".s1.lock").write_text(lock_of(pid))
    assert main(["predict", str(scenes["ckpt"]), str(scenes["scenes"][1]), "-o", str(out), "--edge", "12", "-q"]) == 0
    _, err = capfd.readouterr()
    assert f"took over the lock of process {pid} on host {socket.gethostname()}" in err
    assert same_maps(maps(out, "s1"), scenes["ref"]["s1"]) and hidden(out) == []


def test_a_lock_whose_pid_now_belongs_to_a_younger_process_is_stale(tmp_path):
    """A PID reused after the owner died: the process there started later than the lock says."""
    lock = tmp_path / ".x.lock"
    lock.write_text(lock_of(os.getpid(), start=(process_start(os.getpid()) or 0) - 1000))
    with RunLock(lock, "predicting x") as held:
        assert json.loads(lock.read_text())["token"] == held.info["token"]
    assert not lock.exists()


def test_an_owner_on_another_host_is_refused_in_one_line(scenes, tmp_path, capfd):
    out = tmp_path / "maps"
    out.mkdir()
    (out / ".s0.lock").write_text(lock_of(12345, host="other-node"))
    code = main(["predict", str(scenes["ckpt"]), str(scenes["scenes"][0]), "-o", str(out), "--edge", "12", "-q"])
    _, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {out / '.s0.lock'}: predicting s0 is going on in another run: "
                               "process 12345 on host other-node")
    assert "if it is no longer running, delete this lock file" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [".s0.lock"]      # nothing written, the lock left alone


def test_wait_false_refuses_a_live_owner_in_one_line(scenes, tmp_path):
    from sandwatch.predict import predict_scene

    out = tmp_path / "maps"
    out.mkdir()
    (out / ".s0.lock").write_text(lock_of(os.getppid()))     # pytest's parent: alive
    with pytest.raises(SandwatchError) as err:
        predict_scene(scenes["ckpt"], scenes["scenes"][0], out, edge=12, progress=False, wait=False)
    msg = str(err.value)
    assert f"predicting s0 is going on in another run: process {os.getppid()}" in msg and "\n" not in msg
    assert "or predict into another output folder" in msg


def test_two_runs_on_one_stale_lock_never_both_take_it(tmp_path):
    """Processes racing for the same stale lock: each holds it alone, one after the other."""
    lock = tmp_path / ".x.lock"
    lock.write_text(lock_of(dead_pid()))
    ctx = mp.get_context("spawn")
    log = tmp_path / "log"
    procs = [ctx.Process(target=_hold_lock, args=(str(lock), str(log), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    events = log.read_text().split()
    depth, most = 0, 0
    for e in events:                      # "+i" taken, "-i" given back: never two holders at once
        depth += 1 if e[0] == "+" else -1
        most = max(most, depth)
    assert len(events) == 8 and most == 1 and depth == 0
    assert not lock.exists()


def _hold_lock(lock: str, log: str, i: int) -> None:
    with RunLock(lock, "testing", poll=0.05):
        with open(log, "a") as fh:
            fh.write(f"+{i}\n")
        time.sleep(0.2)
        with open(log, "a") as fh:
            fh.write(f"-{i}\n")


# ---- monitor ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    ckpt = marker_checkpoint(root / "marker.ckpt")
    riv = rivers(root / "rivers.geojson")
    grow = [marked_scene(root / f"grow_{D[i]}.tif", D[i], m, cloud=c, seed=i) for i, (m, c) in enumerate(GROWING)]
    other = [marked_scene(root / f"other_{D[i]}.tif", D[i], m, seed=60 + i) for i, (m, _) in enumerate(GROWING[:4])]
    return {"ckpt": ckpt, "rivers": riv, "grow": grow, "other": other}


def monitor_args(sites, site, scenes, out, *extra):
    return ["monitor", "--checkpoint", sites["ckpt"], "--site", site, "--rivers", sites["rivers"], "--scenes", *scenes,
            "-o", out, "-q", *EDGE, *extra]


def rows(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        return {
            "sites": con.execute("select name from sites order by name").fetchall(),
            "observations": con.execute("select s.name, o.date, o.scene_hash, o.mined_km2 from observations o "
                                        "join sites s on s.id = o.site_id order by 1, 2").fetchall(),
            "detections": con.execute("select count(*) from detections").fetchone()[0],
            "alerts": con.execute("select s.name, a.region, a.kind, a.date, a.area_m2 from alerts a "
                                  "join sites s on s.id = a.site_id order by 1, 4, 2, 3").fetchall(),
        }
    finally:
        con.close()


@pytest.mark.slow
def test_two_monitor_runs_of_one_site_on_a_new_database(sites, tmp_path):
    """Before: both created the new database, the second replaced the first's file under it
    ("not writable (read-only file system)", exit 2), or raced on sites.name (IntegrityError).
    Now the second waits for the first and adds nothing: the history is that of one run."""
    ref = tmp_path / "ref"
    assert main([str(a) for a in monitor_args(sites, "grow", sites["grow"], ref)]) == 0
    out = tmp_path / "mon"
    a = sandwatch(*monitor_args(sites, "grow", sites["grow"], out))
    b = sandwatch(*monitor_args(sites, "grow", list(reversed(sites["grow"])), out))
    (ca, oa, ea), (cb, ob, eb) = finish(a), finish(b)
    assert (ca, cb) == (0, 0), ea + eb
    firsts = sorted(ln.split(";")[0] for ln in (oa + ob).splitlines() if ln.startswith("grow:"))
    assert firsts == ["grow: 0 new date(s), 6 already known, 6 in all (1 gaps)",
                      "grow: 6 new date(s), 0 already known, 6 in all (1 gaps)"], oa + ob
    assert "2 new alert(s)" in oa + ob and "0 new alert(s)" in oa + ob
    got, want = rows(out / "history.sqlite"), rows(ref / "history.sqlite")
    assert got == want and len(got["observations"]) == 6 and len(got["alerts"]) == 2
    assert (out / "alerts.csv").read_text() == (ref / "alerts.csv").read_text()
    assert hidden(out) == [] and not list(out.rglob("*.partial*"))


@pytest.mark.slow
def test_two_monitor_runs_of_two_sites_share_one_new_database(sites, tmp_path):
    db = tmp_path / "shared" / "history.sqlite"
    refs = {}
    for site, key in (("grow", "grow"), ("other", "other")):
        refs[site] = tmp_path / f"ref-{site}"
        assert main([str(a) for a in monitor_args(sites, site, sites[key], refs[site])]) == 0
    a = sandwatch(*monitor_args(sites, "grow", sites["grow"], tmp_path / "grow", "--db", db))
    b = sandwatch(*monitor_args(sites, "other", sites["other"], tmp_path / "other", "--db", db))
    (ca, oa, ea), (cb, ob, eb) = finish(a), finish(b)
    assert (ca, cb) == (0, 0), ea + eb
    assert "grow: 6 new date(s), 0 already known" in oa and "other: 4 new date(s), 0 already known" in ob
    got = rows(db)
    want = {k: [] for k in ("sites", "observations", "alerts")}
    want["detections"] = 0
    for site in ("grow", "other"):
        r = rows(refs[site] / "history.sqlite")
        for k in ("sites", "observations", "alerts"):
            want[k] += r[k]
        want["detections"] += r["detections"]
    assert {k: sorted(v) if isinstance(v, list) else v for k, v in got.items()} == \
        {k: sorted(v) if isinstance(v, list) else v for k, v in want.items()}
    for site in ("grow", "other"):
        assert (tmp_path / site / "alerts.csv").read_text() == (refs[site] / "alerts.csv").read_text()
    assert [p.name for p in db.parent.iterdir()] == ["history.sqlite"]


def _new_history_and_site(db: str, name: str, barrier) -> None:
    from sandwatch.monitor.history import History

    barrier.wait()
    h = History(db)                      # both create the new file at the same moment
    barrier.wait()
    h.add_site(name, crs="EPSG:32645", transform=[10, 0, 0, 0, -10, 0], width=10, height=10,
               window=[0, 0, 10, 10], aoi_wkt="POINT (1 1)", latitude=None, longitude=None)
    h.close()


@pytest.mark.parametrize("same_name", [True, False])
def test_history_created_and_written_by_several_processes_at_once(tmp_path, same_name):
    """The database layer alone (no lock: e.g. runs on two machines): four processes create
    the same new database and add a site at the same moment. No one fails, no site is lost
    or doubled."""
    ctx = mp.get_context("spawn")
    db = tmp_path / "h.sqlite"
    barrier = ctx.Barrier(4)
    names = ["site"] * 4 if same_name else [f"site{i}" for i in range(4)]
    procs = [ctx.Process(target=_new_history_and_site, args=(str(db), n, barrier)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    con = sqlite3.connect(db)
    try:
        assert sorted(r[0] for r in con.execute("select name from sites")) == sorted(set(names))
    finally:
        con.close()
    assert [p.name for p in tmp_path.iterdir()] == ["h.sqlite"]


def test_a_monitor_lock_on_another_host_is_refused_in_one_line(sites, tmp_path, capfd):
    out = tmp_path / "mon"
    out.mkdir()
    (out / ".history.sqlite.grow.lock").write_text(lock_of(4242, host="other-node", what="monitoring site 'grow'"))
    code = main([str(a) for a in monitor_args(sites, "grow", sites["grow"][:2], out)])
    _, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"{out / '.history.sqlite.grow.lock'}: monitoring site 'grow' is going on in another run: " \
           "process 4242 on host other-node" in lines[0]
    assert not (out / "history.sqlite").exists()
