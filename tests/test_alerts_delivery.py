"""Delivery through the outbox to a real SMTP server and a real webhook receiver (127.0.0.1):
messages parsed and checked, signatures verified, retries, SMTP down, kill -9 then rerun,
dry run, feeds, bad subscriber files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import yaml

from alerts_fixtures import SECRET, HookReceiver, SMTPServer, free_port, grown  # noqa: F401 - grown: fixture
from sandwatch.alerts.deliver import deliver
from sandwatch.alerts.subscribers import load_subscribers
from sandwatch.cli.main import main
from test_monitor_cli import D


def subs_file(path, smtp_port, hook_url, feed=None):
    data = {"smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "sandwatch@example.org",
                     "timeout_seconds": 5},
            "webhook": {"attempts": 3, "backoff_seconds": 0.5, "timeout_seconds": 5},
            "subscribers": [
                {"name": "collector", "emails": ["collector@example.org"],
                 "webhooks": [{"url": hook_url, "secret": SECRET}], "min_status": "provisional",
                 **({"feed": str(feed)} if feed else {})},
                {"name": "ngo", "emails": ["ngo@example.org"], "min_status": "confirmed", "min_area_ha": 0.2,
                 "sites": ["grow"]},
                {"name": "elsewhere", "emails": ["far@example.org"], "area": [10.0, 10.0, 11.0, 11.0]},
            ]}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def db(grown, tmp_path):
    """A fresh copy of the monitored site's history (empty outbox)."""
    path = tmp_path / "history.sqlite"
    shutil.copy(grown["out"] / "history.sqlite", path)
    return path


