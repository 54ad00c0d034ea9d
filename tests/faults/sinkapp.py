"""The fault scenarios' workflow: every event runs one action whose effect can be counted.

``ledger``: in ``open``, ``item`` runs ``effect`` and stays; ``check`` is guarded by
``payload.amount > 10`` (a string amount makes the guard itself error); ``close``
runs ``effect`` and ends in ``closed``.

``effect`` stands for a call to an external system that deduplicates by the
idempotency key (a payment API, say): it inserts its effect into ``fault_sink``
keyed by ``ctx.idempotency_key`` (a re-run adds nothing) and counts every call,
re-runs included, in ``fault_attempts``. It also appends the event's seq to
``data.seqs``, so the projection shows whether events were applied once and in order.

Payload controls, for the scenarios: ``sleep`` (seconds, before the effect),
``fail`` (the action always raises), ``crash`` (the worker process exits at once:
a poison pill).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg

from flowrt import ActionContext, App, RetryPolicy

SINK_SQL = """
CREATE TABLE IF NOT EXISTS fault_sink (
    key text PRIMARY KEY, execution_id text NOT NULL, seq bigint NOT NULL,
    action text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS fault_attempts (
    key text PRIMARY KEY, calls integer NOT NULL,
    last_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""

app = App()
app.add_definition({
    "name": "ledger",
    "version": 1,
    "initial": "open",
    "states": {
        "open": {"on": {
            "item": {"actions": ["effect"]},
            "check": {"guard": "payload.amount > 10", "actions": ["effect"]},
            "close": {"target": "closed", "actions": ["effect"]},
        }},
        "closed": {"final": True},
    },
})

_pool: asyncpg.Pool | None = None


async def _sink() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        # The worker's own FLOWRT_DATABASE_URL: the sink lives beside the log.
        _pool = await asyncpg.create_pool(os.environ["FLOWRT_DATABASE_URL"], min_size=1,
                                          max_size=4)
    return _pool


@app.action("effect", retry=RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.2))
async def effect(ctx: ActionContext) -> dict[str, Any]:
    pool = await _sink()
    await pool.execute(
        "INSERT INTO fault_attempts (key, calls) VALUES ($1, 1)"
        " ON CONFLICT (key) DO UPDATE SET calls = fault_attempts.calls + 1,"
        " last_at = clock_timestamp()", ctx.idempotency_key)
    payload = ctx.event.payload
    if payload.get("crash"):
        os._exit(3)  # a poison pill: the worker dies with the event in hand
    if payload.get("sleep"):
        await asyncio.sleep(float(payload["sleep"]))
    if payload.get("fail"):
        raise RuntimeError("this event's action always fails")
    await pool.execute(
        "INSERT INTO fault_sink (key, execution_id, seq, action) VALUES ($1, $2, $3, 'effect')"
        " ON CONFLICT (key) DO NOTHING", ctx.idempotency_key, ctx.execution_id, ctx.event.seq)
    return {"seqs": [*ctx.data.get("seqs", []), ctx.event.seq]}
