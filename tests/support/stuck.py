"""Rows in a test's own database that look stuck, written directly with explicit ages.

The log is append-only but an INSERT may set ``created_at``: an event "appended two
minutes ago" needs no sleeping. Nothing here runs a worker.
"""

from __future__ import annotations

import asyncpg

WORKFLOW = "wf"


async def add_execution(pg: asyncpg.Connection, execution_id: str, *, events: int = 1,
                        processed: int = 0, age: float = 0.0, published: bool = True,
                        dead_seq: int | None = None, error: str | None = None,
                        tenant: str = "default") -> None:
    """An execution with ``events`` events appended ``age`` seconds ago, the first
    ``processed`` of them completed; ``dead_seq`` marks that event dead and blocks the
    execution on it, as the worker's dead-lettering does."""
    await pg.execute(
        "INSERT INTO workflow_definitions (name, version, body, body_hash)"
        " VALUES ($1, 1, '{}', 'h') ON CONFLICT DO NOTHING", WORKFLOW)
    await pg.execute(
        "INSERT INTO executions (tenant_id, execution_id, workflow, version, last_seq,"
        " processed_seq, blocked_seq, request_hash) VALUES ($1, $2, $3, 1, $4, $5, $6, 'r')",
        tenant, execution_id, WORKFLOW, events, processed, dead_seq)
    for seq in range(1, events + 1):
        status = ("dead" if seq == dead_seq else "completed" if seq <= processed
                  else "pending")
        await pg.execute(
            "INSERT INTO events (tenant_id, execution_id, seq, event_id, name, request_hash,"
            " created_at) VALUES ($1, $2, $3, gen_random_uuid(), $4, 'r',"
            " now() - make_interval(secs => $5))",
            tenant, execution_id, seq, "flowrt.started" if seq == 1 else "tick", age)
        await pg.execute(
            "INSERT INTO event_processing (tenant_id, execution_id, seq, status, published,"
            " error, created_at, processed_at) VALUES ($1, $2, $3, $4, $5, $6,"
            " now() - make_interval(secs => $7),"
            " CASE WHEN $4 IN ('completed', 'dead') THEN now() END)",
            tenant, execution_id, seq, status, published,
            error if seq == dead_seq else None, age)
