"""Real servers for the alert tests, all on 127.0.0.1: an SMTP server (aiosmtpd) that parses
what it accepts, and an HTTP receiver that checks webhook signatures; plus a monitored site."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandwatch.cli.main import main
from test_monitor_cli import D, GROWING, marked_scene, marker_checkpoint, rivers

SECRET = "s3cret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SMTPServer:
    """aiosmtpd on 127.0.0.1: ``messages`` holds (envelope recipients, parsed message) of
    every message it accepted (answered 250)."""

    def __init__(self, port: int | None = None, **smtp_options):
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.port = port or free_port()
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):
                msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
                server.messages.append((list(envelope.rcpt_tos), msg))
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **smtp_options)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    def ids(self) -> list[str]:
        return [m["X-Sandwatch-Delivery"] for _, m in self.messages]


class HookReceiver:
    """An HTTP server on 127.0.0.1 receiving webhooks. ``accepted``: (delivery id, JSON) of
    each POST whose signature verified, answered 200. ``fail_first``: answer 503 that many
    times first. ``kill_pid_on``: on the first POST of that delivery id, SIGKILL that process
    and answer nothing (the sender dies mid-request: not accepted)."""

    def __init__(self, secret: str = SECRET):
        self.secret = secret.encode()
        self.accepted: list[tuple[str, dict]] = []
        self.bad_signatures = 0
        self.fail_first = 0
        self.fail_status = 503
        self.kill: tuple[int, str] | None = None
        self.killed: list[str] = []
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sig = self.headers.get("X-Sandwatch-Signature", "")
                delivery = self.headers.get("X-Sandwatch-Delivery", "")
                if recv.kill is not None and recv.kill[1] in ("any", delivery):
                    pid, _ = recv.kill
                    recv.kill = None
                    recv.killed.append(delivery)
                    os.kill(pid, signal.SIGKILL)
                    return
                if recv.fail_first > 0:
                    recv.fail_first -= 1
                    self.send_response(recv.fail_status)
                    self.end_headers()
                    return
                good = "sha256=" + hmac.new(recv.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(sig, good):
                    recv.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                recv.accepted.append((delivery, json.loads(body)))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[str]:
        return [d for d, _ in self.accepted]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """One monitor run of the growing site of ``test_monitor_cli`` (6 dates, D4 cloudy):
    two alert events (provisional on D1, confirmed on D3)."""
    root = tmp_path_factory.mktemp("alerts")
    ckpt = marker_checkpoint(root / "marker.ckpt")
    riv = rivers(root / "rivers.geojson")
    scenes = [marked_scene(root / f"grow_{D[i]}.tif", D[i], m, cloud=c, seed=i) for i, (m, c) in enumerate(GROWING)]
    out = root / "mon"
    args = ["monitor", "--checkpoint", str(ckpt), "--site", "grow", "--rivers", str(riv), "--scenes",
            *map(str, scenes), "-o", str(out), "-q", "--edge", "8"]
    assert main(args) == 0
    return {"root": root, "out": out, "args": args, "scenes": scenes, "ckpt": ckpt, "rivers": riv}
