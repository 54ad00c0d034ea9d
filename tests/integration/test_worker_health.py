"""The worker's side of ``flowrt doctor``: its gauges show the same checks, its reclaimer
prunes consumers left with nothing pending, and a clean stop removes its own consumer."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import redis.asyncio as aioredis

from flowrt import App
from flowrt.settings import Settings
from flowrt.worker import Worker
from tests.support.stuck import add_execution
from tests.support.workerkit import GROUP, keys, running_worker, wait_until

FLOW = {"name": "flow", "version": 1, "initial": "a", "states": {"a": {"final": True}}}


def _app() -> App:
    app = App()
    app.add_definition(FLOW)
    return app


def metric(worker: Worker, name: str) -> float | None:
    return worker.metrics.registry.get_sample_value(name, {})


async def _consumers(client: aioredis.Redis, settings: Settings) -> set[str]:
    return {c["name"] for c in await client.xinfo_consumers(keys(settings).stream, GROUP)}


async def test_gauges_show_what_doctor_checks(settings: Settings, pg: asyncpg.Connection,
                                              redis_client: aioredis.Redis) -> None:
    await add_execution(pg, "poisoned", events=3, processed=1, dead_seq=2, error="boom")
    await add_execution(pg, "lagging", events=2, processed=1, age=120)
    # its lock is held (a worker we cannot see), so the reconciler leaves it alone
    await redis_client.set(keys(settings).lock(settings.tenant, "lagging"), "other", px=60_000)

    async with running_worker(settings, _app(), name="w-gauges") as w:
        def gauges() -> dict[str, float | None]:
            return {name: metric(w, f"flowrt_{name}") for name in (
                "stuck_executions", "dead_events", "unpublished_events",
                "stale_pending_hints", "idle_consumers", "stream_length", "stream_pending")}

        await wait_until(lambda: gauges()["dead_events"] == 1, what="gauges set")
        assert gauges() == {"stuck_executions": 1, "dead_events": 1, "unpublished_events": 0,
                            "stale_pending_hints": 0, "idle_consumers": 0,
                            "stream_length": 0, "stream_pending": 0}


async def test_reclaimer_prunes_consumers_with_nothing_pending(
        settings: Settings, redis_client: aioredis.Redis) -> None:
    # pruned after 3 claim timeouts: 3.3 s here (the claim timeout must exceed lock TTL / 3)
    s = replace(settings, claim_timeout=1.1)
    k = keys(s)
    # before the worker starts: a worker that died holding a hint, and one holding none
    await redis_client.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
    await redis_client.xadd(k.stream, {"t": s.tenant, "x": "nothing-here", "s": "1"})
    await redis_client.xreadgroup(GROUP, "dead-busy", {k.stream: ">"}, count=1)
    await redis_client.xgroup_createconsumer(k.stream, GROUP, "gone")
    assert await _consumers(redis_client, s) == {"dead-busy", "gone"}
    async with running_worker(s, _app(), name="w-prune") as w:
        # dead-busy's hint is reclaimed first (never dropped), then it is pruned too.
        # The metric moves just after the script returns: wait for both, or the test
        # can look between the two.
        async def pruned() -> bool:
            return (not {"gone", "dead-busy"} & await _consumers(redis_client, s)
                    and (metric(w, "flowrt_consumers_pruned_total") or 0) >= 2)

        await wait_until(pruned, what="idle consumers pruned and counted")
        assert (metric(w, "flowrt_messages_reclaimed_total") or 0) >= 1
    assert await redis_client.xlen(k.stream) == 0  # the reclaimed hint was acked, not lost


async def test_clean_stop_removes_the_workers_own_consumer(
        settings: Settings, redis_client: aioredis.Redis) -> None:
    k = keys(settings)
    async with running_worker(settings, _app(), name="w-leaving"):
        await redis_client.xadd(k.stream, {"t": settings.tenant, "x": "nothing-here", "s": "1"})

        async def acked() -> bool:
            return await redis_client.xlen(k.stream) == 0

        await wait_until(acked, what="hint read and acked")
        assert "w-leaving" in await _consumers(redis_client, settings)
    assert "w-leaving" not in await _consumers(redis_client, settings)
