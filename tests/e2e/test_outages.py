"""Outages with real processes: the API and workers as subprocesses, servers that die.

1. Redis is killed (``kill -9``) and comes back EMPTY: the API keeps accepting (the
   log in PostgreSQL is the outbox), readiness says "degraded", and once Redis is back the
   workers' relay and reconciler rebuild the stream, the group and the hints.
2. PostgreSQL is killed: the API answers 503 problem+json with Retry-After (never
   500) and publishes nothing; after the restart everything flows again.
3. A worker is paused (SIGSTOP) in the middle of an action, past its lock's TTL:
   the other worker takes over, and the paused one's late commit is fenced.

``test_long_postgres_outage_does_not_kill_events``: a PostgreSQL outage longer than
max_deliveries x claim_timeout redelivers in-flight hints many times, but kills no
event (only attempted events are ever dead-lettered).

Private servers (``tests/support/servers.py``) on their own loopback ports are the
ones killed; the shared servers are only used the way every other test uses them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from flowrt.settings import Settings
from tests.conftest import free_port
from tests.support.e2e_checks import check_exactly_once_in_order, wait_processed
from tests.support.keys import bearer, issue_key
from tests.support.observe import eventually, metric
from tests.support.procs import BIN, ROOT, Proc, settings_env, start_api, start_worker, wait_http
from tests.support.servers import private_postgres, private_redis

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP = "tests.e2e.counter:app"


def _short(settings: Settings, **extra: object) -> Settings:
    """The brief's short timings, plus a free API port."""
    values: dict[str, object] = {
        "port": free_port(), "reconciler_period": 0.5, "reconciler_grace": 1.0,
        "relay_period": 0.3, "relay_grace": 0.5, "claim_timeout": 2.0, "lock_ttl": 3.0}
    return replace(settings, **{**values, **extra})  # type: ignore[arg-type]


def _client(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30)


def _metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


async def _post_all(client: httpx.AsyncClient, requests: Iterable[tuple[str, dict]],
                    expect: int = 202) -> list[httpx.Response]:
    """Send in order (seqs are then predictable); every answer must be ``expect``."""
    out = []
    for path, body in requests:
        r = await client.post(path, json=body)
        assert r.status_code == expect, (path, r.status_code, r.headers, r.text)
        out.append(r)
    return out


async def _fetchval(pg: asyncpg.Connection, query: str) -> bool:
    return bool(await pg.fetchval(query))


async def _ready(client: httpx.AsyncClient) -> bool:
    r = await client.get("/readyz")
    return r.status_code == 200 and r.json()["status"] == "ready"


def _stop_all(procs: list[Proc]) -> None:
    """SIGTERM every process still running; each must exit 0."""
    failures = []
    for p in procs:
        code = p.terminate()
        if code != 0:
            failures.append(f"{p.name} exited {code}:\n{p.output()[-3000:]}")
    assert not failures, "\n\n".join(failures)


