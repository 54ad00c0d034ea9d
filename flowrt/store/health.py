"""Read-only queries for what is stuck in the log: ``flowrt doctor`` and the worker's gauges.

Each check is a count and, when asked for examples and there are any, the oldest few
rows. Both go through a partial index, so a healthy log costs one small index
look-up per check: ``executions_lagging``, ``event_processing_dead`` (sql/0003) and
``event_processing_unpublished``. Across every tenant: this is the operator's view.
"""

from __future__ import annotations

import msgspec

from .db import Database
from .processing import BEHIND

__all__ = ["DeadEvent", "HealthStore", "StuckExecution", "UnpublishedEvent"]


class StuckExecution(msgspec.Struct, frozen=True, kw_only=True):
    """An execution whose next unprocessed event has waited ``waiting`` seconds."""

    tenant: str
    execution_id: str
    workflow: str
    processed_seq: int
    last_seq: int
    waiting: float


class DeadEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event marked dead ``age`` seconds ago; its execution's later events wait behind it."""

    tenant: str
    execution_id: str
    seq: int
    name: str
    error: str | None
    age: float


class UnpublishedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event whose hint has not reached Redis ``age`` seconds after it was appended."""

    tenant: str
    execution_id: str
    seq: int
    age: float


# Each check: the part shared by its count and its examples.
_STUCK = BEHIND  # the reconciler's query (store/processing.py), counted or listed here
_DEAD = (
    " FROM event_processing p JOIN events e USING (tenant_id, execution_id, seq)"
    " WHERE p.status = 'dead'"
)
_UNPUBLISHED = (
    " FROM event_processing p"
    " WHERE NOT p.published AND p.created_at < now() - make_interval(secs => $1)"
)


class HealthStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def stuck_executions(self, behind: float,
                               examples: int) -> tuple[int, list[StuckExecution]]:
        """Executions not blocked whose next unprocessed event is older than ``behind`` s."""
        async with self._db.connection() as conn:
            count: int = await conn.fetchval(_STUCK.format("count(*)"), behind)
            rows = [] if not (count and examples) else await conn.fetch(
                _STUCK.format("tenant_id, execution_id, workflow, processed_seq, last_seq,"
                              " extract(epoch FROM now() - since)::float8 AS waiting")
                + " ORDER BY since LIMIT $2", behind, examples)
        return count, [StuckExecution(tenant=r["tenant_id"], execution_id=r["execution_id"],
                                      workflow=r["workflow"], processed_seq=r["processed_seq"],
                                      last_seq=r["last_seq"], waiting=r["waiting"])
                       for r in rows]

    async def dead_events(self, examples: int) -> tuple[int, list[DeadEvent]]:
        """Events marked dead (each blocks its execution), oldest first."""
        async with self._db.connection() as conn:
            count: int = await conn.fetchval("SELECT count(*)" + _DEAD)
            rows = [] if not (count and examples) else await conn.fetch(
                "SELECT p.tenant_id, p.execution_id, p.seq, e.name, p.error,"
                " extract(epoch FROM now() - coalesce(p.processed_at, p.created_at))::float8"
                " AS age" + _DEAD + " ORDER BY p.processed_at LIMIT $1", examples)
        return count, [DeadEvent(tenant=r["tenant_id"], execution_id=r["execution_id"],
                                 seq=r["seq"], name=r["name"], error=r["error"], age=r["age"])
                       for r in rows]

    async def unpublished_events(self, older_than: float,
                                 examples: int) -> tuple[int, list[UnpublishedEvent]]:
        """Events whose hint is still unpublished ``older_than`` s after the append."""
        async with self._db.connection() as conn:
            count: int = await conn.fetchval("SELECT count(*)" + _UNPUBLISHED, older_than)
            rows = [] if not (count and examples) else await conn.fetch(
                "SELECT p.tenant_id, p.execution_id, p.seq,"
                " extract(epoch FROM now() - p.created_at)::float8 AS age" + _UNPUBLISHED
                + " ORDER BY p.created_at LIMIT $2", older_than, examples)
        return count, [UnpublishedEvent(tenant=r["tenant_id"], execution_id=r["execution_id"],
                                        seq=r["seq"], age=r["age"])
                       for r in rows]
