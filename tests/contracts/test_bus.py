"""Bus: the stream of wake-up hints, read in one consumer group; acks delete, idle hints are
reclaimed, poison hints are dead-lettered."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc

from flowrt.bus import Bus, Delivery, Keys
from flowrt.bus.keys import GROUP
from flowrt.errors import BusUnavailable
from flowrt.events import Hint
from flowrt.settings import Settings

from .conftest import closed_port

BLOCK_MS = 50


def _hint(i: int = 1) -> Hint:
    return Hint(tenant="default", execution_id=f"x{i}", seq=i)


async def _pending(client: aioredis.Redis, keys: Keys) -> dict[str, dict]:
    rows = await client.xpending_range(keys.stream, GROUP, "-", "+", 1000)
    return {r["message_id"]: r for r in rows}


async def test_ensure_group_is_idempotent(bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.ensure_group()
    groups = await redis_client.xinfo_groups(bus.keys.stream)
    assert [g["name"] for g in groups] == [GROUP]
    assert await redis_client.xlen(bus.keys.stream) == 0


async def test_ensure_group_does_not_skip_earlier_hints(bus: Bus) -> None:
    await bus.publish([_hint(1)])  # published before the group exists
    await bus.ensure_group()
    got = await bus.read("a", 10, BLOCK_MS)
    assert [d.hint for d in got] == [_hint(1)]


async def test_publish_then_read(bus: Bus) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    await bus.publish([_hint(2), _hint(3)])
    got = await bus.read("a", 10, BLOCK_MS)
    assert [d.hint for d in got] == [_hint(1), _hint(2), _hint(3)]
    assert all(isinstance(d, Delivery) and d.deliveries == 1 and d.message_id for d in got)
    assert len({d.message_id for d in got}) == 3
    # nothing new for another consumer of the group
    assert await bus.read("b", 10, BLOCK_MS) == []


async def test_read_respects_count(bus: Bus) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(i) for i in range(1, 6)])
    first = await bus.read("a", 2, BLOCK_MS)
    rest = await bus.read("b", 10, BLOCK_MS)
    assert [d.hint.seq for d in first if d.hint] == [1, 2]
    assert [d.hint.seq for d in rest if d.hint] == [3, 4, 5]


async def test_unreadable_fields_give_no_hint(bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await redis_client.xadd(bus.keys.stream, {"garbage": "1"})
    await redis_client.xadd(bus.keys.stream, {"t": "default", "x": "x1", "s": "not-a-number"})
    got = await bus.read("a", 10, BLOCK_MS)
    assert [d.hint for d in got] == [None, None]


async def test_ack_deletes_and_clears_pending(bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1), _hint(2)])
    got = await bus.read("a", 10, BLOCK_MS)
    assert await bus.stats() == (2, 2)

    assert await bus.ack([got[0].message_id]) == 1
    assert await redis_client.xlen(bus.keys.stream) == 1
    assert list(await _pending(redis_client, bus.keys)) == [got[1].message_id]
    assert await bus.stats() == (1, 1)

    assert await bus.ack([got[1].message_id]) == 1
    assert await redis_client.xlen(bus.keys.stream) == 0
    assert await _pending(redis_client, bus.keys) == {}
    assert await bus.stats() == (0, 0)

    assert await bus.ack([]) == 0
    assert await bus.ack([got[0].message_id]) == 0  # already acked


async def test_finish_acks_and_releases_only_our_lock(bus: Bus,
                                                     redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1), _hint(2), _hint(3)])
    got = await bus.read("a", 10, BLOCK_MS)
    mine = bus.lock("t", "x1", 5.0)
    assert await mine.acquire()
    assert await bus.finish(mine, [got[0].message_id, got[1].message_id]) == (True, False)
    assert await redis_client.exists(mine.key) == 0
    assert list(await _pending(redis_client, bus.keys)) == [got[2].message_id]
    assert await redis_client.xlen(bus.keys.stream) == 1

    # a lock that is no longer ours stays; the hints are acked all the same
    theirs = bus.lock("t", "x1", 5.0)
    assert await theirs.acquire()
    assert await bus.finish(mine, [got[2].message_id]) == (False, False)
    assert await redis_client.get(theirs.key) == theirs.token
    assert await _pending(redis_client, bus.keys) == {}
    assert await bus.finish(theirs, []) == (True, False)


async def test_a_worker_finding_the_lock_held_wakes_the_holder(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    holder = bus.lock("t", "x1", 5.0)
    assert await holder.acquire()
    assert await redis_client.exists(holder.wake) == 0  # taking it raises nothing
    other = bus.lock("t", "x1", 5.0)
    assert not await other.acquire()  # leaves its hints to the holder: raises the flag
    assert 0 < await redis_client.pttl(holder.wake) <= 5000  # gone with a dead holder
    assert await bus.finish(holder, []) == (True, True)
    assert await redis_client.exists(holder.wake) == 0  # taken
    assert await other.acquire()
    assert await bus.finish(other, []) == (True, False)


async def test_reclaim_takes_over_idle_hints_and_counts_deliveries(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    [first] = await bus.read("a", 10, BLOCK_MS)

    # not idle long enough yet
    assert await bus.reclaim("b", 60_000) == ([], [])

    await asyncio.sleep(0.15)
    claimed, deleted = await bus.reclaim("b", 100)
    assert deleted == []
    assert claimed == [Delivery(message_id=first.message_id, hint=_hint(1), deliveries=2)]
    pending = await _pending(redis_client, bus.keys)
    assert pending[first.message_id]["consumer"] == "b"
    assert pending[first.message_id]["times_delivered"] == 2

    await asyncio.sleep(0.15)
    claimed, _ = await bus.reclaim("c", 100)
    assert claimed == [Delivery(message_id=first.message_id, hint=_hint(1), deliveries=3)]
    assert (await _pending(redis_client, bus.keys))[first.message_id]["consumer"] == "c"


async def test_reclaim_pages_to_the_end(bus: Bus) -> None:
    await bus.ensure_group()
    hints = [_hint(i) for i in range(1, 26)]
    await bus.publish(hints)
    read = await bus.read("a", 100, BLOCK_MS)
    assert len(read) == 25

    await asyncio.sleep(0.15)
    claimed, deleted = await bus.reclaim("b", 100, page=10)
    assert deleted == []
    assert [d.message_id for d in claimed] == [d.message_id for d in read]
    assert [d.hint for d in claimed] == hints
    assert {d.deliveries for d in claimed} == {2}


async def test_reclaim_reports_pending_ids_whose_entries_were_deleted(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1), _hint(2)])
    gone, kept = await bus.read("a", 10, BLOCK_MS)
    await redis_client.xdel(bus.keys.stream, gone.message_id)
    await asyncio.sleep(0.15)
    claimed, deleted = await bus.reclaim("b", 100)
    assert deleted == [gone.message_id]
    assert [d.message_id for d in claimed] == [kept.message_id]
    assert list(await _pending(redis_client, bus.keys)) == [kept.message_id]


async def test_touch_resets_idle_without_counting_a_delivery(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    [d] = await bus.read("a", 10, BLOCK_MS)
    await asyncio.sleep(0.3)
    before = (await _pending(redis_client, bus.keys))[d.message_id]
    assert before["time_since_delivered"] >= 300 and before["times_delivered"] == 1

    await bus.touch("a", [d.message_id])

    after = (await _pending(redis_client, bus.keys))[d.message_id]
    assert after["time_since_delivered"] < 200
    assert after["times_delivered"] == 1
    assert after["consumer"] == "a"
    # so a reclaim with an idle bound it exceeded before the touch takes nothing
    assert await bus.reclaim("b", 250) == ([], [])
    await bus.touch("a", [])  # no-op


async def test_dead_letter_moves_the_hint(bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(7), _hint(8)])
    [d, other] = await bus.read("a", 10, BLOCK_MS)
    await asyncio.sleep(0.15)
    [d, other], _ = await bus.reclaim("b", 100)
    assert d.deliveries == 2

    await bus.dead_letter(d, "poison: boom")

    dead = await redis_client.xrange(bus.keys.dead)
    assert len(dead) == 1
    assert dead[0][1] == {"t": "default", "x": "x7", "s": "7", "id": d.message_id,
                          "deliveries": "2", "reason": "poison: boom"}
    assert [mid for mid, _ in await redis_client.xrange(bus.keys.stream)] == [other.message_id]
    assert list(await _pending(redis_client, bus.keys)) == [other.message_id]
    assert await bus.stats() == (1, 1)


async def test_dead_letter_of_an_unreadable_hint(bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await redis_client.xadd(bus.keys.stream, {"junk": "1"})
    [d] = await bus.read("a", 10, BLOCK_MS)
    assert d.hint is None
    await bus.dead_letter(d, "unreadable")
    [(_, fields)] = await redis_client.xrange(bus.keys.dead)
    assert fields == {"t": "", "x": "", "s": "0", "id": d.message_id, "deliveries": "1",
                      "reason": "unreadable"}
    assert await bus.stats() == (0, 0)


async def test_lost_group_raises_nogroup_and_is_recreated(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    await redis_client.delete(bus.keys.stream)

    with pytest.raises(rexc.ResponseError, match="NOGROUP"):
        await bus.read("a", 10, BLOCK_MS)
    assert await bus.stats() == (0, 0)

    await bus.ensure_group()
    assert [g["name"] for g in await redis_client.xinfo_groups(bus.keys.stream)] == [GROUP]
    assert await bus.read("a", 10, BLOCK_MS) == []
    await bus.publish([_hint(2)])
    assert [d.hint for d in await bus.read("a", 10, BLOCK_MS)] == [_hint(2)]


async def test_stats(bus: Bus) -> None:
    assert await bus.stats() == (0, 0)  # no stream, no group
    await bus.ensure_group()
    assert await bus.stats() == (0, 0)
    await bus.publish([_hint(i) for i in range(1, 4)])
    assert await bus.stats() == (3, 0)
    await bus.read("a", 2, BLOCK_MS)
    assert await bus.stats() == (3, 2)


async def test_settings_bus_uses_the_prefix(settings: Settings,
                                            redis_client: aioredis.Redis) -> None:
    keys = Keys(settings.redis_prefix)
    assert keys.stream == f"{settings.redis_prefix}:hints"
    assert keys.dead == f"{settings.redis_prefix}:dead"
    assert keys.lock("t", "x") == f"{settings.redis_prefix}:lock:t:x"
    async with Bus(settings.redis_url, keys) as b:
        await b.ensure_group()
        await b.publish([_hint(1)])
    assert await redis_client.xlen(f"{settings.redis_prefix}:hints") == 1


async def test_closed_port_is_bus_unavailable() -> None:
    async with Bus(f"redis://127.0.0.1:{closed_port()}/0", Keys("flowrt-test-dead"),
                   timeout=1.0) as dead:
        with pytest.raises(BusUnavailable, match="Redis unavailable"):
            await dead.ping()
        with pytest.raises(BusUnavailable):
            await dead.publish([_hint(1)])
        with pytest.raises(BusUnavailable):
            await dead.publish([_hint(1), _hint(2)])
        with pytest.raises(BusUnavailable):
            await dead.read("a", 1, BLOCK_MS)
        with pytest.raises(BusUnavailable):
            await dead.stats()
        with pytest.raises(BusUnavailable) as info:
            await dead.ensure_group()
    assert info.value.retryable is True


async def test_not_started_and_closed(redis_server_url: str, redis_prefix: str) -> None:
    b = Bus(redis_server_url, Keys(redis_prefix))
    with pytest.raises(RuntimeError):
        _ = b.client
    await b.start()
    await b.close()
    with pytest.raises(RuntimeError):
        await b.start()


# --- the group's health: stale pending hints, consumers, pruning ------------------------


async def _consumers(client: aioredis.Redis, keys: Keys) -> dict[str, dict]:
    return {c["name"]: c for c in await client.xinfo_consumers(keys.stream, GROUP)}


async def test_prune_consumers_keeps_pending_and_fresh_deletes_idle_empty(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    [held] = await bus.read("busy", 10, BLOCK_MS)  # pending 1, as idle as the empty one
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "gone")
    await asyncio.sleep(0.3)
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "fresh")

    assert await bus.prune_consumers(200) == ["gone"]

    consumers = await _consumers(redis_client, bus.keys)
    assert set(consumers) == {"busy", "fresh"}
    assert consumers["busy"]["pending"] == 1
    assert list(await _pending(redis_client, bus.keys)) == [held.message_id]
    assert await bus.prune_consumers(200) == []  # busy still holds its hint


async def test_prune_consumers_deletes_a_consumer_once_its_hints_are_reclaimed(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    await bus.read("dead-worker", 10, BLOCK_MS)
    await asyncio.sleep(0.15)
    [claimed], _ = await bus.reclaim("live-worker", 100)
    assert await bus.prune_consumers(100) == ["dead-worker"]
    assert set(await _consumers(redis_client, bus.keys)) == {"live-worker"}
    assert list(await _pending(redis_client, bus.keys)) == [claimed.message_id]


async def test_prune_consumers_without_stream_or_group(bus: Bus,
                                                       redis_client: aioredis.Redis) -> None:
    assert await bus.prune_consumers(0) == []  # no stream
    await redis_client.xadd(bus.keys.stream, {"t": "default", "x": "x1", "s": "1"})
    assert await bus.prune_consumers(0) == []  # a stream, no group


async def test_delete_consumer_only_when_nothing_is_pending(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    [d] = await bus.read("a", 10, BLOCK_MS)
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "b")

    assert await bus.delete_consumer("a") is False  # its hint would be lost with it
    assert await bus.delete_consumer("b") is True  # however recently it was seen
    assert await bus.delete_consumer("nobody") is False
    assert set(await _consumers(redis_client, bus.keys)) == {"a"}

    await bus.ack([d.message_id])
    assert await bus.delete_consumer("a") is True
    assert await _consumers(redis_client, bus.keys) == {}


async def test_consumers(bus: Bus, redis_client: aioredis.Redis) -> None:
    assert await bus.consumers() == []  # no stream, no group
    await bus.ensure_group()
    await bus.publish([_hint(1), _hint(2)])
    await bus.read("a", 10, BLOCK_MS)
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "b")
    got = {c.name: c for c in await bus.consumers()}
    assert set(got) == {"a", "b"}
    assert (got["a"].pending, got["b"].pending) == (2, 0)
    assert all(c.idle_ms >= 0 for c in got.values())


async def test_stale_pending_counts_idle_hints_with_what_they_carry(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    assert await bus.stale_pending(0, 10) == (0, [])  # no stream, no group
    await bus.ensure_group()
    await bus.publish([_hint(i) for i in range(1, 5)])
    old = await bus.read("ghost", 3, BLOCK_MS)
    [fresh] = await bus.read("live", 10, BLOCK_MS)
    ids = [d.message_id for d in old]
    # idle for a minute, as if ghost died then; XCLAIM with IDLE counts a delivery
    await redis_client.xclaim(bus.keys.stream, GROUP, "ghost", 0, ids, idle=60_000)
    await redis_client.xdel(bus.keys.stream, ids[2])  # pending, its entry gone

    count, examples = await bus.stale_pending(30_000, 10)
    assert count == 3
    assert [p.message_id for p in examples] == ids
    assert [p.hint for p in examples] == [_hint(1), _hint(2), None]
    assert {p.consumer for p in examples} == {"ghost"}
    assert all(p.idle_ms >= 60_000 and p.deliveries == 2 for p in examples)
    assert fresh.message_id not in {p.message_id for p in examples}

    async def seen(min_idle_ms: int, examples: int, page: int = 1000) -> tuple[int, list[str]]:
        n, found = await bus.stale_pending(min_idle_ms, examples, page=page)
        return n, [p.message_id for p in found]

    assert await seen(30_000, 1) == (3, ids[:1])
    assert await seen(30_000, 0) == (3, [])
    assert await seen(30_000, 2, page=2) == (3, ids[:2])  # counted to the end
    assert await seen(30_000, 5, page=1) == (3, ids)
    assert await seen(0, 10) == (4, [*ids, fresh.message_id])


async def test_dead_letter_count(bus: Bus) -> None:
    assert await bus.dead_letter_count() == 0
    await bus.ensure_group()
    await bus.publish([_hint(1)])
    [d] = await bus.read("a", 10, BLOCK_MS)
    await bus.dead_letter(d, "poison")
    assert await bus.dead_letter_count() == 1


async def test_health_reads_against_closed_port_are_bus_unavailable() -> None:
    async with Bus(f"redis://127.0.0.1:{closed_port()}/0", Keys("flowrt-test-dead"),
                   timeout=1.0) as dead:
        for call in (dead.consumers(), dead.stale_pending(0, 1), dead.dead_letter_count(),
                     dead.prune_consumers(0), dead.delete_consumer("a")):
            with pytest.raises(BusUnavailable):
                await call