def _problem_503(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    assert r.headers.get("retry-after"), r.headers
    body = r.json()
    assert body["status"] == 503 and body["type"].startswith("https://"), body


# 1 -------------------------------------------------------------------------------


async def test_redis_killed_and_back_empty(settings, pg, tmp_path):
    with private_redis(tmp_path) as redis_server:
        s = _short(settings, redis_url=redis_server.url)
        env = settings_env(s, E2E_CALLS_DIR=str(tmp_path))
        key = await issue_key(s.database_url)
        metrics_port = free_port()
        api = start_api(env, tmp_path)
        worker = start_worker("worker", APP, env, tmp_path, metrics_port)
        procs = [worker, api]
        base = f"http://127.0.0.1:{s.port}"
        try:
            wait_http(f"http://127.0.0.1:{metrics_port}/metrics", worker)
            wait_http(f"{base}/readyz", api)
            ids = [f"redis-{i}" for i in range(5)]
            async with _client(base, key) as client:
                await _post_all(client, [("/v1/executions", {"workflow": "counter",
                                                             "execution_id": x}) for x in ids])
                await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})
                                         for _ in range(3) for x in ids])
                await wait_processed(pg, 20)
                await check_exactly_once_in_order(pg)
                # Something to prove the restarted Redis is empty.
                private = aioredis.from_url(redis_server.url)
                await private.set(f"{s.redis_prefix}:sentinel", "before")
                await private.aclose()
                before = metric(_metrics(metrics_port), "flowrt_hints_republished_total")

                redis_server.kill9()

                tick = [(f"/v1/executions/{x}/events", {"name": "tick"})
                        for _ in range(4) for x in ids]
                accepted = await _post_all(client, tick)  # 20 POSTs, each 202
                seqs = [(a.json()["execution_id"], a.json()["seq"]) for a in accepted]
                # Durable and waiting for the relay: published = false.
                rows = await pg.fetch(
                    "SELECT execution_id, seq, published FROM event_processing"
                    " WHERE (execution_id, seq) IN"
                    " (SELECT * FROM unnest($1::text[], $2::bigint[]))",
                    [x for x, _ in seqs], [q for _, q in seqs])
                assert len(rows) == 20 and not any(r["published"] for r in rows), rows
                ready = await client.get("/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready
                assert (await client.get("/healthz")).status_code == 200
                api_metrics = (await client.get("/metrics")).text
                assert metric(api_metrics, "flowrt_publish_failures_total") >= 20
                await asyncio.sleep(1.5)  # the worker's loops run into the outage
                assert worker.alive(), worker.output()[-3000:]

                redis_server.start()
                private = aioredis.from_url(redis_server.url)
                sentinel = await private.get(f"{s.redis_prefix}:sentinel")
                await private.aclose()
                assert sentinel is None, "Redis came back with data"

                await wait_processed(pg, 30)
                await check_exactly_once_in_order(pg)
                assert await pg.fetchval("SELECT count(*) FROM events WHERE name = 'tick'") == 35
                assert await pg.fetchval(
                    "SELECT count(*) FROM event_processing WHERE status = 'dead'") == 0
                await eventually(  # the relay marks them published right after publishing
                    lambda: _fetchval(pg, "SELECT count(*) = 0 FROM event_processing"
                                          " WHERE NOT published"), 10, "left unpublished")
                assert worker.alive(), worker.output()[-3000:]
                after = metric(_metrics(metrics_port), "flowrt_hints_republished_total")
                assert after > before, (before, after)
                await eventually(lambda: _ready(client), 10, "API not ready after Redis is back")
        finally:
            _stop_all(procs)


# 2 -------------------------------------------------------------------------------


def _migrate(env: dict[str, str]) -> None:
    r = subprocess.run([str(BIN / "flowrt"), "migrate"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


async def _stream_entries(client: aioredis.Redis, stream: str) -> list[tuple[str, dict]]:
    return [(mid, fields) for mid, fields in await client.xrange(stream)]


async def test_postgres_killed_and_back(settings, redis_client, tmp_path):
    with private_postgres(tmp_path) as pg_server:
        s = _short(settings, database_url=pg_server.url)
        env = settings_env(s, E2E_CALLS_DIR=str(tmp_path))
        _migrate(env)
        key = await issue_key(s.database_url)
        metrics_port = free_port()
        api = start_api(env, tmp_path)
        worker = start_worker("worker", APP, env, tmp_path, metrics_port)
        procs = [worker, api]
        base = f"http://127.0.0.1:{s.port}"
        stream = f"{s.redis_prefix}:hints"
        try:
            wait_http(f"http://127.0.0.1:{metrics_port}/metrics", worker)
            wait_http(f"{base}/readyz", api)
            ids = [f"pg-{i}" for i in range(4)]
            async with _client(base, key) as client:
                pg = await asyncpg.connect(pg_server.url)
                try:
                    await _post_all(client, [("/v1/executions", {"workflow": "counter",
                                                                 "execution_id": x}) for x in ids])
                    await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})
                                             for _ in range(3) for x in ids])
                    await wait_processed(pg, 20)
                    await check_exactly_once_in_order(pg)
                    # Accepted just before the outage, still in flight when it begins.
                    await _post_all(client, [(f"/v1/executions/{x}/events",
                                              {"name": "tick", "payload": {"sleep": 0.3}})
                                             for _ in range(3) for x in ids])
                finally:
                    await pg.close()

                pg_server.kill9()

                entries_before = await _stream_entries(redis_client, stream)
                for x in ids:
                    _problem_503(await client.post(f"/v1/executions/{x}/events",
                                                   json={"name": "tick"}))
                _problem_503(await client.post(
                    "/v1/executions", json={"workflow": "counter", "execution_id": "pg-new"}))
                assert (await client.get("/healthz")).status_code == 200
                _problem_503(await client.get("/readyz"))
                entries_after = await _stream_entries(redis_client, stream)
                new = [e for e in entries_after if e not in entries_before]
                assert not new, f"hints published during the PostgreSQL outage: {new}"
                await asyncio.sleep(2)
                assert worker.alive(), worker.output()[-3000:]
                assert api.alive(), api.output()[-3000:]

                pg_server.start()

                await eventually(lambda: _ready(client), 15, "API not ready after PostgreSQL")
                await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})
                                         for _ in range(2) for x in ids])
                await _post_all(client, [("/v1/executions", {"workflow": "counter",
                                                             "execution_id": "pg-new"})])
                await _post_all(client, [("/v1/executions/pg-new/events", {"name": "tick"})])
                pg = await asyncpg.connect(pg_server.url)
                try:
                    await wait_processed(pg, 30)
                    await check_exactly_once_in_order(pg)
                    assert await pg.fetchval(
                        "SELECT count(*) FROM events WHERE name = 'tick'") == 4 * (3 + 3 + 2) + 1
                finally:
                    await pg.close()
                assert worker.alive(), worker.output()[-3000:]
        finally:
            _stop_all(procs)


