"""``flowrt dev``: the whole stack on one machine, for trying flowrt out.

Private PostgreSQL and Redis (unless URLs are given), migrations, the API and
worker processes with their logs interleaved under a prefix, and one short block
telling the developer what to paste. Ctrl-C stops everything in order: the API and
workers drain first, then the servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import IO

from .devservers import DevServerError, PrivatePostgres, PrivateRedis, free_port, port_is_free
from .settings import Settings, child_environ, mask_url
from .store import Database, migrate
from .store.tenants import TenantStore

__all__ = ["run_dev"]

DEV_ROOT = Path(".flowrt") / "dev"
DEV_TENANT = "dev"
_COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m"]
_RESET = "\033[0m"


def _say(message: str) -> None:
    print(f"flowrt dev: {message}", file=sys.stderr, flush=True)


class _Child:
    """One process whose output is copied line by line under a prefix."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], color: str | None) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        prefix = f"{name:<8}| "
        self._prefix = f"{color}{prefix}{_RESET}" if color else prefix
        self._pump = threading.Thread(target=self._copy, args=(self.proc.stdout,), daemon=True)
        self._pump.start()

    def _copy(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            sys.stdout.write(f"{self._prefix}{line}\n")
            sys.stdout.flush()

    def stop(self, timeout: float) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._pump.join(2)
        return self.proc.returncode


def _wait_http(url: str, child: _Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise DevServerError(f"{child.name} exited with status {child.proc.returncode}"
                                 " at start (its output is above)")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise DevServerError(f"{child.name} did not answer on {url} within {timeout:.0f}s")


def run_dev(settings: Settings, *, workers: int, app_target: str, reset: bool,
            database_given: bool, redis_given: bool, data_dir: Path = DEV_ROOT) -> int:
    """Run the stack until Ctrl-C (or SIGTERM); return the exit status."""
    tty = sys.stdout.isatty()
    # Worker i serves metrics on FLOWRT_METRICS_PORT + i (free ports when it is 0).
    metrics = ([settings.metrics_port + i for i in range(workers)] if settings.metrics_port
               else [free_port() for _ in range(workers)])
    ports = [settings.port, *metrics]
    for port in ports:
        if not port_is_free(port, settings.host):
            raise DevServerError(
                f"port {port} on {settings.host} is taken (another flowrt dev?); stop it or pick"
                " other ports with --port / FLOWRT_PORT and FLOWRT_METRICS_PORT")
    pg = None if database_given else PrivatePostgres(data_dir)
    rd = None if redis_given else PrivateRedis(data_dir / "redis")
    if reset:
        _say(f"--reset: wiping {data_dir}/")
        if pg is not None:
            pg.reset()
        shutil.rmtree(data_dir, ignore_errors=True)
    children: list[_Child] = []
    stopping = threading.Event()
    running = threading.Event()  # set once everything is up

    def on_signal(_sig: int, _frame: object) -> None:
        stopping.set()
        if not running.is_set():
            raise KeyboardInterrupt  # during start-up: unwind now; finally cleans up

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if pg is not None:
            _say(f"starting PostgreSQL ({pg.source}) with data in {pg.data_dir} ...")
            pg.start()
            settings = replace(settings, database_url=pg.url)
        if rd is not None:
            _say(f"starting Redis ({rd.source}) ...")
            rd.start()
            settings = replace(settings, redis_url=rd.url)
        applied = asyncio.run(migrate(settings.database_url, timeout=settings.db_timeout,
                                      progress=lambda m: _say(m)))
        _say(f"migrations: {len(applied)} applied" if applied else "database is up to date")
        key = asyncio.run(_dev_key(settings))
        env = child_environ(settings, FLOWRT_LOG_FORMAT="console" if tty else "json",
                            PYTHONUNBUFFERED="1")
        bindir = Path(sys.executable).parent
        children.append(_Child("api", [str(bindir / "flowrt"), "api"], env,
                               _COLORS[0] if tty else None))
        for i in range(workers):
            wenv = {**env, "FLOWRT_METRICS_PORT": str(metrics[i])}
            children.append(_Child(f"worker{i + 1}", [str(bindir / "flowrt-worker"), "--app",
                                                      app_target], wenv,
                                   _COLORS[(i + 1) % len(_COLORS)] if tty else None))
        api = f"http://{settings.host}:{settings.port}"
        _wait_http(f"{api}/readyz", children[0])
        for i, child in enumerate(children[1:]):
            _wait_http(f"http://{settings.host}:{metrics[i]}/metrics", child)
        _banner(settings, api, metrics, pg, rd, data_dir, key)
        running.set()
        while not stopping.is_set():
            dead = next((c for c in children if c.proc.poll() is not None), None)
            if dead is not None:
                _say(f"{dead.name} exited with status {dead.proc.returncode}; stopping")
                return 1
            stopping.wait(0.5)
        _say("stopping: draining the API and workers ...")
        return 0
    finally:
        for child in children:
            child.stop(settings.shutdown_grace + 5)
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if children:
            _say("stopped")


async def _dev_key(s: Settings) -> str:
    """A fresh admin key of the ``dev`` tenant (made each run: a key is shown only once)."""
    async with Database(s.database_url, timeout=s.db_timeout) as db:
        store = TenantStore(db)
        await store.create_tenant(DEV_TENANT)
        return (await store.create_key(DEV_TENANT, "admin")).key


def _banner(s: Settings, api: str, metrics_ports: list[int], pg: PrivatePostgres | None,
            rd: PrivateRedis | None, data_dir: Path, key: str) -> None:
    workers = len(metrics_ports)
    metrics = ", ".join(f"http://{s.host}:{port}/metrics" for port in metrics_ports)
    lines = [
        "",
        f"  flowrt is running: API {api}  ({workers} workers, demo workflow 'order')",
        f"  metrics:  {api}/metrics, {metrics}",
        f"  postgres: {mask_url(s.database_url)}" + ("  (private)" if pg else ""),
        f"  redis:    {mask_url(s.redis_url)}" + ("  (private)" if rd else ""),
        "",
        f"  api key (tenant '{DEV_TENANT}', admin; shown once, a new one each run):",
        f"    export FLOWRT_KEY={key}",
        "",
        "  try it:",
        f"    curl -s -X POST {api}/v1/executions -H \"Authorization: Bearer $FLOWRT_KEY\" \\",
        "         -H 'content-type: application/json' \\",
        "         -d '{\"workflow\": \"order\", \"input\": {\"sku\": \"A-1\"},"
        " \"execution_id\": \"o-1\"}'",
        f"    curl -s -X POST {api}/v1/executions/o-1/events"
        " -H \"Authorization: Bearer $FLOWRT_KEY\" \\",
        "         -H 'content-type: application/json' \\",
        "         -d '{\"name\": \"approve\", \"payload\": {\"amount\": 50}}'",
        f"    curl -s {api}/v1/executions/o-1 -H \"Authorization: Bearer $FLOWRT_KEY\"",
        f"    FLOWRT_DATABASE_URL={mask_url(s.database_url)} .venv/bin/flowrt replay o-1"
        f" --tenant {DEV_TENANT}",
        "",
        f"  Ctrl-C stops everything; data is kept in {data_dir}/ (flowrt dev --reset wipes it).",
        "",
    ]
    print("\n".join(lines), flush=True)
