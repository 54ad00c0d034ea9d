"""The log as the transactional outbox: which events' hints have reached Redis.

Every event is written with ``published = false``. The API clears the flag after
publishing its hint, in batches (``PublishedMarks``), and a worker that leases or
commits the event clears it too (it reached a worker), usually first, which leaves
the API's mark nothing to write; the workers' relay republishes what is still
unpublished after a grace period. A mark that is lost (a crash, an
outage) only costs a duplicate hint, which workers ack without doing anything.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..events import Hint
from .db import Database

__all__ = ["Outbox", "PublishedMarks"]


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def unpublished(self, grace: float, limit: int) -> list[Hint]:
        """Events whose hint has not reached Redis for ``grace`` seconds, oldest first."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT tenant_id, execution_id, seq FROM event_processing"
                " WHERE NOT published AND created_at < now() - make_interval(secs => $1)"
                " ORDER BY created_at LIMIT $2", grace, limit)
        return [Hint(tenant=r["tenant_id"], execution_id=r["execution_id"], seq=r["seq"])
                for r in rows]

    async def mark_published(self, hints: list[Hint]) -> None:
        if not hints:
            return
        # Rows locked in (tenant, execution, seq) order, as the workers' batched
        # leases and commits take them (sql/0008): concurrent batches never deadlock.
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE event_processing p SET published = true FROM (SELECT q.tenant_id,"
                " q.execution_id, q.seq FROM event_processing q"
                " JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS h(t, x, s)"
                " ON q.tenant_id = h.t AND q.execution_id = h.x AND q.seq = h.s"
                " WHERE NOT q.published ORDER BY q.tenant_id, q.execution_id, q.seq"
                " FOR UPDATE OF q) l WHERE p.tenant_id = l.tenant_id"
                " AND p.execution_id = l.execution_id AND p.seq = l.seq",
                [h.tenant for h in hints], [h.execution_id for h in hints],
                [h.seq for h in hints])


class PublishedMarks:
    """Collects "this hint was published" and writes them in one statement per tick.

    Keeps an extra commit off every request. ``start`` and ``close`` bound the
    background task; ``close`` flushes what is left.
    """

    def __init__(self, outbox: Outbox, interval: float = 0.05, batch: int = 500) -> None:
        self._outbox = outbox
        self._interval = interval
        self._batch = batch
        self._pending: list[Hint] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, hint: Hint) -> None:
        self._pending.append(hint)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="published-marks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        hints, self._pending = self._pending, []
        try:
            await self._outbox.mark_published(hints)
        except Exception as exc:  # never let the task die: the relay covers lost marks
            # Imported here: structlog loads rich (70 ms) when it is installed, and
            # `flowrt replay` imports this package without ever logging.
            import structlog

            # The relay will republish these: a duplicate hint, never a lost one.
            structlog.get_logger("flowrt.outbox").warning(
                "could not mark hints published", count=len(hints), error=str(exc))