async def test_long_postgres_outage_does_not_kill_events(settings, tmp_path):
    with private_postgres(tmp_path) as pg_server:
        # The reconciler is kept out of the way (as in test_end_to_end) so that recovery
        # is the reclaimer's doing; with it on, the outcome is a race between the two.
        s = _short(settings, database_url=pg_server.url, reconciler_grace=60.0,
                   reconciler_period=5.0)
        assert s.max_deliveries == 5 and s.claim_timeout == 2.0
        env = settings_env(s, E2E_CALLS_DIR=str(tmp_path))
        _migrate(env)
        key = await issue_key(s.database_url)
        metrics_port = free_port()
        api = start_api(env, tmp_path)
        worker = start_worker("worker", APP, env, tmp_path, metrics_port)
        procs = [worker, api]
        base = f"http://127.0.0.1:{s.port}"
        try:
            wait_http(f"http://127.0.0.1:{metrics_port}/metrics", worker)
            wait_http(f"{base}/readyz", api)
            ids = ["long-0", "long-1"]
            async with _client(base, key) as client:
                await _post_all(client, [("/v1/executions", {"workflow": "counter",
                                                             "execution_id": x}) for x in ids])
                # accepted, and still in flight when PostgreSQL goes away
                await _post_all(client, [(f"/v1/executions/{x}/events",
                                          {"name": "tick", "payload": {"sleep": 0.5}})
                                         for _ in range(3) for x in ids])
            pg_server.kill9()
            await asyncio.sleep(13)  # > (max_deliveries + 1) x claim_timeout
            assert worker.alive(), worker.output()[-3000:]
            pg_server.start()

            pg = await asyncpg.connect(pg_server.url)
            try:
                deadline = time.monotonic() + 20
                while True:
                    dead = await pg.fetch("SELECT execution_id, seq, error FROM event_processing"
                                          " WHERE status = 'dead'")
                    assert not dead, f"dead after an outage: {[dict(r) for r in dead]}"
                    lag = await pg.fetchval(
                        "SELECT count(*) FROM executions WHERE processed_seq < last_seq")
                    if lag == 0:
                        break
                    assert time.monotonic() < deadline, "not processed after the outage"
                    await asyncio.sleep(0.1)
                await check_exactly_once_in_order(pg)
            finally:
                await pg.close()
            assert metric(_metrics(metrics_port), "flowrt_dead_letters_total") == 0
        finally:
            _stop_all(procs)


