"""The sections that drive flowrt over HTTP: ingest, end-to-end (with the moderate-load
run and the resources), and process completions.

Throughput and accept->processed latency are read back from the log: an event's
``created_at`` is when its append began (the API's transaction), its
``processed_at`` when the worker's fenced commit began; both come from the one
PostgreSQL clock.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

from .load import run_load
from .profile import Profile
from .report import latency_summary
from .stack import Servers, Stack

__all__ = ["bench_completions", "bench_e2e", "bench_ingest"]

Request = list[str]


def start(workflow: str, execution_id: str) -> Request:
    return ["/v1/executions", json.dumps({"workflow": workflow, "execution_id": execution_id})]


def event(execution_id: str, name: str) -> Request:
    return [f"/v1/executions/{execution_id}/events", json.dumps({"name": name})]


async def _start_all(stack: Stack, clients: int, workflow: str, ids: list[str]) -> None:
    await run_load({"port": stack.port, "key": stack.key, "concurrency": clients,
                    "mode": "closed", "sequences": [[start(workflow, x)] for x in ids]})


def _span(first: datetime, last: datetime) -> float:
    return (last - first).total_seconds()


async def bench_ingest(servers: Servers, p: Profile) -> dict[str, Any]:
    """C clients post events for T seconds to the API alone (no worker running)."""
    async with Stack(servers, "ingest", workers=0) as stack:
        ids = [f"i-{n}" for n in range(p.ingest_executions)]
        await _start_all(stack, p.clients, "counter", ids)
        cpu0, t0 = await stack.cpu(), time.perf_counter()
        result = await run_load({
            "port": stack.port, "key": stack.key, "concurrency": p.clients, "mode": "timed",
            "requests": [event(x, "tick") for x in ids], "warmup": p.ingest_warmup,
            "duration": p.ingest_seconds})
        cpu1, wall = await stack.cpu(), time.perf_counter() - t0
        # every accepted event, warm-up included, for the CPU each one cost
        logged = await stack.conn.fetchval("SELECT count(*) FROM events WHERE name = 'tick'")
        rss = stack.peak_rss()
    used = {"api": cpu1["api"] - cpu0["api"], "postgres": cpu1["postgres"] - cpu0["postgres"],
            "redis": cpu1["redis"] - cpu0["redis"], "load generator": result["cpu_s"]}
    return {"clients": p.clients, "workers": 0, "executions": len(ids),
            "seconds": p.ingest_seconds, "warmup": p.ingest_warmup,
            "accepted_per_s": result["ok_per_s"], "latency_ms": result["latency_ms"],
            "events_logged": logged, "api_rss_mib": round(rss["api"], 1),
            "cpu_s_per_1000_events": {k: round(v / logged * 1000, 3) for k, v in used.items()},
            "busy_cores": round(sum(used.values()) / wall, 2)}


async def _log_latencies(stack: Stack, where: str, *args: Any) -> tuple[float, list[float], int]:
    """(seconds from first accept to last processed, accept->processed latencies, count)."""
    rows = await stack.conn.fetch(
        "SELECT e.created_at, p.processed_at FROM events e"
        " JOIN event_processing p USING (tenant_id, execution_id, seq)"
        f" WHERE {where}", *args)
    if not rows or any(r["processed_at"] is None for r in rows):
        raise RuntimeError(f"{stack.name}: events without processed_at")
    span = _span(min(r["created_at"] for r in rows), max(r["processed_at"] for r in rows))
    return span, [_span(r["created_at"], r["processed_at"]) for r in rows], len(rows)


async def bench_e2e(servers: Servers, p: Profile, workers: int) -> dict[str, Any]:
    """E executions x K events through the API and ``workers`` workers; with 2 workers
    also the moderate-load run and the resources."""
    async with Stack(servers, f"e2e_w{workers}", workers=workers) as stack:
        ids = [f"c-{n}" for n in range(p.e2e_executions)]
        await _start_all(stack, p.clients, "counter", ids)
        await stack.wait_processed()  # the workers are warm, the executions exist
        total = p.e2e_executions * p.e2e_events
        passes = "SELECT sum(lease_epoch)::bigint FROM executions"  # each pass takes a lease
        passes0 = await stack.conn.fetchval(passes)
        cpu0, t0 = await stack.cpu(), time.perf_counter()
        posted = await run_load({
            "port": stack.port, "key": stack.key, "concurrency": p.clients, "mode": "closed",
            "sequences": [[event(ids[i % len(ids)], "tick")] for i in range(total)]})
        await stack.wait_processed()
        cpu1, wall = await stack.cpu(), time.perf_counter() - t0
        span, latencies, n = await _log_latencies(stack, "e.seq > 1")
        resources = _resources(stack, cpu0, cpu1, wall, n, posted["cpu_s"])
        figures: dict[str, Any] = {
            "workers": workers, "executions": len(ids), "events_per_execution": p.e2e_events,
            "events": n, "clients": p.clients, "processed_per_s": round(n / span, 1),
            "latency_ms": latency_summary(latencies), "posted_per_s": posted["ok_per_s"],
            "accept_ms": posted["latency_ms"],
            "events_per_pass": round(n / (await stack.conn.fetchval(passes) - passes0), 2),
            "cpu_s_per_1000_events": resources["cpu_s_per_1000_events"],
            "busy_cores": resources["busy_cores"]}
        extra: dict[str, Any] = {}
        if workers == 2:
            extra["resources"] = resources
            maximum = figures["processed_per_s"]
            # The statistics autovacuum gathers within its minute: this database is
            # seconds old, and plans cached while its tables were empty made the lease
            # cost 460 µs of PostgreSQL time instead of 130 (docs/performance.md).
            await stack.conn.execute("ANALYZE")
            extra["moderate"] = await _open_loop(stack, p, ids, maximum, p.moderate_share,
                                                 p.moderate_seconds)
            extra["light"] = await _open_loop(stack, p, ids, maximum, p.light_share,
                                              p.light_seconds)
    return {"run": figures, **extra}


def _resources(stack: Stack, cpu0: dict[str, float], cpu1: dict[str, float], wall: float,
               events: int, load_cpu: float) -> dict[str, Any]:
    used = {k: cpu1[k] - cpu0[k] for k in cpu0}
    workers = sum(v for k, v in used.items() if k.startswith("worker"))
    per_k = {"api": used["api"], "workers": workers, "postgres": used["postgres"],
             "redis": used["redis"], "load generator": load_cpu}
    total = sum(per_k.values())
    return {"workers": len(stack.worker_procs), "events": events, "wall_s": round(wall, 2),
            "cpu_s": {k: round(v, 2) for k, v in used.items()},
            "cpu_s_per_1000_events": {k: round(v / events * 1000, 3) for k, v in per_k.items()},
            "busy_cores": round(total / wall, 2), "cores": os.cpu_count() or 1,
            "rss_mib": {k: round(v, 1) for k, v in stack.peak_rss().items()}}


async def _open_loop(stack: Stack, p: Profile, ids: list[str], maximum: float, share: float,
                     seconds: float) -> dict[str, Any]:
    """Open loop at a share of the measured maximum: latency when not saturated."""
    rate = round(maximum * share)
    mark = await stack.conn.fetchval("SELECT clock_timestamp()")
    sent = await run_load({
        "port": stack.port, "key": stack.key, "concurrency": p.clients, "mode": "rate",
        "rate": rate, "duration": seconds, "requests": [event(x, "tick") for x in ids]})
    await stack.wait_processed()
    _span_s, latencies, n = await _log_latencies(stack, "e.created_at >= $1", mark)
    return {"workers": len(stack.worker_procs), "rate_per_s": rate, "share_of_max": share,
            "seconds": seconds, "events": n, "latency_ms": latency_summary(latencies),
            "accept_ms": sent["latency_ms"]}


async def bench_completions(servers: Servers, p: Profile, workers: int = 2) -> dict[str, Any]:
    """Executions that start (entry action), take ``finish`` (action) and complete."""
    async with Stack(servers, "completions", workers=workers) as stack:
        warm = [f"w-{n}" for n in range(20)]
        ids = [f"p-{n}" for n in range(p.completions)]
        passes = "SELECT coalesce(sum(lease_epoch), 0)::bigint FROM executions"

        async def run(batch: list[str]) -> dict[str, Any]:
            posted = await run_load({
                "port": stack.port, "key": stack.key, "concurrency": p.clients,
                "mode": "closed",
                "sequences": [[start("twostep", x), event(x, "finish")] for x in batch]})
            await stack.wait_processed()
            return posted

        await run(warm)
        passes0, cpu0, t0 = (await stack.conn.fetchval(passes), await stack.cpu(),
                             time.perf_counter())
        posted = await run(ids)
        cpu1, wall = await stack.cpu(), time.perf_counter() - t0
        # per 1,000 executions, each 2 events: CPU-ms per execution
        resources = _resources(stack, cpu0, cpu1, wall, len(ids), posted["cpu_s"])
        passes_per = (await stack.conn.fetchval(passes) - passes0) / len(ids)
        rows = await stack.conn.fetch(
            "SELECT x.status, e.created_at AS started, x.updated_at AS finished"
            " FROM executions x JOIN events e USING (tenant_id, execution_id)"
            " WHERE e.seq = 1 AND x.execution_id LIKE 'p-%'")
    if len(rows) != len(ids) or any(r["status"] != "completed" for r in rows):
        raise RuntimeError("completions: not every execution completed")
    span = _span(min(r["started"] for r in rows), max(r["finished"] for r in rows))
    return {"workers": workers, "executions": len(rows), "clients": p.clients,
            "completed_per_s": round(len(rows) / span, 1),
            "latency_ms": latency_summary([_span(r["started"], r["finished"]) for r in rows]),
            "passes_per_execution": round(passes_per, 2),
            "cpu_s_per_1000": resources["cpu_s_per_1000_events"],
            "busy_cores": resources["busy_cores"]}
