"""HintBatcher: concurrent requests' hints published together, each caller told its fate."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from flowrt.bus import Bus, Keys
from flowrt.bus.batcher import HintBatcher
from flowrt.errors import BusUnavailable
from flowrt.events import Hint

from .conftest import closed_port


def _hint(i: int) -> Hint:
    return Hint(tenant="t", execution_id=f"x{i}", seq=i)


async def test_concurrent_hints_all_arrive_in_order_of_arrival(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    batcher = HintBatcher(bus, max_batch=16)
    await batcher.start()
    try:
        await asyncio.gather(*(batcher.publish(_hint(i)) for i in range(50)))
        await batcher.publish(_hint(50))  # and one alone
    finally:
        await batcher.close()
    entries = await redis_client.xrange(bus.keys.stream)
    assert [int(fields["s"]) for _id, fields in entries] == list(range(51))


async def test_a_failed_publish_fails_every_waiter_of_its_batch() -> None:
    async with Bus(f"redis://127.0.0.1:{closed_port()}/0", Keys("down"), timeout=0.5) as down:
        batcher = HintBatcher(down)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.publish(_hint(i)) for i in range(5)),
                                           return_exceptions=True)
        finally:
            await batcher.close()
    assert all(isinstance(r, BusUnavailable) for r in results), results


async def test_a_caller_that_gives_up_leaves_the_others_alone(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    batcher = HintBatcher(bus)
    await batcher.start()
    try:
        impatient = asyncio.create_task(batcher.publish(_hint(1)))
        impatient.cancel()  # e.g. FLOWRT_PUBLISH_TIMEOUT passed
        await batcher.publish(_hint(2))
    finally:
        await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    seqs = [int(f["s"]) for _id, f in await redis_client.xrange(bus.keys.stream)]
    assert 2 in seqs


async def test_not_started_refuses(bus: Bus) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await HintBatcher(bus).publish(_hint(1))
