"""Long history: does an event cost more when its execution's log is long?

Executions of the counter workflow are seeded through SQL with their whole log
already processed: the rows a worker would have written (outcomes computed by the
core with the ``record`` action's results, the projection they fold to), then
``VACUUM ANALYZE``, as a database that grew over time would be. Appending 20,000
events through the API and letting a worker process them would take minutes on two
cores, and measure ingest and processing again rather than history length.

Then, on a ``short`` execution (100 processed events) and a ``long`` one (20,000):

- batch: 200 events appended in one transaction (``flowrt_append_event``, the API's
  own statement, marked published), then one wake-up hint through flowrt's ``Bus``;
  per-event time = (last ``processed_at`` - when the hint was sent) / 200;
- one at a time: one event, one hint, wait until processed; accept->processed;
- ``flowrt replay`` of a long execution (exactly 20,000 events), run as a user would:
  the CLI as a subprocess, wall time including its start-up.

Short and long alternate in each round; the figures are medians over the rounds.
One worker processes (an execution's events are sequential by design).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from flowrt.bus import Bus, Keys
from flowrt.events import Hint
from flowrt.settings import child_environ

from .core import counter_log
from .profile import Profile
from .stack import BIN, ROOT, Servers, Stack

__all__ = ["bench_history"]

TENANT = "default"


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _seed(stack: Stack, execution_id: str, n: int) -> None:
    """One execution whose ``n`` events are all processed, as a worker leaves them."""
    snap, log = counter_log(n, execution_id)
    base = datetime.now(UTC) - timedelta(minutes=1, milliseconds=3 * n)
    conn = stack.conn
    await conn.execute(
        "INSERT INTO executions (tenant_id, execution_id, workflow, version, status, state,"
        " data, last_seq, processed_seq, request_hash, created_at, updated_at)"
        " VALUES ($1, $2, 'counter', 1, $3, $4, $5::jsonb, $6, $6, 'seed', $7, $8)",
        TENANT, execution_id, snap.status, snap.state, _json(snap.data), n, base,
        base + timedelta(milliseconds=3 * n + 2))
    events, outcomes = [], []
    for rec in log:
        e, o = rec.event, rec.outcome
        at = base + timedelta(milliseconds=3 * e.seq)
        done = at + timedelta(milliseconds=2)
        events.append((TENANT, execution_id, e.seq, uuid.uuid4(), e.name, _json(e.payload),
                       "seed", at))
        outcomes.append((TENANT, execution_id, e.seq, o.status, True, 1, "seed", o.from_state,
                         o.to_state, _json(msgspec.to_builtins(o.actions)), o.error, at, at,
                         done))
    await conn.copy_records_to_table(
        "events", records=events, columns=["tenant_id", "execution_id", "seq", "event_id",
                                           "name", "payload", "request_hash", "created_at"])
    await conn.copy_records_to_table(
        "event_processing", records=outcomes,
        columns=["tenant_id", "execution_id", "seq", "status", "published", "attempts",
                 "worker", "from_state", "to_state", "actions", "error", "created_at",
                 "started_at", "processed_at"])


async def _append(stack: Stack, execution_id: str, n: int) -> int:
    """Append ``n`` tick events in one transaction, as the API appends each; the last seq."""
    conn = stack.conn
    async with conn.transaction():
        await conn.executemany(
            "SELECT flowrt_append_event($1, $2, $3, 'tick', '{}'::jsonb, NULL, 'bench')",
            [(TENANT, execution_id, uuid.uuid4()) for _ in range(n)])
        # the API marks its published hints too; unmarked, the relay would resend them
        await conn.execute("UPDATE event_processing SET published = true"
                           " WHERE tenant_id = $1 AND execution_id = $2 AND NOT published",
                           TENANT, execution_id)
        last: int = await conn.fetchval("SELECT last_seq FROM executions"
                                        " WHERE tenant_id = $1 AND execution_id = $2",
                                        TENANT, execution_id)
    return last


async def _process(stack: Stack, bus: Bus, execution_id: str, n: int) -> float:
    """Append ``n`` events, wake a worker, wait: seconds from the hint to the last commit."""
    last = await _append(stack, execution_id, n)
    sent = await stack.conn.fetchval("SELECT clock_timestamp()")
    await bus.publish([Hint(tenant=TENANT, execution_id=execution_id, seq=last)])
    deadline = time.monotonic() + 120
    while await stack.conn.fetchval(
            "SELECT processed_seq < last_seq FROM executions"
            " WHERE tenant_id = $1 AND execution_id = $2", TENANT, execution_id):
        if time.monotonic() > deadline:
            raise RuntimeError(f"history: {execution_id} not processed after 120 s")
        await asyncio.sleep(0.005 if n == 1 else 0.02)
    done = await stack.conn.fetchval(
        "SELECT max(processed_at) FROM event_processing"
        " WHERE tenant_id = $1 AND execution_id = $2 AND seq > $3",
        TENANT, execution_id, last - n)
    return float((done - sent).total_seconds())


def _replay(stack: Stack, execution_id: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    run = subprocess.run([str(BIN / "flowrt"), "replay", execution_id], cwd=ROOT,
                         env=child_environ(stack.settings), capture_output=True, check=False)
    return time.perf_counter() - t0, run.returncode


async def bench_history(servers: Servers, p: Profile) -> dict[str, Any]:
    async with Stack(servers, "history", workers=1, api=False) as stack:
        pairs = [(f"short-{r}", f"long-{r}") for r in range(p.history_rounds + 1)]
        t0 = time.perf_counter()
        for short, long in pairs:
            await _seed(stack, short, p.history_short)
            await _seed(stack, long, p.history_events)
        await stack.conn.execute("VACUUM ANALYZE executions, events, event_processing")
        seeded = time.perf_counter() - t0
        # the replay first, while the execution holds exactly history_events events
        replays = [await asyncio.to_thread(_replay, stack, pairs[-1][1])
                   for _ in range(p.replay_runs)]
        if any(code != 0 for _, code in replays):
            raise RuntimeError(f"flowrt replay exited {[c for _, c in replays]} (0 = matches)")
        batch: dict[str, list[float]] = {"short": [], "long": []}
        single: dict[str, list[float]] = {"short": [], "long": []}
        async with Bus(stack.settings.redis_url, Keys(stack.settings.redis_prefix)) as bus:
            for r, (short, long) in enumerate(pairs[:-1]):
                order = [("short", short), ("long", long)]
                for kind, execution_id in order if r % 2 == 0 else order[::-1]:
                    seconds = await _process(stack, bus, execution_id, p.history_batch)
                    batch[kind].append(seconds / p.history_batch)
            short, long = pairs[-1]
            for i in range(p.history_singles):
                order = [("short", short), ("long", long)]
                for kind, execution_id in order if i % 2 == 0 else order[::-1]:
                    single[kind].append(await _process(stack, bus, execution_id, 1))
    per = {k: statistics.median(v) * 1e3 for k, v in batch.items()}
    one = {k: statistics.median(v) * 1e3 for k, v in single.items()}
    return {"short_events": p.history_short, "long_events": p.history_events,
            "batch": p.history_batch, "rounds": p.history_rounds, "workers": 1,
            "seed_s": round(seeded, 2),
            "short_ms_per_event": round(per["short"], 3),
            "long_ms_per_event": round(per["long"], 3),
            "ratio": round(per["long"] / per["short"], 3),
            "batch_rounds_ms_per_event": {k: [round(x * 1e3, 3) for x in v]
                                          for k, v in batch.items()},
            "singles": p.history_singles,
            "single_short_ms": round(one["short"], 2), "single_long_ms": round(one["long"], 2),
            "single_ratio": round(one["long"] / one["short"], 3),
            "replay_events": p.history_events,
            "replay_s": round(min(s for s, _ in replays), 3),
            "replay_runs_s": [round(s, 3) for s, _ in replays]}