# 3 -------------------------------------------------------------------------------


def _calls(tmp_path: Path, pid: int) -> list[tuple[str, int]]:
    path = tmp_path / f"calls-{pid}.log"
    if not path.exists():
        return []
    return [(x, int(q)) for x, q in (line.split() for line in path.read_text().splitlines())]


async def test_paused_worker_is_fenced(settings, pg, tmp_path):
    s = _short(settings)
    env = settings_env(s, E2E_CALLS_DIR=str(tmp_path))
    key = await issue_key(s.database_url)
    api = start_api(env, tmp_path)
    ports = [free_port(), free_port()]
    workers = [start_worker(f"worker{i}", APP, env, tmp_path, ports[i]) for i in range(2)]
    procs = [*workers, api]
    base = f"http://127.0.0.1:{s.port}"
    paused: Proc | None = None
    try:
        for w, port in zip(workers, ports, strict=True):
            wait_http(f"http://127.0.0.1:{port}/metrics", w)
        wait_http(f"{base}/readyz", api)
        async with _client(base, key) as client:
            x = "paused"
            await _post_all(client, [("/v1/executions",
                                      {"workflow": "counter", "execution_id": x})])
            await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})] * 2)
            await wait_processed(pg, 20)
            [slow] = await _post_all(client, [(f"/v1/executions/{x}/events",
                                               {"name": "tick", "payload": {"sleep": 1.0}})])
            slow_seq = slow.json()["seq"]
            holder = None
            deadline = time.monotonic() + 10
            while holder is None and time.monotonic() < deadline:
                holder = await pg.fetchval(
                    "SELECT worker FROM event_processing WHERE execution_id = $1 AND seq = $2"
                    " AND status = 'processing'", x, slow_seq)
                await asyncio.sleep(0.01)
            assert holder, "no worker was seen processing the slow tick"
            pid = int(holder.split("-")[-2])
            paused = next(w for w in workers if w.pid == pid)
            other = next(w for w in workers if w is not paused)
            paused_port = ports[workers.index(paused)]
            os.kill(paused.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                # more work behind the slow tick, sent while its holder is frozen
                await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})] * 2)
                await wait_processed(pg, 30)
                took_over = time.monotonic() - stopped_at
                row = await pg.fetchrow("SELECT worker, status FROM event_processing"
                                        " WHERE execution_id = $1 AND seq = $2", x, slow_seq)
                assert row["status"] == "completed"
                assert int(row["worker"].split("-")[-2]) == other.pid, row
                # the lock kept the other worker out while it was still valid
                assert took_over > 1.0, took_over
            finally:
                os.kill(paused.pid, signal.SIGCONT)
            # The paused worker wakes up, finishes its action and tries to commit.
            deadline = time.monotonic() + 15
            while (x, slow_seq) not in _calls(tmp_path, paused.pid):
                assert time.monotonic() < deadline, "the paused worker never finished its action"
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 10
            while metric(_metrics(paused_port), "flowrt_lease_lost_total") < 1:
                assert time.monotonic() < deadline, paused.output()[-3000:]
                await asyncio.sleep(0.1)
            assert (x, slow_seq) in _calls(tmp_path, other.pid), "the other worker re-ran it"
            await asyncio.sleep(1.0)
            await check_exactly_once_in_order(pg)
            data = json.loads(await pg.fetchval(
                "SELECT data::text FROM executions WHERE execution_id = $1", x))
            assert data["seqs"].count(slow_seq) == 1, data

            # Both keep working afterwards.
            await _post_all(client, [(f"/v1/executions/{x}/events", {"name": "tick"})] * 3)
            await wait_processed(pg, 20)
            await check_exactly_once_in_order(pg)
            assert all(w.alive() for w in workers)
    finally:
        if paused is not None and paused.alive():
            os.kill(paused.pid, signal.SIGCONT)
        _stop_all(procs)
