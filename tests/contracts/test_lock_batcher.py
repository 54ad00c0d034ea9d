"""Batched lock work (LockBatcher, Bus.acquire_many/finish_many): a worker's concurrent
jobs take their locks, and ack their hints with the release, in one pipeline each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from flowrt.bus import Bus, Keys
from flowrt.bus.batcher import LockBatcher
from tests.support.servers import private_redis


async def test_acquire_many_and_finish_many_act_on_each_lock(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    held = bus.lock("t", "held", 5.0)
    assert await held.acquire()
    locks = [bus.lock("t", f"x{i}", 5.0) for i in range(3)] + [bus.lock("t", "held", 5.0)]
    assert await bus.acquire_many(locks) == [True, True, True, False]
    assert await redis_client.exists(locks[3].wake) == 1  # the holder will look again
    for i in range(3):
        await redis_client.xadd(bus.keys.stream, {"t": "t", "x": f"x{i}", "s": "1"})
    deliveries = await bus.read("c", count=10, block_ms=100)
    ids = [d.message_id for d in deliveries]
    results = await bus.finish_many([(locks[0], ids[:2]), (locks[1], ids[2:]),
                                     (bus.lock("t", "x2", 5.0), []), (held, [])])
    assert results == [(True, False), (True, False), (False, False), (True, True)]
    assert await redis_client.xlen(bus.keys.stream) == 0  # acked and deleted
    assert [await redis_client.exists(lock.key) for lock in locks] == [0, 0, 1, 0]


async def test_concurrent_jobs_through_the_batcher(bus: Bus,
                                                   redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    batcher = LockBatcher(bus, max_batch=8)
    await batcher.start()
    try:
        locks = [bus.lock("t", f"j{i % 10}", 5.0) for i in range(20)]  # two per execution
        got = await asyncio.gather(*(batcher.acquire(lock) for lock in locks))
        assert sum(got) == 10  # one holder per execution
        assert all(got[i] != got[i + 10] for i in range(10))
        done = await asyncio.gather(*(batcher.finish(lock, []) for lock, ok in zip(
            locks, got, strict=True) if ok))
        assert all(released and woken for released, woken in done)  # the losers woke them
    finally:
        await batcher.close()
    assert await redis_client.keys(f"{bus.keys.lock('t', '*')}") == []


async def test_a_redis_that_lost_the_scripts_gets_them_again(tmp_path: Path) -> None:
    # SCRIPT FLUSH only on a private server: the shared one is never flushed
    with private_redis(tmp_path) as server:
        async with Bus(server.url, Keys("p"), timeout=3.0) as bus:
            await bus.ensure_group()
            client = aioredis.from_url(server.url)
            try:
                await client.script_flush()
                locks = [bus.lock("t", f"x{i}", 5.0) for i in range(3)]
                assert await bus.acquire_many(locks) == [True, True, True]
                await client.script_flush()
                assert await bus.finish_many([(lock, []) for lock in locks]) == [
                    (True, False)] * 3
                assert await client.keys("p:lock:*") == []
            finally:
                await client.aclose()
