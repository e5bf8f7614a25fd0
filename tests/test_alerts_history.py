"""The history through SQLAlchemy on SQLite and PostgreSQL (a real server started by the
fixture): the same monitor + alerts runs on both, and two monitor runs at once on one
database (with delivery to a real SMTP server) leave a consistent history and send each
message once."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from sqlalchemy import create_engine, text

from alerts_fixtures import HookReceiver, SMTPServer, grown  # noqa: F401 - grown: fixture
from pgserver import history_db, pg_server  # noqa: F401 - fixtures
from sandwatch.cli.main import main
from sandwatch.monitor.history import database_url
from test_monitor_cli import D

TABLES = ("sites", "observations", "detections", "alerts", "alert_events", "outbox")


def counts(db) -> dict[str, int]:
    engine = create_engine(database_url(db))
    try:
        with engine.connect() as conn:
            out = {t: conn.execute(text(f"select count(*) from {t}")).scalar() for t in TABLES}
            out["dup_detections"] = conn.execute(text(
                "select count(*) from (select observation_id, polygon from detections "
                "group by observation_id, polygon having count(*) > 1) d")).scalar()
            out["polygons_vs_detections"] = conn.execute(text(
                "select count(*) from observations o where coalesce(o.n_polygons, 0) != "
                "(select count(*) from detections d where d.observation_id = o.id) and o.gap = false")).scalar()
            out["events"] = [(r[0], str(r[1]), str(r[2]), r[3]) for r in conn.execute(text(
                "select status, date, first_date, area_m2 from alert_events order by id"))]
        return out
    finally:
        engine.dispose()


def monitor_args(grown, out, db, *extra):
    return ["monitor", "--checkpoint", str(grown["ckpt"]), "--site", "grow", "--rivers", str(grown["rivers"]),
            "--scenes", *map(str, grown["scenes"]), "-o", str(out), "-q", "--edge", "8", "--db", str(db), *extra]


EVENTS = [("provisional", str(D[1]), str(D[1]), 14400.0), ("confirmed", str(D[3]), str(D[1]), 28800.0)]


def test_monitor_and_alerts_on_each_back_end(grown, history_db, tmp_path, capsys):
    assert main(monitor_args(grown, tmp_path / "a", history_db)) == 0
    first = counts(history_db)
    assert (first["sites"], first["observations"], first["alerts"], first["alert_events"]) == (1, 6, 2, 2)
    assert first["events"] == EVENTS and first["dup_detections"] == 0 and first["polygons_vs_detections"] == 0
    capsys.readouterr()
    assert main(monitor_args(grown, tmp_path / "a", history_db)) == 0       # nothing twice
    assert "0 new date(s), 6 already known" in capsys.readouterr().out
    assert counts(history_db) == first
    assert (tmp_path / "a" / "alerts" / f"{D[5]}.status.tif").is_file()
    assert main(["monitor", "report", str(history_db)]) == 0
    assert "grow" in capsys.readouterr().out


def test_two_monitor_runs_at_once_keep_one_consistent_history(grown, history_db, tmp_path):
    """Two processes monitor the same site into two folders on one database and deliver its
    alerts to the same subscribers, at the same time."""
    with SMTPServer() as smtp, HookReceiver() as hook:
        subs = tmp_path / "subs.yaml"
        subs.write_text(yaml.safe_dump({
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "sandwatch@example.org"},
            "webhook": {"backoff_seconds": 0.1},
            "subscribers": [{"name": "office", "emails": ["office@example.org"], "min_status": "provisional",
                             "webhooks": [{"url": hook.url, "secret": "s3cret-key"}]}]}))
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "sandwatch",
                                   *monitor_args(grown, tmp_path / f"run{i}", history_db, "--subscribers", str(subs))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
        c = counts(history_db)
        assert (c["sites"], c["observations"], c["alerts"], c["alert_events"], c["outbox"]) == (1, 6, 2, 2, 4)
        assert c["events"] == EVENTS and c["dup_detections"] == 0 and c["polygons_vs_detections"] == 0
        ids = smtp.ids() + hook.ids()
        assert len(ids) == len(set(ids)) == 4                     # 2 events x (e-mail + webhook), each once
        # each date and each event was added by exactly one of the runs (on PostgreSQL they interleave)
        import re

        said = "".join(o[0] for o in outs)
        assert sum(map(int, re.findall(r"^grow: (\d+) new date\(s\)", said, re.M))) == 6, said
        assert sum(map(int, re.findall(r"^alerts of grow: (\d+) new event\(s\)", said, re.M))) == 2, said
