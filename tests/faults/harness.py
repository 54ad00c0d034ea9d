"""The fault suite's world: one scenario's own servers, processes and load client.

``Stack`` starts a private PostgreSQL and a private Redis (``tests/support/servers``,
on free loopback ports, stopped by pid), migrates, creates the sink tables of
``tests/faults/sinkapp.py``, and runs the API and workers as subprocesses with
short timings. ``Client`` sends requests (with the stack's admin key, made after migrating;
``Stack.client()``) and keeps a ``Ledger`` of every try
(key, body, answer); it retries 503s and dropped connections with the same
Idempotency-Key, as a careful user would. ``PendingSampler`` watches the group's
pending list from outside (for every scenario), for the largest delivery count a
hint reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from flowrt.bus.keys import GROUP, Keys
from flowrt.settings import Settings
from tests.conftest import free_port
from tests.faults.sinkapp import SINK_SQL
from tests.support.keys import bearer, issue_key
from tests.support.observe import eventually, metric
from tests.support.procs import BIN, ROOT, Proc, settings_env, wait_http
from tests.support.servers import PrivatePostgres, PrivateRedis, private_postgres, private_redis

APP = "tests.faults.sinkapp:app"
TENANT = "default"

# The issue's short timings: lock TTL ~2 s, claim idle ~3 s, reconciler ~2 s.
SHORT = {
    "lock_ttl": 2.0, "lock_wait": 2.0, "claim_timeout": 3.0, "claim_interval": 0.5,
    "reconciler_period": 1.0, "reconciler_grace": 2.0, "relay_period": 0.5,
    "relay_grace": 1.0, "shutdown_grace": 5.0, "db_timeout": 2.0, "redis_timeout": 1.0,
    "db_pool_max": 5, "retry_initial_delay": 0.05, "retry_max_delay": 0.2,
}


class Stack:
    """``async with Stack(tmp_path, workers=2) as s:`` — everything stopped on exit."""

    def __init__(self, tmp_path: Path, *, workers: int = 2, **settings: Any) -> None:
        self.tmp_path = tmp_path
        self.n_workers = workers
        self.overrides = {**SHORT, **settings}
        self.pg_server: PrivatePostgres
        self.redis_server: PrivateRedis
        self.settings: Settings
        self.key = ""  # an admin key of TENANT, made once migrated
        self.api: Proc | None = None
        self.workers: dict[str, tuple[Proc, int]] = {}  # name -> (process, metrics port)
        self.retired: list[Proc] = []  # killed or stopped on purpose
        self._count = 0
        self._exits = contextlib.ExitStack()
        self.sampler: PendingSampler | None = None  # watches deliveries from outside

    async def __aenter__(self) -> Stack:
        try:
            self.pg_server = self._exits.enter_context(private_postgres(self.tmp_path))
            self.redis_server = self._exits.enter_context(private_redis(self.tmp_path))
            self.settings = replace(Settings(), database_url=self.pg_server.url,
                                    redis_url=self.redis_server.url, redis_prefix="faults",
                                    port=free_port(), **self.overrides)
            await self._prepare_database()
            self.start_api()
            for _ in range(self.n_workers):
                self.start_worker()
            self.wait_ready()
            self.sampler = PendingSampler(self)
            await self.sampler.__aenter__()
        except BaseException:
            await self.close(failed=True)
            raise
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        await self.close(failed=exc_type is not None)

    # servers -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def auth(self) -> dict[str, str]:
        """Headers with this stack's admin key."""
        return bearer(self.key)

    def client(self, **kwargs: Any) -> Client:
        """A load client of this stack's API (see ``Client``), with its admin key."""
        return Client(self.base_url, auth=self.auth, **kwargs)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_prefix)

    def env(self, **extra: str) -> dict[str, str]:
        return settings_env(self.settings, **extra)

    async def _prepare_database(self) -> None:
        migrate = await asyncio.create_subprocess_exec(
            str(BIN / "flowrt"), "migrate", env=self.env(), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(migrate.communicate(), 60)
        assert migrate.returncode == 0, out.decode(errors="replace")
        self.key = await issue_key(self.pg_server.url, TENANT)
        conn = await asyncpg.connect(self.pg_server.url)
        try:
            await conn.execute(SINK_SQL)
        finally:
            await conn.close()

    async def pg(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.pg_server.url)

    def redis(self) -> aioredis.Redis:
        return aioredis.from_url(self.redis_server.url, decode_responses=True,
                                 socket_timeout=2, socket_connect_timeout=2)

    # processes -----------------------------------------------------------------
    def start_api(self, **env: str) -> Proc:
        name = f"api{len(self.retired)}" if self.retired else "api"  # one log file each
        self.api = Proc(name, [str(BIN / "flowrt"), "api"], self.env(**env), self.tmp_path)
        return self.api

    def restart_api(self, **env: str) -> Proc:
        """Stop the API (SIGTERM, must exit 0) and start it again with ``env``."""
        assert self.api is not None
        code = self.api.terminate()
        assert code == 0, f"api exited {code}:\n{self.api.output()[-3000:]}"
        self.retired.append(self.api)
        self.start_api(**env)
        assert self.api is not None
        wait_http(f"{self.base_url}/healthz", self.api)
        return self.api

    def start_worker(self, **env: str) -> Proc:
        self._count += 1
        name = f"worker{self._count}"
        port = free_port()
        proc = Proc(name, [str(BIN / "flowrt-worker"), "--app", APP],
                    self.env(FLOWRT_METRICS_PORT=str(port), **env), self.tmp_path)
        self.workers[name] = (proc, port)
        return proc

    def wait_ready(self) -> None:
        for proc, port in self.workers.values():
            wait_http(f"http://127.0.0.1:{port}/metrics", proc)
        assert self.api is not None
        wait_http(f"{self.base_url}/healthz", self.api)

    async def doctor(self, *args: str) -> tuple[int, str]:
        """Run ``flowrt doctor`` against this stack: its exit code and its output."""
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "flowrt"), "doctor", *args, env=self.env(), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    def worker_by_pid(self, pid: int) -> Proc:
        return next(p for p, _port in self.workers.values() if p.pid == pid)

    def retire(self, proc: Proc, how: str = "kill9") -> None:
        """Stop one worker (``kill9`` or ``term``) and forget it."""
        if how == "kill9":
            proc.kill9()
        else:
            code = proc.terminate()
            assert code == 0, f"{proc.name} exited {code}:\n{proc.output()[-3000:]}"
        self.workers = {n: v for n, v in self.workers.items() if v[0] is not proc}
        self.retired.append(proc)

    def replace_dead_workers(self) -> int:
        """What a supervisor does: start a new worker for each one that died."""
        dead = [p for p, _ in self.workers.values() if not p.alive()]
        for proc in dead:
            proc.terminate()  # only closes its log: it is gone already
            self.workers = {n: v for n, v in self.workers.items() if v[0] is not proc}
            self.retired.append(proc)
            self.start_worker()
        return len(dead)

    def worker_metrics(self) -> list[str]:
        """The metrics page of every live worker."""
        pages = []
        for proc, port in self.workers.values():
            if proc.alive():
                with contextlib.suppress(httpx.HTTPError):
                    pages.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        return pages

    def worker_metric(self, name: str) -> float:
        return sum(metric(page, name) for page in self.worker_metrics())

    def api_metric(self, name: str) -> float:
        page = httpx.get(f"{self.base_url}/metrics", headers=self.auth, timeout=5)
        return metric(page.text, name)

    def logs(self) -> str:
        procs = [p for p, _ in self.workers.values()] + self.retired
        if self.api is not None:
            procs.append(self.api)
        return "\n\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.output()[-4000:]}"
                           for p in procs)

    async def wait_drained(self, within: float) -> float:
        """Until every execution is processed to its head or blocked by a dead event."""
        conn = await self.pg()
        try:
            async def drained() -> bool:
                try:
                    return bool(await conn.fetchval(
                        "SELECT count(*) = 0 FROM executions"
                        " WHERE processed_seq < last_seq AND blocked_seq IS NULL"))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    return False

            try:
                return await eventually(drained, within, "not drained")
            except AssertionError:
                rows = await conn.fetch(
                    "SELECT execution_id, processed_seq, last_seq FROM executions"
                    " WHERE processed_seq < last_seq AND blocked_seq IS NULL LIMIT 5")
                raise AssertionError(f"not drained after {within:g} s:"
                                     f" {[dict(r) for r in rows]}\n{self.logs()}") from None
        finally:
            await conn.close()

    async def close(self, failed: bool = False) -> None:
        if self.sampler is not None:
            await self.sampler.__aexit__()
            self.sampler = None
        problems = []
        procs = [p for p, _ in self.workers.values()]
        if self.api is not None:
            procs.append(self.api)
        for p in procs:
            if not p.alive() and p.popen.returncode not in (0, None):
                problems.append(f"{p.name} died with {p.popen.returncode}")
            code = p.terminate()
            if code != 0 and not problems:
                problems.append(f"{p.name} exited {code} at SIGTERM")
        if failed or problems:
            print(self.logs())
        self._exits.close()
        assert failed or not problems, "; ".join(problems)


