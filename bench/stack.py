"""flowrt as a user runs it: ``flowrt api`` and ``flowrt-worker`` processes on a fresh
database and Redis key prefix, started, waited for, measured and stopped by pid.

Every section gets its own database, copied from a template that ``flowrt migrate``
prepared once (with the benchmark's workflows registered and a writer key of tenant
``default``, ``Servers.key``, that the load generator sends), so no section sees
another's events.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from flowrt.devservers import free_port
from flowrt.settings import Settings, child_environ

from .procinfo import cpu_seconds, peak_rss_mib, tree_cpu_seconds
from .servers import DurablePostgres, PrivateRedis

__all__ = ["Servers", "Stack"]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "bench_template"
APP = "bench.app:app"


class Servers:
    """The private PostgreSQL and Redis, and where the processes' logs go."""

    def __init__(self, pg: DurablePostgres, redis: PrivateRedis, logs: Path,
                 overrides: dict[str, Any] | None = None) -> None:
        self.pg = pg
        self.redis = redis
        self.logs = logs
        self.overrides = overrides or {}  # ``--set name=value``: flowrt settings to try
        self.key = ""  # made by prepare_template, in every section's database

    def database_url(self, name: str) -> str:
        return urlunsplit(urlsplit(self.pg.url)._replace(path=f"/{name}"))

    def settings(self, database: str, **values: Any) -> Settings:
        """flowrt's defaults, with the private servers, a prefix of its own, quiet logs,
        and a rate limit no load reaches: the load generator sends one tenant's requests
        as fast as the API takes them, over the default limit, and the limiter's work
        (a Redis script per batch of requests) is part of every request in production."""
        return Settings(database_url=self.database_url(database), redis_url=self.redis.url,
                        redis_prefix=f"bench-{database}", log_level="warning", metrics_port=0,
                        **{"rate_limit": 1e9, **values, **self.overrides})

    async def prepare_template(self) -> None:
        """``flowrt migrate`` a template database, register the benchmark's workflows
        and make the load generator's key."""
        from flowrt.store import Database
        from flowrt.store.definitions import DefinitionStore
        from flowrt.store.tenants import TenantStore

        from .app import app

        await self.admin(f'CREATE DATABASE "{TEMPLATE}"')
        s = self.settings(TEMPLATE)
        migrate = await asyncio.create_subprocess_exec(
            str(BIN / "flowrt"), "migrate", env=child_environ(s), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await migrate.communicate()
        if migrate.returncode != 0:
            raise RuntimeError(f"flowrt migrate failed: {output.decode(errors='replace')}")
        async with Database(s.database_url) as db:
            for workflow in app.workflows:
                await DefinitionStore(db).register(workflow)
            await TenantStore(db).create_tenant("default")
            self.key = (await TenantStore(db).create_key("default", "writer")).key

    async def fresh_database(self, name: str) -> None:
        await self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.pg.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def redis_pid(self) -> int:
        client = aioredis.from_url(self.redis.url)
        try:
            info = await client.info("server")
        finally:
            await client.aclose()
        return int(info["process_id"])


class Stack:
    """``async with Stack(servers, "e2e_w2", workers=2) as stack``: a fresh database,
    the API (unless ``api=False``) and ``workers`` worker processes, all ready."""

    def __init__(self, servers: Servers, name: str, *, workers: int, api: bool = True) -> None:
        self.servers = servers
        self.name = name
        self.workers = workers
        self.with_api = api
        self.settings = servers.settings(name, port=free_port())
        self.api: subprocess.Popen[bytes] | None = None
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self.db: asyncpg.Connection | None = None

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def key(self) -> str:
        return self.servers.key

    @property
    def conn(self) -> asyncpg.Connection:
        assert self.db is not None, "the stack is not started"
        return self.db

    async def __aenter__(self) -> Stack:
        await self.servers.fresh_database(self.name)
        env = child_environ(self.settings)
        try:
            if self.with_api:
                self.api = self._spawn("api", [str(BIN / "flowrt"), "api"], env)
            for i in range(self.workers):
                self.worker_procs.append(self._spawn(
                    f"worker{i + 1}", [str(BIN / "flowrt-worker"), "--app", APP], env))
            self.db = await asyncpg.connect(self.settings.database_url)
            await self._ready()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop()

    def _spawn(self, role: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.servers.logs / f"{self.name}-{role}.log").open("wb")
        try:
            return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    async def _ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not (await self._api_ready() and await self._workers_ready()):
            for proc in [p for p in (self.api, *self.worker_procs) if p is not None]:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args} exited with {proc.returncode} at start;"
                                       f" see {self.servers.logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: flowrt not ready after {within:.0f} s")
            await asyncio.sleep(0.1)

    async def _api_ready(self) -> bool:
        if self.api is None:
            return True
        url = f"http://127.0.0.1:{self.port}/readyz"

        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        return await asyncio.to_thread(get)

    async def _workers_ready(self) -> bool:
        """Every worker has read from the consumer group once (it then shows as a consumer)."""
        if not self.workers:
            return True
        client = aioredis.from_url(self.settings.redis_url)
        try:
            groups = await client.xinfo_groups(f"{self.settings.redis_prefix}:hints")
        except aioredis.ResponseError:  # no stream yet
            return False
        finally:
            await client.aclose()
        return any(int(g["consumers"]) >= self.workers for g in groups)

    async def _stop(self) -> None:
        procs = [p for p in (self.api, *self.worker_procs) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.db is not None:
            await self.db.close()
            self.db = None

    # measuring -------------------------------------------------------------------

    async def wait_processed(self, within: float = 300) -> None:
        """Until every event in the log is processed; fails on a dead event."""
        deadline = time.monotonic() + within
        while True:
            row = await self.conn.fetchrow(
                "SELECT count(*) FILTER (WHERE processed_seq < last_seq) AS behind,"
                " count(*) FILTER (WHERE blocked_seq IS NOT NULL) AS blocked FROM executions")
            if row["blocked"]:
                raise RuntimeError(f"{self.name}: {row['blocked']} executions hold a dead event")
            if not row["behind"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {row['behind']} executions still behind"
                                   f" after {within:.0f} s")
            await asyncio.sleep(0.05)

    async def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the API, each worker, PostgreSQL (postmaster and
        backends, live or exited) and Redis."""
        out = {"api": cpu_seconds(self.api.pid)} if self.api is not None else {}
        for i, proc in enumerate(self.worker_procs):
            out[f"worker{i + 1}"] = cpu_seconds(proc.pid)
        out["postgres"] = tree_cpu_seconds(self.servers.pg.pid)
        out["redis"] = cpu_seconds(await self.servers.redis_pid())
        return out

    def peak_rss(self) -> dict[str, float]:
        out = {"api": peak_rss_mib(self.api.pid)} if self.api is not None else {}
        for i, proc in enumerate(self.worker_procs):
            out[f"worker{i + 1}"] = peak_rss_mib(proc.pid)
        return out
