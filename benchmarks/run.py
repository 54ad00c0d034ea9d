"""`make bench`: figures for the pure core and for the whole path, printed, never asserted.

    python -m benchmarks.run [--events N] [--executions N] [--workers N] [--concurrency N]

The end-to-end part starts the API and workers as processes against a fresh database
(created on FLOWRT_BENCH_DATABASE_URL's server, default the local PostgreSQL) and a
fresh Redis key prefix, sends events concurrently, and reports append latency,
throughput, and appended→processed latency read back from the log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from flowrt.events import STARTED, ActionRecord, Event, RecordedEvent
from flowrt.machine import Snapshot, apply, decide, replay
from flowrt.settings import Settings, child_environ

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def bench_core(n: int) -> None:
    from benchmarks.app import app

    wf = app.workflows[0]
    snap = Snapshot()
    log: list[RecordedEvent] = []
    t0 = time.perf_counter()
    for seq in range(1, n + 1):
        event = Event(seq=seq, event_id=str(seq), name=STARTED if seq == 1 else "tick", payload={})
        decision = decide(wf, snap, event)
        records = [ActionRecord(name=a, ok=True, result={"n": seq}) for a in decision.actions]
        snap, outcome = apply(wf, snap, event, decision, records)
        log.append(RecordedEvent(event=event, outcome=outcome))
    live = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = replay(wf, log)
    folded = time.perf_counter() - t0
    assert result.matches and result.snapshot == snap
    print(f"core: decide+apply {n / live:,.0f} events/s ({live / n * 1e6:.1f} us/event);"
          f" replay {n / folded:,.0f} events/s ({folded * 1e3:.1f} ms for {n} events)")


async def _post_loop(port: int, todo: list[str], latencies: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection posting events until ``todo`` is empty.

    A minimal client on purpose: httpx costs about a millisecond of CPU per request,
    which on a small machine would measure the client instead of flowrt.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"name":"tick"}'
    try:
        while todo:
            x = todo.pop()
            t = time.perf_counter()
            writer.write(b"POST /v1/executions/" + x.encode() + b"/events HTTP/1.1\r\n"
                         b"Host: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if b" 202 " not in status:
                raise RuntimeError(f"append failed: {status!r}")
    finally:
        writer.close()
        await writer.wait_closed()


async def _register(s: Settings) -> None:
    from flowrt.store import Database
    from flowrt.store.definitions import DefinitionStore
    from benchmarks.app import app

    async with Database(s.database_url) as db:
        await DefinitionStore(db).register(s.tenant, app.workflows[0])


async def bench_e2e(executions: int, events: int, workers: int, concurrency: int) -> None:
    server = os.environ.get("FLOWRT_BENCH_DATABASE_URL",
                            "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("FLOWRT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"flowrt_bench_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    port = 18000 + secrets.randbelow(2000)
    s = Settings(database_url=url, redis_url=redis_url, redis_prefix=f"bench-{name}", port=port,
                 metrics_port=0, concurrency=32)
    env = child_environ(s, FLOWRT_LOG_LEVEL="warning")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([str(BIN / "flowrt"), "migrate"], env=env, check=True, capture_output=True)
        await _register(s)
        procs.append(subprocess.Popen([str(BIN / "flowrt"), "api"], env=env, cwd=ROOT))
        for _ in range(workers):
            procs.append(subprocess.Popen([str(BIN / "flowrt-worker"), "--app",
                                           "benchmarks.app:app"], env=env, cwd=ROOT))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            ids = [f"b-{i}" for i in range(executions)]
            for x in ids:
                r = await client.post("/v1/executions", json={"workflow": "counter",
                                                              "execution_id": x})
                r.raise_for_status()
            latencies: list[float] = []
            todo = [ids[i % executions] for i in range(events)]
            t0 = time.perf_counter()
            await asyncio.gather(*(_post_loop(port, todo, latencies) for _ in range(concurrency)))
            appended = time.perf_counter() - t0
            conn = await asyncpg.connect(url)
            while workers and await conn.fetchval(
                    "SELECT count(*) FROM executions WHERE processed_seq < last_seq"):
                await asyncio.sleep(0.05)
            drained = time.perf_counter() - t0
            lat = [r[0] for r in await conn.fetch(
                "SELECT extract(epoch FROM p.processed_at - e.created_at)::float8"
                " FROM events e JOIN event_processing p USING (tenant_id, execution_id, seq)"
                " WHERE e.name = 'tick' AND p.processed_at IS NOT NULL")] or [0.0]
            await conn.close()
        print(f"e2e: {events} events over {executions} executions, {workers} workers,"
              f" {concurrency} concurrent clients")
        print(f"  append: {events / appended:,.0f} events/s; latency p50"
              f" {_pct(latencies, 50) * 1e3:.1f} ms, p99 {_pct(latencies, 99) * 1e3:.1f} ms")
        print(f"  processed: all {events} in {drained:.2f} s ({events / drained:,.0f} events/s);"
              f" appended->processed p50 {statistics.median(lat) * 1e3:.1f} ms,"
              f" p99 {_pct(lat, 99) * 1e3:.1f} ms")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        import redis.asyncio as aioredis

        r = aioredis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=f"{s.redis_prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--core-events", type=int, default=20000)
    args = parser.parse_args()
    bench_core(args.core_events)
    asyncio.run(bench_e2e(args.executions, args.events, args.workers, args.concurrency))


if __name__ == "__main__":
    main()
