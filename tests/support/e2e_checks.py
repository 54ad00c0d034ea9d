"""What the end-to-end tests check in the log: everything processed, once, in order.

The e2e workflow (tests/e2e/counter.py) appends each tick's seq to the execution's
data, so the projection shows both "exactly once" and "in seq order".
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg


async def wait_processed(pg: asyncpg.Connection, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        lag = await pg.fetchval("SELECT count(*) FROM executions WHERE processed_seq < last_seq")
        if lag == 0:
            return
        await asyncio.sleep(0.1)
    rows = await pg.fetch("SELECT execution_id, processed_seq, last_seq, blocked_seq"
                          " FROM executions WHERE processed_seq < last_seq LIMIT 5")
    dead = await pg.fetch("SELECT execution_id, seq, error FROM event_processing"
                          " WHERE status = 'dead' LIMIT 5")
    raise AssertionError(f"not processed in time: {[dict(r) for r in rows]};"
                         f" dead: {[dict(r) for r in dead]}")


async def check_exactly_once_in_order(pg: asyncpg.Connection) -> None:
    bad = await pg.fetch("SELECT execution_id, seq, status, error FROM event_processing"
                         " WHERE status <> 'completed'")
    assert not bad, f"events not completed: {[dict(r) for r in bad][:5]}"
    for row in await pg.fetch("SELECT execution_id, data::text AS data FROM executions"):
        ticks = await pg.fetch("SELECT seq FROM events WHERE execution_id = $1 AND name = 'tick'"
                               " ORDER BY seq", row["execution_id"])
        seqs = json.loads(row["data"]).get("seqs", [])
        assert seqs == [t["seq"] for t in ticks], row["execution_id"]
