"""The per-execution lock: SET NX PX with a token; only the holder extends or releases."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from flowrt.bus import Bus, Keys, Lock
from flowrt.errors import BusUnavailable

from .conftest import closed_port

TENANT, XID = "default", "x1"


async def test_acquire_is_exclusive(bus: Bus, redis_client: aioredis.Redis) -> None:
    a = bus.lock(TENANT, XID, 5.0)
    b = bus.lock(TENANT, XID, 5.0)
    assert isinstance(a, Lock) and a.key == bus.keys.lock(TENANT, XID)
    assert a.token != b.token

    assert await a.acquire() is True
    assert await b.acquire() is False
    # idempotent for the holder: a retried acquire (its first reply lost) confirms it
    assert await a.acquire() is True
    assert await redis_client.get(a.key) == a.token
    assert 4000 < await redis_client.pttl(a.key) <= 5000

    # another execution is a different lock
    assert await bus.lock(TENANT, "x2", 5.0).acquire() is True
    assert await bus.lock("other", XID, 5.0).acquire() is True


async def test_holder_extends_and_releases(bus: Bus, redis_client: aioredis.Redis) -> None:
    a = bus.lock(TENANT, XID, 1.0)
    assert await a.acquire()
    await redis_client.pexpire(a.key, 100)
    assert await a.extend() is True
    assert 900 < await redis_client.pttl(a.key) <= 1000
    assert await redis_client.get(a.key) == a.token

    assert await a.release() is True
    assert await redis_client.exists(a.key) == 0
    assert await a.release() is False  # already released
    assert await a.extend() is False   # nothing to extend
    assert await redis_client.exists(a.key) == 0


async def test_non_holder_cannot_extend_or_release(bus: Bus, redis_client: aioredis.Redis) -> None:
    a = bus.lock(TENANT, XID, 0.5)
    intruder = bus.lock(TENANT, XID, 60.0)
    assert await a.acquire()

    assert await intruder.extend() is False
    assert await redis_client.get(a.key) == a.token
    assert await redis_client.pttl(a.key) <= 500

    assert await intruder.release() is False
    assert await redis_client.get(a.key) == a.token
    assert await redis_client.pttl(a.key) <= 500
    assert await a.release() is True


async def test_lock_expires_after_ttl(bus: Bus, redis_client: aioredis.Redis) -> None:
    a = bus.lock(TENANT, XID, 0.3)
    b = bus.lock(TENANT, XID, 5.0)
    assert await a.acquire()
    assert await b.acquire() is False
    await asyncio.sleep(0.45)
    assert await redis_client.exists(a.key) == 0
    assert await b.acquire() is True
    assert await redis_client.get(b.key) == b.token


async def test_expired_holder_cannot_touch_the_new_holders_lock(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    a = bus.lock(TENANT, XID, 0.3)
    b = bus.lock(TENANT, XID, 5.0)
    assert await a.acquire()
    await asyncio.sleep(0.45)
    assert await b.acquire() is True

    assert await a.release() is False
    assert await a.extend() is False
    assert await redis_client.get(b.key) == b.token
    assert 4000 < await redis_client.pttl(b.key) <= 5000
    assert await b.extend() is True
    assert await b.release() is True


async def test_lock_on_closed_port_is_bus_unavailable() -> None:
    async with Bus(f"redis://127.0.0.1:{closed_port()}/0", Keys("flowrt-test-dead"),
                   timeout=1.0) as dead:
        lock = dead.lock(TENANT, XID, 1.0)
        with pytest.raises(BusUnavailable):
            await lock.acquire()
        with pytest.raises(BusUnavailable):
            await lock.extend()
        with pytest.raises(BusUnavailable):
            await lock.release()
