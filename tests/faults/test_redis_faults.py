"""Redis faults: restarted empty under load, refusing connections, stalled.

Scenarios 3, 4 and 5 of the reliability issue (docs/guarantees.md has the table).
Redis holds only wake-up hints and locks: whatever it loses, the log rebuilds.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.faults.checks import check
from tests.faults.harness import Client, Stack, eventually

# What a worker logs while Redis is gone; counted to show there is no hot loop.
_COMPLAINTS = ("cannot read hints", "hint stream or group missing", "periodic task",
               "ack and release failed", "re-check after release failed", "cannot extend lock",
               "dependency unavailable")


def _complaints(stack: Stack, since: float) -> int:
    """Warnings and errors about Redis that the live workers logged after ``since``."""
    count = 0
    for proc, _port in stack.workers.values():
        for line in proc.output().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if any(c in str(entry.get("event")) for c in _COMPLAINTS) \
                    and _epoch(entry.get("timestamp")) >= since:
                count += 1
    return count


def _epoch(stamp: object) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0


# 3 ------------------------------------------------------------------------------------


async def test_redis_restarted_empty_under_load(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, \
            stack.client() as client:
        load = asyncio.create_task(client.load([f"x{i}" for i in range(30)], 15, concurrency=8))
        await eventually(lambda: _some(client, 150), 30, "load did not start")
        marker = stack.redis()
        await marker.set("faults:sentinel", "before")
        await marker.aclose()

        lost_at = time.time()
        stack.redis_server.kill9()
        await asyncio.sleep(1.0)
        stack.redis_server.start()  # back, EMPTY: no stream, no group, no locks
        back_at = time.monotonic()
        marker = stack.redis()
        assert await marker.get("faults:sentinel") is None, "Redis came back with data"
        await marker.aclose()

        await load
        recovery = await stack.wait_drained(60)
        window = time.time() - lost_at
        figures = await check(stack, client.ledger)
        # the API kept answering 202 (PostgreSQL was up): nothing but 202s
        assert set(client.ledger.statuses()) == {202}, client.ledger.statuses()
        complaints = _complaints(stack, lost_at)
        # Back-off, not a hot loop: each loop complains once per period or back-off
        # step, and each job in flight once (a hot loop would log thousands a second).
        per_worker_s = complaints / len(stack.workers) / window
        assert per_worker_s < 25, (complaints, window)
        republished = stack.worker_metric("flowrt_hints_republished_total")
        assert republished >= 1
        report(**figures, recovery_after_restart_s=round(time.monotonic() - back_at, 1),
               drain_wait_s=round(recovery, 1), worker_complaints=complaints,
               complaints_per_worker_s=round(per_worker_s, 2), republished=republished)


async def _some(client: Client, n: int) -> bool:
    return len(client.ledger.tries) >= n


# 4 ------------------------------------------------------------------------------------


async def test_redis_refusing_connections(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, stack.client() as client:
        ids = [f"r{i}" for i in range(10)]
        await client.load(ids, 3, concurrency=4)
        await stack.wait_drained(30)

        stack.redis_server.stop()  # connections are refused from now on
        down = time.monotonic()
        started = len(client.ledger.tries)
        await client.load(ids, 10, concurrency=4, start=False, tag="down",
                          body=lambda _x, n: {"name": "item", "payload": {"n": n}})
        during = client.ledger.tries[started:]
        assert {t.status for t in during} == {202}, {t.status for t in during}
        slowest = max(t.elapsed for t in during)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "degraded",
                                "checks": {"postgres": "ok", "redis": "unreachable"}}
        failures = stack.api_metric("flowrt_publish_failures_total")
        assert failures >= len(during)
        conn = await stack.pg()
        try:
            unpublished = await conn.fetchval(
                "SELECT count(*) FROM event_processing WHERE NOT published")
            assert unpublished >= len(during)
        finally:
            await conn.close()
        outage = time.monotonic() - down

        stack.redis_server.start()
        back = time.monotonic()
        recovery = await stack.wait_drained(60)
        figures = await check(stack, client.ledger)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as http:
            async def ready_again() -> bool:
                r = await http.get("/readyz")
                return r.status_code == 200 and r.json()["status"] == "ready"

            await eventually(ready_again, 10, "not ready after Redis returned")
        report(**figures, accepted_while_down=len(during), outage_s=round(outage, 1),
               slowest_202_while_down_s=round(slowest, 3),
               recovery_after_return_s=round(time.monotonic() - back, 1),
               drain_wait_s=round(recovery, 1))


# 5 ------------------------------------------------------------------------------------


async def test_redis_stalled_by_client_pause(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, stack.client() as client:
        ids = [f"p{i}" for i in range(5)]
        await client.load(ids, 2, concurrency=4)
        await stack.wait_drained(30)

        pause_ms = 6000
        admin = stack.redis()
        await admin.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
        await admin.aclose()
        paused_at = time.monotonic()
        started = len(client.ledger.tries)
        await client.load(ids, 4, concurrency=4, start=False, tag="stalled",
                          body=lambda _x, n: {"name": "item", "payload": {"n": n}})
        during = client.ledger.tries[started:]
        spent = time.monotonic() - paused_at
        assert spent < pause_ms / 1000, "the requests outlasted the pause: nothing was stalled"
        assert {t.status for t in during} == {202}
        slowest = max(t.elapsed for t in during)
        # The publish gives up after FLOWRT_PUBLISH_TIMEOUT: the 202 is not held by Redis.
        bound = stack.settings.publish_timeout + 1.5
        assert slowest < bound, (slowest, bound)
        assert stack.api_metric("flowrt_publish_failures_total") >= 1

        recovery = await stack.wait_drained(60)
        figures = await check(stack, client.ledger)
        report(**figures, stalled_requests=len(during), pause_s=pause_ms / 1000,
               slowest_202_while_stalled_s=round(slowest, 3),
               publish_timeout_s=stack.settings.publish_timeout,
               drained_after_pause_s=round(time.monotonic() - paused_at, 1),
               drain_wait_s=round(recovery, 1))
