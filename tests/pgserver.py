"""A throw-away PostgreSQL server for tests: ``initdb`` of a cluster in a temporary folder,
started on a free port bound to 127.0.0.1 (its unix socket in that folder too), trust
authentication for the user ``sandwatch``, stopped and removed at the end.

The binaries come from PATH or Debian's ``/usr/lib/postgresql/*/bin`` (``apt-get install
postgresql``; ``.ci/run`` does it). ``initdb`` refuses to run as root: as root the cluster
is made and run by the ``postgres`` user (``runuser -u postgres``), in a folder it owns.
When PostgreSQL cannot start, :func:`start_or_skip` skips the test with the reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "sandwatch"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sandwatch-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        self._names = itertools.count()
        self.started = False

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{Path(args[0]).name} failed: {tail[0]}")

    def start(self) -> "PgServer":
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError("initdb/pg_ctl not found (apt-get install postgresql)")
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to run initdb") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
        self._run(self.initdb, "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "-t", "60",
                  "start")
        self.started = True
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"history_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            try:
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL (session), or a skip naming why it could not start."""
    server = PgServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        server.stop()
        pytest.skip(f"PostgreSQL could not start: {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request, tmp_path):
    """The history database of a test, on each back-end: an SQLite path, or a new PostgreSQL
    database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "db" / "history.sqlite")
    return request.getfixturevalue("pg_server").new_database()