# the load client ------------------------------------------------------------------


@dataclass
class Try:
    """One HTTP try: what was sent and what came back (``status`` None: no answer)."""

    execution_id: str
    key: str  # the Idempotency-Key, or "start" for the execution's start
    body: dict[str, Any]
    status: int | None
    answer: dict[str, Any] | None
    headers: dict[str, str]
    error: str | None
    elapsed: float


@dataclass
class Ledger:
    tries: list[Try] = field(default_factory=list)

    def finals(self) -> dict[tuple[str, str], Try]:
        """The last try of each request."""
        return {(t.execution_id, t.key): t for t in self.tries}

    def statuses(self) -> Counter[int | None]:
        return Counter(t.status for t in self.tries)

    def accepted(self) -> dict[tuple[str, str], Try]:
        return {k: t for k, t in self.finals().items() if t.status == 202}


class Client:
    """Sends requests and records every try in ``ledger``.

    A 503, or no answer at all, is retried with the same Idempotency-Key
    (Retry-After honoured up to ``max_pause``) until ``give_up`` seconds have
    passed; the ledger keeps every try.
    """

    def __init__(self, base_url: str, ledger: Ledger | None = None, *, auth: dict[str, str],
                 give_up: float = 60, max_pause: float = 0.5, timeout: float = 10) -> None:
        self.ledger = ledger or Ledger()
        self.give_up = give_up
        self.max_pause = max_pause
        self.http = httpx.AsyncClient(base_url=base_url, headers=auth, timeout=timeout,
                                      limits=httpx.Limits(max_connections=64))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def start(self, execution_id: str, retry: bool = True) -> Try:
        body = {"workflow": "ledger", "execution_id": execution_id}
        return await self._request("/v1/executions", execution_id, "start", body, retry)

    async def send(self, execution_id: str, key: str, body: dict[str, Any],
                   retry: bool = True) -> Try:
        return await self._request(f"/v1/executions/{execution_id}/events", execution_id, key,
                                   body, retry)

    async def _request(self, path: str, execution_id: str, key: str, body: dict[str, Any],
                       retry: bool) -> Try:
        headers = {} if key == "start" else {"Idempotency-Key": key}
        deadline = time.monotonic() + self.give_up
        while True:
            started = time.monotonic()
            try:
                r = await self.http.post(path, json=body, headers=headers)
                answer = r.json() if r.content else None
                t = Try(execution_id, key, body, r.status_code, answer, dict(r.headers), None,
                        time.monotonic() - started)
            except httpx.HTTPError as exc:
                t = Try(execution_id, key, body, None, None, {}, f"{type(exc).__name__}: {exc}",
                        time.monotonic() - started)
            self.ledger.tries.append(t)
            if not retry or t.status not in (None, 503) or time.monotonic() > deadline:
                return t
            pause = float(t.headers.get("retry-after", "0.2"))
            await asyncio.sleep(min(pause, self.max_pause))

    async def load(self, executions: Iterable[str], per_execution: int, *,
                   concurrency: int = 16, body: Callable[[str, int], dict[str, Any]] | None = None,
                   start: bool = True, tag: str = "") -> None:
        """Start each execution, then send ``per_execution`` items to each, spread
        over ``concurrency`` concurrent requests (keys ``{execution}-{tag}{n}``)."""
        ids = list(executions)
        make = body or (lambda _x, _n: {"name": "item"})
        if start:
            await _bounded(concurrency, [self.start(x) for x in ids])
        requests = [self.send(x, f"{x}-{tag}{n}", make(x, n))
                    for n in range(per_execution) for x in ids]
        await _bounded(concurrency, requests)


async def _bounded(limit: int, coros: list[Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> None:
        async with gate:
            await c

    await asyncio.gather(*(one(c) for c in coros))


class PendingSampler:
    """Samples the group's pending list every ``period`` s: the largest delivery
    count any hint reached, and the largest pending count. Redis errors (a
    scenario may kill or pause it) are skipped.

    Stopped by an event, not by cancelling: a cancellation that lands inside
    redis-py's reconnect logic can be swallowed, and the task would run for ever.
    """

    def __init__(self, stack: Stack, period: float = 0.2) -> None:
        self.stack = stack
        self.period = period
        self.max_deliveries = 0
        self.max_pending = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PendingSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, 10)
        except (TimeoutError, asyncio.CancelledError):
            pass

    async def _run(self) -> None:
        client = self.stack.redis()
        stream = self.stack.keys.stream
        try:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):
                    rows = await asyncio.wait_for(
                        client.xpending_range(stream, GROUP, "-", "+", 10_000), 3)
                    self.max_pending = max(self.max_pending, len(rows))
                    for row in rows:
                        self.max_deliveries = max(self.max_deliveries,
                                                  int(row["times_delivered"]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.period)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 3)
