"""Real servers on 127.0.0.1 for the acquisition tests and benchmark.

* :class:`Postgres` + :class:`StacApi`: a PostgreSQL cluster (Debian's packages, PostGIS) in a
  temporary folder, migrated with pypgstac, and stac-fastapi-pgstac served by uvicorn;
* :class:`Nginx`: a static server with Range support over a folder; its access log counts the
  bytes sent, and ``/fail500/`` answers 500, ``/stall/`` trickles 1 byte a second;
* :class:`FaultProxy`: a TCP proxy in front of nginx that drops the connection in the middle of
  a response (the first ``faults`` connections, or all of them).

Each ``start`` raises :class:`Unavailable` (the test skips with that reason) only when the
programs are not installed; every other failure is an error.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


class Unavailable(RuntimeError):
    """A server's programs are not installed here (the tests that need it skip)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- PostgreSQL + PostGIS + pgstac ---------------------------------------------------------------
def postgres_bin() -> Path:
    """The bin folder of a PostgreSQL whose share folder has PostGIS."""
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        version = Path(initdb).parts[-3]
        if glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"):
            return Path(initdb).parent
    raise Unavailable("PostgreSQL with PostGIS is not installed (apt-get install postgresql postgresql-postgis)")


class Postgres:
    """A throw-away cluster on 127.0.0.1 (trust auth, fsync off). As root it runs as the
    ``postgres`` user, which PostgreSQL requires."""

    def __init__(self):
        self.bin = postgres_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sandwatch-pg-"))
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user to run PostgreSQL") from None
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> "Postgres":
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-w", "-t", "60", "-l", str(self.dir / "log"), "start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class StacApi:
    """stac-fastapi-pgstac over a migrated pgstac database, loaded with ``collections`` and
    ``items`` (dicts), on ``self.url``."""

    def __init__(self, postgres: Postgres):
        self.pg = postgres
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = postgres.dir.parent / f"sandwatch-stac-{self.port}.log"

    def load(self, collections: list[dict], items: list[dict]) -> None:
        try:
            from pypgstac.db import PgstacDB
            from pypgstac.load import Loader, Methods
            from pypgstac.migrate import Migrate
        except ImportError:
            raise Unavailable("pypgstac is not installed (pip install 'pypgstac[psycopg]')") from None
        with PgstacDB(dsn=self.pg.dsn) as db:
            Migrate(db).run_migration()
            loader = Loader(db)
            loader.load_collections(iter(collections), insert_mode=Methods.upsert)
            loader.load_items(iter(items), insert_mode=Methods.upsert)

    def start(self) -> "StacApi":
        try:
            import stac_fastapi.pgstac  # noqa: F401
        except ImportError:
            raise Unavailable("stac-fastapi-pgstac is not installed (pip install stac-fastapi.pgstac)") from None
        env = {**os.environ, "PGUSER": "postgres", "PGPASSWORD": "unused", "PGHOST": "127.0.0.1",
               "PGPORT": str(self.pg.port), "PGDATABASE": "postgres", "STAC_FASTAPI_TITLE": "sandwatch test",
               "STAC_FASTAPI_DESCRIPTION": "test catalogue", "STAC_FASTAPI_LANDING_ID": "sandwatch-test",
               "STAC_FASTAPI_VERSION": "0"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.pg.dir.parent)
        _wait_http(self.url + "/", self.proc, self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        with contextlib.suppress(OSError):
            self.log.unlink()


# ---- nginx ---------------------------------------------------------------------------------------
NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    log_format bytes '$request_method $request_uri $status $bytes_sent $msec $request_time "$http_range"';
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    sendfile on; keepalive_timeout 30;
    # GDAL learns a file's size from a GET without Range that it aborts after the headers; on
    # loopback the kernel would take megabytes of that response before the abort arrives, so
    # such GETs are throttled after 16 KiB: the log then counts what a client really receives.
    map $http_range $probe_rate {{ "" 4k; default 0; }}
    server {{
        listen 127.0.0.1:{port} sndbuf=64k;
        access_log {dir}/access.log bytes;
        root {root};
        limit_rate_after 16k;
        limit_rate $probe_rate;
        location / {{ }}
        location /fail500/ {{ return 500; }}
        location /stall/ {{ rewrite ^/stall/(.*)$ /$1 break; limit_rate_after 0; limit_rate 1; }}
    }}
}}
"""


class Nginx:
    """nginx serving ``root`` on 127.0.0.1 with Range support; :meth:`bytes_sent` from its log."""

    def __init__(self, root: Path):
        exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if exe is None:
            raise Unavailable("nginx is not installed (apt-get install nginx-light)")
        self.exe, self.root = exe, Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="sandwatch-nginx-"))
        self.since = 0.0                 # log_lines: requests started since (see clear_log)
        (self.dir / "tmp").mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, root=self.root.resolve(), user=user))
        log = self.dir / "error.log"
        self.proc = subprocess.Popen([self.exe, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (self.root / ".ping").write_text("ok")
        _wait_http(self.url + "/.ping", self.proc, log)
        return self

    def log_lines(self) -> list[tuple[str, str, int, int, str]]:
        """(method, uri, status, bytes sent, range) of every request started since the last
        :meth:`clear_log` (nginx logs a request when it ends: one an earlier test left running
        may end, and be logged, long after)."""
        path = self.dir / "access.log"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            method, uri, status, sent, end, took, rng = line.split(" ", 6)
            if float(end) - float(took) < self.since - 0.05:
                continue
            out.append((method, uri, int(status), int(sent), rng.strip('"')))
        return out

    def bytes_sent(self, prefix: str = "/") -> int:
        return sum(sent for _, uri, _, sent, _ in self.log_lines() if uri.startswith(prefix))

    def clear_log(self) -> None:
        """Start counting afresh (nginx keeps appending to the same open file)."""
        self.since = time.time()
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.dir / "access.log", 0)

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- a proxy that drops connections mid-response -------------------------------------------------
class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; the first ``faults`` connections (None: all)
    are closed after ``after`` bytes of the response: a connection dropped in the middle of a file.
    ``delay_s`` holds every request that long (a network's round trip, for the benchmark)."""

    def __init__(self, upstream_port: int, *, faults: int | None = None, after: int = 2000, delay_s: float = 0.0):
        self.upstream, self.faults, self.after, self.delay_s = upstream_port, faults, after, delay_s
        self.dropped = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                drop = self.faults is None or self.dropped < self.faults
                self.dropped += drop
            threading.Thread(target=self._serve, args=(client, drop), daemon=True).start()

    def _serve(self, client: socket.socket, drop: bool) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return

        def pump_request():
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    upstream.sendall(data)

        threading.Thread(target=pump_request, daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if drop and sent + len(data) >= self.after:
                    client.sendall(data[: max(0, self.after - sent)])
                    break
                client.sendall(data)
                sent += len(data)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