def outbox(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("select subscriber, channel, target, status, attempts from outbox order by id").fetchall()
    finally:
        con.close()


EXPECTED = {("collector@example.org", "provisional"), ("collector@example.org", "confirmed"),
            ("ngo@example.org", "confirmed")}


def test_email_and_webhook_delivered_once_with_png_and_valid_signature(db, tmp_path, capsys):
    with SMTPServer() as smtp, HookReceiver() as hook:
        subs = subs_file(tmp_path / "subs.yaml", smtp.port, hook.url, feed=tmp_path / "feeds")
        assert main(["alerts", "deliver", str(db), "--subscribers", str(subs), "-o", str(tmp_path / "out")]) == 0
        assert "delivery: 5 sent, 5 newly recorded, 0 waiting" in capsys.readouterr().out
        got = {(rcpt[0], m["Subject"].split()[1]) for rcpt, m in smtp.messages}
        assert got == EXPECTED and len(smtp.messages) == 3
        rcpt, msg = next((r, m) for r, m in smtp.messages if "confirmed" in m["Subject"] and r == ["ngo@example.org"])
        assert msg["To"] == "ngo@example.org" and msg["From"] == "sandwatch@example.org"
        assert msg["Subject"].startswith("[sandwatch] confirmed sand-mining alert: grow region 1, 2.88 ha")
        assert f"first detected {D[1]}" in msg["Subject"]
        body = msg.get_body(("plain",)).get_content()
        assert f"Status: confirmed on {D[3]}" in body and "Area: 2.88 ha (1.44 ha confirmed)" in body
        png = [p for p in msg.iter_attachments() if p.get_content_type() == "image/png"]
        assert len(png) == 1
        data = png[0].get_content()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        import io

        import matplotlib.image

        img = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert img.shape[0] >= 300 and img.shape[1] >= 900               # three panels side by side
        # webhooks: both events to the collector, signatures verified by the receiver
        assert hook.bad_signatures == 0 and len(hook.accepted) == 2
        statuses = sorted(doc["event"]["properties"]["status"] for _, doc in hook.accepted)
        assert statuses == ["confirmed", "provisional"]
        doc = hook.accepted[0][1]
        assert doc["id"] == hook.accepted[0][0] and doc["site"] == "grow" and doc["subscriber"] == "collector"
        assert doc["event"]["geometry"]["type"] == "Polygon"
        # nothing goes twice: a second run sends nothing
        assert main(["alerts", "deliver", str(db), "--subscribers", str(subs), "-o", str(tmp_path / "out")]) == 0
        assert "delivery: 0 sent, 0 newly recorded" in capsys.readouterr().out
        assert len(smtp.messages) == 3 and len(hook.accepted) == 2
    assert all(row[3] == "sent" and row[4] == 1 for row in outbox(db))
    # feeds of the collector: both events, GeoJSON + CSV
    feed = json.loads((tmp_path / "feeds" / "collector.geojson").read_text())
    assert [f["properties"]["status"] for f in feed["features"]] == ["provisional", "confirmed"]
    with open(tmp_path / "feeds" / "collector.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], r["first_date"], r["area_ha"]) for r in rows] == [
        ("provisional", str(D[1]), "1.44"), ("confirmed", str(D[1]), "2.88")]


def test_smtp_down_keeps_mail_in_the_outbox_until_the_next_run(db, tmp_path):
    port = free_port()                                   # nothing listens there yet
    with HookReceiver() as hook:
        subs = load_subscribers(subs_file(tmp_path / "subs.yaml", port, hook.url))
        rep = deliver(db, subs, tmp_path / "out")
        assert len(rep.sent) == 2 and len(rep.failed) == 3     # the webhooks went, the e-mails wait
        assert {r[1:4] for r in outbox(db) if r[1] == "email"} == {
            ("email", "collector@example.org", "pending"), ("email", "ngo@example.org", "pending")}
        with SMTPServer(port) as smtp:
            rep = deliver(db, subs, tmp_path / "out")
            assert len(rep.sent) == 3 and not rep.failed
            assert {(r[0], m["Subject"].split()[1]) for r, m in smtp.messages} == EXPECTED
        assert len(hook.accepted) == 2
    assert all(r[3] == "sent" for r in outbox(db))


def test_webhook_retries_with_back_off(db, tmp_path):
    with SMTPServer() as smtp, HookReceiver() as hook:
        hook.fail_first = 2                              # 503, 503, then 200
        waits = []
        subs = load_subscribers(subs_file(tmp_path / "subs.yaml", smtp.port, hook.url))
        rep = deliver(db, subs, tmp_path / "out", sleep=waits.append)
        assert len(rep.sent) == 5 and waits == [0.5, 1.0]
        assert len(hook.accepted) == 2
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from outbox where status = 'sent'").fetchone()[0] == 5
    con.close()


def test_a_refused_webhook_is_not_retried_and_waits_in_the_outbox(db, tmp_path):
    with SMTPServer() as smtp, HookReceiver() as hook:
        hook.fail_first, hook.fail_status = 1, 404
        waits = []
        subs = load_subscribers(subs_file(tmp_path / "subs.yaml", smtp.port, hook.url))
        rep = deliver(db, subs, tmp_path / "out", sleep=waits.append)
        assert waits == [] and len(rep.sent) == 4 and len(rep.failed) == 1
        assert "HTTP 404" in rep.failed[0][1] and "not retried" in rep.failed[0][1]
        con = sqlite3.connect(db)
        assert con.execute("select status, attempts, last_error like '%HTTP 404%' from outbox "
                           "where channel = 'webhook' and status != 'sent'").fetchall() == [("pending", 1, 1)]
        con.close()
        rep = deliver(db, subs, tmp_path / "out", sleep=waits.append)    # the receiver is fixed: it goes now
        assert len(rep.sent) == 1 and len(hook.accepted) == 2 and len(smtp.messages) == 3


def test_a_missing_webhook_secret_stops_before_anything_is_recorded(db, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    path = tmp_path / "subs.yaml"
    path.write_text(yaml.safe_dump({"subscribers": [
        {"name": "x", "webhooks": [{"url": "http://127.0.0.1:9/h", "secret_env": "NO_SUCH_SECRET"}]}]}))
    assert main(["alerts", "deliver", str(db), "--subscribers", str(path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$NO_SUCH_SECRET: is not set (the secret of webhook http://127.0.0.1:9/h)" in err
    assert outbox(db) == []


KILL_SCRIPT = """
import os, signal, sys
from sandwatch.alerts.deliver import deliver
from sandwatch.alerts.subscribers import load_subscribers
n = int(sys.argv[4])
def stop(message):
    if n and len(sent) + 1 >= n:
        os.kill(os.getpid(), signal.SIGKILL)
    sent.append(message)
sent = []
deliver(sys.argv[1], load_subscribers(sys.argv[2]), sys.argv[3], on_sent=stop)
"""


@pytest.mark.parametrize("how", ["between-messages", "inside-a-webhook-post"])
def test_kill_9_during_delivery_then_rerun_sends_each_message_exactly_once(db, tmp_path, how):
    script = tmp_path / "deliver.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with SMTPServer() as smtp, HookReceiver() as hook:
        subs = subs_file(tmp_path / "subs.yaml", smtp.port, hook.url)
        args = [sys.executable, str(script), str(db), str(subs), str(tmp_path / "out")]
        if how == "between-messages":
            proc = subprocess.run(args + ["3"], capture_output=True, text=True, timeout=120, env=env)
        else:
            proc = subprocess.Popen(args + ["0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            hook.kill = (proc.pid, "any")                # the receiver kills the sender on the first POST
            proc.wait(timeout=120)
        assert proc.returncode == -9
        before = outbox(db)
        assert len(before) == 5 and any(r[3] != "sent" for r in before)
        if how == "inside-a-webhook-post":
            assert [r[3] for r in before if r[1] == "webhook"].count("sending") == 1   # claimed, never acknowledged
        assert subprocess.run(args + ["0"], capture_output=True, text=True, timeout=120, env=env).returncode == 0
        ids = smtp.ids() + hook.ids()
        assert len(ids) == len(set(ids)) == 5                             # each message exactly once
        assert {(r[0], m["Subject"].split()[1]) for r, m in smtp.messages} == EXPECTED
        if how == "inside-a-webhook-post":
            assert hook.killed[0] in hook.ids()                            # the interrupted one went on the rerun
    assert all(r[3] == "sent" for r in outbox(db))


def test_dry_run_prints_and_changes_nothing(db, grown, tmp_path, capsys):
    subs = subs_file(tmp_path / "subs.yaml", free_port(), "http://127.0.0.1:9/hook", feed=tmp_path / "feeds")
    assert main(["alerts", "deliver", str(db), "--subscribers", str(subs), "-o", str(tmp_path / "out"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would e-mail ") == 3 and out.count("would POST to ") == 2
    assert "would e-mail ngo@example.org (ngo): grow confirmed" in out
    assert "dry run: 5 message(s) would be sent; nothing recorded or sent" in out
    assert outbox(db) == [] and not (tmp_path / "out").exists() and not (tmp_path / "feeds").exists()
    # the same through the monitor command (its own history)
    assert main([*grown["args"], "--subscribers", str(subs), "--dry-run"]) == 0
    assert "dry run: 5 message(s) would be sent" in capsys.readouterr().out
    assert outbox(grown["out"] / "history.sqlite") == []


@pytest.mark.parametrize("entry, message", [
    ({"emails": ["not-an-address"]}, "subscribers.0.emails: 'not-an-address' is not an e-mail address"),
    ({"webhooks": [{"url": "ftp://x.org/h", "secret": "k"}]}, "subscribers.0.webhooks.0.url: 'ftp://x.org/h' is not an http(s) URL"),
    ({"webhooks": [{"url": "https://x.org/h"}]}, "give exactly one of secret or secret_env"),
    ({"emails": ["a@b.org"], "min_status": "maybe"}, "subscribers.0.min_status: Input should be 'provisional' or 'confirmed'"),
])
def test_a_bad_subscribers_file_is_one_line(db, tmp_path, capsys, entry, message):
    path = tmp_path / "subs.yaml"
    path.write_text(yaml.safe_dump({"smtp": {"host": "127.0.0.1", "sender": "s@example.org"},
                                    "subscribers": [{"name": "x", **entry}]}))
    assert main(["alerts", "deliver", str(db), "--subscribers", str(path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err, err
    assert outbox(db) == []


def test_an_unwritable_feed_folder_stops_before_anything_is_recorded(db, tmp_path, capsys):
    blocker = tmp_path / "feeds"
    blocker.write_text("a file where the feed folder should be")
    subs = subs_file(tmp_path / "subs.yaml", free_port(), "http://127.0.0.1:9/hook", feed=blocker)
    assert main(["alerts", "deliver", str(db), "--subscribers", str(subs), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err
    assert outbox(db) == [] and blocker.read_text().startswith("a file")


def self_signed(folder):
    """A certificate for 127.0.0.1 (openssl), its key and an SSL context serving it."""
    import shutil as sh
    import ssl

    if sh.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make the test server's certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


def test_starttls_and_login(db, tmp_path, monkeypatch):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, ctx = self_signed(tmp_path)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        text = [x.decode() if isinstance(x, bytes) else x for x in (auth_data.login, auth_data.password)] \
            if isinstance(auth_data, LoginPassword) else None
        ok = text == ["alerts", "pw"]
        logins.append((mechanism, ok, session.ssl is not None))
        return AuthResult(success=ok, handled=False)

    with SMTPServer(tls_context=ctx, require_starttls=True, auth_required=True, authenticator=authenticator) as smtp:
        path = tmp_path / "subs.yaml"
        conf = {"smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "s@example.org", "starttls": True,
                         "username": "alerts", "password_env": "TEST_SMTP_PW", "ca_file": "cert.pem"},
                "subscribers": [{"name": "o", "emails": ["o@example.org"], "min_status": "provisional"}]}
        path.write_text(yaml.safe_dump(conf))
        monkeypatch.setenv("TEST_SMTP_PW", "wrong")
        rep = deliver(db, load_subscribers(path), tmp_path / "out")
        assert not rep.sent and len(rep.failed) == 2 and "535" in rep.failed[0][1]   # refused login: both wait
        assert [r[3] for r in outbox(db)] == ["pending", "pending"] and smtp.messages == []
        monkeypatch.setenv("TEST_SMTP_PW", "pw")
        rep = deliver(db, load_subscribers(path), tmp_path / "out")
        assert len(rep.sent) == 2 and len(smtp.messages) == 2
        assert logins[-1][1:] == (True, True)                  # logged in, over TLS
