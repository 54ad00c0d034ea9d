"""Scenario 12: the whole stack crashes (kill -9 of every process, servers included)
and comes back in a random order, with Redis empty: everything converges."""

from __future__ import annotations

import asyncio
import os
import random
import time

from tests.faults.checks import check
from tests.faults.harness import Client, Stack, eventually


async def test_whole_stack_crash_and_restart_in_random_order(tmp_path, report):
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(1_000_000)))
    order = ["postgres", "redis", "api", "worker", "worker"]
    random.Random(seed).shuffle(order)
    print(f"restart order (FAULTS_SEED={seed}): {order}")
    async with Stack(tmp_path, workers=2) as stack, stack.client(give_up=120) as client:
        load = asyncio.create_task(client.load([f"w{i}" for i in range(30)], 20, concurrency=8))
        await eventually(lambda: _tries(client, 200), 60, "load did not start")

        # everything dies at once
        assert stack.api is not None
        stack.api.kill9()
        stack.retired.append(stack.api)
        stack.api = None
        for proc, _port in list(stack.workers.values()):
            stack.retire(proc)
        stack.pg_server.kill9()
        stack.redis_server.kill9()
        crashed = time.monotonic()
        await asyncio.sleep(1.0)

        for part in order:  # Redis comes back empty: it keeps nothing
            {"postgres": stack.pg_server.start, "redis": stack.redis_server.start,
             "api": stack.start_api, "worker": stack.start_worker}[part]()
            await asyncio.sleep(0.5)
        stack.wait_ready()

        await load
        drained = await stack.wait_drained(120)
        converged = time.monotonic() - crashed
        figures = await check(stack, client.ledger)
        answered = client.ledger.statuses()
        report(**figures, seed=seed, order="/".join(order), converged_after_crash_s=round(
            converged, 1), drain_wait_s=round(drained, 1), unanswered_tries=answered[None])


async def _tries(client: Client, n: int) -> bool:
    return len(client.ledger.tries) >= n
