"""The API and two workers as real processes: 1,000 events over 50 executions, then
``kill -9`` of a worker that holds work. Every event must be processed exactly once
(in terms of committed outcome) and in seq order, and nothing may be lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import httpx
import pytest

from tests.conftest import free_port
from tests.support.e2e_checks import check_exactly_once_in_order, wait_processed
from tests.support.keys import bearer, issue_key
from tests.support.observe import metric
from tests.support.procs import settings_env, start_api, start_worker, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXECUTIONS = 50
TICKS = 20  # 50 x 20 = 1,000 events, plus the 50 starts


async def _send_all(client: httpx.AsyncClient, requests: list[tuple[str, dict]]) -> list[dict]:
    gate = asyncio.Semaphore(64)

    async def one(path: str, body: dict) -> dict:
        async with gate:
            r = await client.post(path, json=body)
            assert r.status_code == 202, r.text
            return r.json()

    return await asyncio.gather(*(one(p, b) for p, b in requests))


async def test_thousand_events_two_workers_then_kill_9(settings, pg, tmp_path):
    s = replace(settings, port=free_port(), lock_ttl=3.0, claim_timeout=2.0,
                # the reconciler would also recover the work; keep it out of the way
                # so that recovery after the kill is the reclaim path's doing
                reconciler_grace=60.0, reconciler_period=5.0, concurrency=16)
    env = settings_env(s, E2E_CALLS_DIR=str(tmp_path))
    api = start_api(env, tmp_path)
    ports = [free_port(), free_port()]
    workers = [start_worker(f"worker{i}", "tests.e2e.counter:app", env, tmp_path, ports[i])
               for i in range(2)]
    base = f"http://127.0.0.1:{s.port}"
    try:
        for w, port in zip(workers, ports, strict=True):
            wait_http(f"http://127.0.0.1:{port}/metrics", w)
        wait_http(f"{base}/readyz", api)

        key = await issue_key(s.database_url)
        async with httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30) as client:
            ids = [f"e2e-{i:03d}" for i in range(EXECUTIONS)]
            await _send_all(client, [("/v1/executions", {"workflow": "counter", "execution_id": x})
                                     for x in ids])
            ticks = [(f"/v1/executions/{x}/events", {"name": "tick"})
                     for x in ids for _ in range(TICKS)]
            random.Random(7).shuffle(ticks)
            accepted = await _send_all(client, ticks)
            assert len(accepted) == EXECUTIONS * TICKS
            await wait_processed(pg, 120)
            await check_exactly_once_in_order(pg)
            assert await pg.fetchval("SELECT count(*) FROM events") == EXECUTIONS * (TICKS + 1)
            by_worker = await pg.fetch("SELECT worker, count(*) FROM event_processing GROUP BY 1")
            assert len(by_worker) == 2, "both workers should have taken part"

            # Phase 2: slow events, then kill -9 a worker in the middle of one.
            slow = [(f"/v1/executions/{x}/events", {"name": "tick", "payload": {"sleep": 0.3}})
                    for x in ids[:20] for _ in range(3)]
            await _send_all(client, slow)
            victim_pid = None
            deadline = time.monotonic() + 30
            while victim_pid is None and time.monotonic() < deadline:
                worker = await pg.fetchval(
                    "SELECT worker FROM event_processing WHERE status = 'processing' LIMIT 1")
                if worker:
                    victim_pid = int(worker.split("-")[-2])
                await asyncio.sleep(0.02)
            assert victim_pid is not None, "no worker was seen holding work"
            victim = next(w for w in workers if w.pid == victim_pid)
            survivor = next(w for w in workers if w is not victim)
            victim.kill9()

            await wait_processed(pg, 120)
            await check_exactly_once_in_order(pg)
            survivor_port = ports[workers.index(survivor)]
            # one short scrape of a subprocess's metrics; blocking the loop here is harmless
            text = httpx.get(f"http://127.0.0.1:{survivor_port}/metrics").text  # noqa: ASYNC210
            assert metric(text, "flowrt_messages_reclaimed_total") > 0, "nothing was reclaimed"
            dead = await pg.fetchval("SELECT count(*) FROM event_processing WHERE status = 'dead'")
            assert dead == 0
    finally:
        for w in workers:
            if w.alive():
                assert w.terminate() == 0, w.output()[-3000:]
        assert api.terminate() == 0, api.output()[-3000:]
