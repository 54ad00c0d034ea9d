"""Floors: what the same servers do with the least work per event, from Python.

- INSERT + XADD: each client inserts one row per statement (autocommit, so one
  durable commit each) into a scratch table, then XADDs one hint-sized entry; one
  connection per client, as many clients as the ingest test.
- XREADGROUP + XACK: one consumer drains a stream of hint-sized entries in batches.
- Round trips: one request at a time to each server, back to back and then spaced
  out, so that the servers' processes are idle when it arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from .report import latency_summary
from .stack import Servers

__all__ = ["bench_floors"]

SCRATCH = "bench_floor"


async def _insert_xadd(servers: Servers, clients: int, warmup: float,
                       seconds: float) -> dict[str, Any]:
    await servers.admin(f'CREATE DATABASE "{SCRATCH}"')
    url = servers.database_url(SCRATCH)
    conns = [await asyncpg.connect(url) for _ in range(clients)]
    await conns[0].execute(
        "CREATE TABLE scratch (id bigserial PRIMARY KEY, execution_id text NOT NULL,"
        " name text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL"
        " DEFAULT now())")
    redis = aioredis.from_url(servers.redis.url)
    latencies: list[float] = []
    start = time.perf_counter()
    window = (start + warmup, start + warmup + seconds)

    async def client(i: int, conn: asyncpg.Connection) -> None:
        n = 0
        while (t := time.perf_counter()) < window[1]:
            x = f"floor-{i}-{n % 100}"
            await conn.execute("INSERT INTO scratch (execution_id, name, payload)"
                               " VALUES ($1, 'tick', '{}')", x)
            await redis.xadd("bench-floor:hints", {"t": "default", "x": x, "s": n})
            done = time.perf_counter()
            if window[0] <= done <= window[1]:
                latencies.append(done - t)
            n += 1

    try:
        await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()
        await redis.delete("bench-floor:hints")
        await redis.aclose()
    return {"insert_xadd_per_s": round(len(latencies) / seconds, 1),
            "insert_xadd_ms": latency_summary(latencies)}


async def _xread_xack(servers: Servers, messages: int, count: int) -> dict[str, Any]:
    redis = aioredis.from_url(servers.redis.url)
    stream, group = "bench-floor:drain", "workers"
    try:
        for first in range(0, messages, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + 1000, messages)):
                    pipe.xadd(stream, {"t": "default", "x": f"floor-{n % 100}", "s": n})
                await pipe.execute()
        await redis.xgroup_create(stream, group, id="0")
        t0 = time.perf_counter()
        done = 0
        while True:
            reply = await redis.xreadgroup(group, "floor", {stream: ">"}, count=count)
            ids = [mid for _stream, entries in reply or [] for mid, _fields in entries]
            if not ids:
                break
            await redis.xack(stream, group, *ids)
            done += len(ids)
        elapsed = time.perf_counter() - t0
    finally:
        await redis.delete(stream)
        await redis.aclose()
    return {"xread_count": count, "xread_messages": done,
            "xread_xack_per_s": round(done / elapsed, 1)}


async def _round_trips(servers: Servers, samples: int, gap: float) -> dict[str, Any]:
    """One request at a time to each server, p50: back to back, then ``gap`` s apart.
    The difference is what waking idle processes costs on this machine, and an event
    that arrives when little else runs pays it at each of its hops (moderate load)."""
    conn = await asyncpg.connect(servers.pg.url)
    redis = aioredis.from_url(servers.redis.url)

    async def p50(call: Callable[[], Awaitable[object]], pause: float) -> float:
        times: list[float] = []
        for _ in range(samples):
            t = time.perf_counter()
            await call()
            times.append(time.perf_counter() - t)
            if pause:
                await asyncio.sleep(pause)
        return latency_summary(times)["p50"]

    try:
        await conn.fetchval("SELECT 1")  # prepared once, as flowrt's statements are
        await redis.ping()
        figures = {name: {"back_to_back": await p50(call, 0.0),
                         "spaced": await p50(call, gap)}
                   for name, call in (("postgres", lambda: conn.fetchval("SELECT 1")),
                                      ("redis", redis.ping))}
    finally:
        await conn.close()
        await redis.aclose()
    return {"round_trip_gap_ms": gap * 1e3, "round_trip_p50_ms": figures}


async def bench_floors(servers: Servers, *, clients: int, warmup: float, seconds: float,
                       messages: int, count: int, round_trips: int,
                       gap: float) -> dict[str, Any]:
    figures: dict[str, Any] = {"concurrency": clients, "seconds": seconds}
    figures.update(await _insert_xadd(servers, clients, warmup, seconds))
    figures.update(await _xread_xack(servers, messages, count))
    figures.update(await _round_trips(servers, round_trips, gap))
    return figures
