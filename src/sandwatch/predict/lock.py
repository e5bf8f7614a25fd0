"""Lock files: one run at a time on a scene's outputs (``predict``) or a site's history
(``monitor``), with the owner named and dead owners' locks taken over.

A lock is a small JSON file created with ``O_EXCL`` (``pid``, ``host``, the process's start
time, when and by what command it was taken). Another run that finds it:

* owner alive on this host: waits (``wait=True``, polling) and says so once through
  ``on_wait``, or (``wait=False``) is refused with one line naming the owner and the lock;
* owner dead on this host (no such process, or the PID now belongs to a process started
  later): the lock is stale; it is removed and taken (``on_stale`` says so);
* owner on another host: nothing here can tell whether it still runs, so the run is refused
  with one line naming the owner and the lock file to delete if that run is over.

Inspecting and breaking a stale lock happen under an ``flock`` of the lock's folder, so two
runs that find the same stale lock do not both take it (and neither removes a fresh one).
Releasing removes the file only while it is still this run's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sandwatch.errors import SandwatchError
from sandwatch.io import free_bytes, make_dirs, write_error

#: A lock file that stays empty or unreadable this long was left by a run killed while writing it.
UNREADABLE_STALE_SECONDS = 10.0


class RunLockWarning(UserWarning):
    """Another run holds (or held, and died holding) a lock this run needs."""


def _host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux ``/proc``), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    try:   # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def owner_alive(info: dict) -> bool:
    """Whether the process that wrote a lock (on this host) still runs."""
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                  # another user's process: alive
    started = info.get("start")
    now = process_start(pid)
    return not (started is not None and now is not None and int(started) != now)   # PID reused


def describe(info: dict) -> str:
    since = f" since {info['time']}" if info.get("time") else ""
    return f"process {info.get('pid', '?')} on host {info.get('host', '?')}{since}"


class RunLock:
    """``with RunLock(path, "predicting scene NAME"):`` - see the module doc.

    ``what`` says what the owner is doing ("predicting NAME") in messages. ``fix`` is the
    advice when a live owner on this host is refused (``wait=False``). ``target``: the file a failure to write
    the lock names (default the lock itself; e.g. the output or database it protects, since a
    full or read-only disk stops that as well)."""

    def __init__(self, path: str | os.PathLike, what: str, *, wait: bool = True, poll: float = 1.0,
                 on_wait: Callable[[str], None] | None = None, on_stale: Callable[[str], None] | None = None,
                 fix: str | None = None, target: str | os.PathLike | None = None):
        self.path = Path(path)
        self.target = Path(target) if target is not None else self.path
        self.what = what
        self.wait = wait
        self.poll = float(poll)
        self.on_wait = on_wait
        self.on_stale = on_stale
        self.fix = fix
        self.info: dict | None = None        #: what this run wrote, while it holds the lock
        self.waited_for: dict | None = None  #: the owner this run waited for, if any

    # ---- taking and giving back ------------------------------------------------------------
    def acquire(self) -> "RunLock":
        make_dirs(self.path.parent, self.target)
        me = {"pid": os.getpid(), "host": _host(), "start": process_start(os.getpid()),
              "time": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:300], "what": self.what, "token": uuid.uuid4().hex}
        said = False
        while True:
            if self._create(me):
                self.info = me
                return self
            info = self._read()
            if info is None:                       # vanished, being written, or unreadable
                if self._unreadable_for() > UNREADABLE_STALE_SECONDS:
                    self._break(None)
                else:
                    time.sleep(0.05)
                continue
            if info.get("host") != me["host"]:   # whether it still runs cannot be known from here
                raise SandwatchError.about(
                    self.path, f"{self.what} is going on in another run: {describe(info)}",
                    "wait for that run to finish; if it is no longer running, delete this lock file")
            if not owner_alive(info):
                if self._break(info) and self.on_stale is not None:
                    self.on_stale(f"{self.path}: took over the lock of {describe(info)}, which is no longer "
                                  f"running")
                continue
            if not self.wait:
                raise SandwatchError.about(self.path, f"{self.what} is going on in another run: {describe(info)}",
                                           self.fix or "wait for that run to finish, or use another output folder")
            self.waited_for = info
            if not said and self.on_wait is not None:
                self.on_wait(f"{self.path}: {self.what} is going on in {describe(info)}; waiting for it to finish")
                said = True
            time.sleep(self.poll)

    def release(self) -> None:
        if self.info is None:
            return
        with self._folder_locked():
            if (self._read() or {}).get("token") == self.info["token"]:
                with contextlib.suppress(OSError):
                    self.path.unlink()
        self.info = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    # ---- the file ----------------------------------------------------------------------------
    def _create(self, info: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise write_error(self.target, err, free=free_bytes(self.path.parent), generic=True) from None
        try:
            try:
                os.write(fd, (json.dumps(info) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            free = free_bytes(self.path.parent)
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise write_error(self.target, err, free=free, generic=True) from None
        return True

    def _read(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _unreadable_for(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _break(self, info: dict | None) -> bool:
        """Remove the lock if it still is the stale one seen (``info``; None: unreadable)."""
        with self._folder_locked():
            now = self._read()
            same = (now is None and self._unreadable_for() > UNREADABLE_STALE_SECONDS) if info is None \
                else (now is not None and now.get("token") == info.get("token") and now.get("pid") == info.get("pid"))
            if not same:
                return False
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            except OSError as err:
                raise write_error(self.target, err, free=free_bytes(self.path.parent), generic=True) from None
            return True

    @contextlib.contextmanager
    def _folder_locked(self) -> Iterator[None]:
        """An exclusive ``flock`` of the lock's folder (no extra file; released at close)."""
        import fcntl

        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    raise
            yield
        finally:
            os.close(fd)


__all__ = ["RunLock", "RunLockWarning", "owner_alive", "process_start", "describe"]
