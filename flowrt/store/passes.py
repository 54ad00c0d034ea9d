"""``PassBatcher``: the leases, attempt marks and fenced commits of a worker's
concurrent jobs, each kind in one statement.

A worker runs up to ``FLOWRT_CONCURRENCY`` executions at once, and with many busy
executions most passes cover one event: a lease and a commit each, whose cost is
mostly per round trip and per transaction. Jobs that lease or commit while earlier
batches are in flight go together (``flowrt_take_leases``, ``flowrt_commit_events``,
sql/0008; ``flowrt_mark_events``, sql/0010, for the later events of a pass that
a commit did not count, sql/0011): one
round trip and one commit, each execution fenced on its own. A lone job is a batch
of one, so light load waits for nothing.
"""

from __future__ import annotations

import asyncpg
import structlog

from ..batching import Batcher
from ..events import Outcome
from ..machine import Snapshot
from .processing import Commit, Committed, Lease, ProcessingStore

__all__ = ["PassBatcher"]

_log = structlog.get_logger("flowrt.passes")

# Batches lock rows in one global order (sql/0008), so these should not happen; if
# one does, PostgreSQL rolled the whole batch back, and each item is retried alone.
_RETRY_ALONE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class PassBatcher:
    """Owned by the worker: ``start`` and ``close``. The engine's lease, marks and
    commits go through it; everything else goes to the store."""

    def __init__(self, store: ProcessingStore, worker: str, *, max_batch: int = 64,
                 in_flight: int = 2) -> None:
        async def leases(items: list[tuple[str, str]]) -> list[Lease | BaseException | None]:
            try:
                return list(await store.take_leases(items, worker))
            except _RETRY_ALONE as exc:
                _log.warning("batched lease rolled back; leasing one by one", error=str(exc))
                return [r for item in items for r in await store.take_leases([item], worker)]

        async def commits(items: list[Commit]) -> list[Committed | BaseException]:
            try:
                return list(await store.commit_many(items, worker))
            except _RETRY_ALONE as exc:
                _log.warning("batched commit rolled back; committing one by one",
                             error=str(exc))
                return [r for c in items for r in await store.commit_many([c], worker)]

        async def marks(items: list[tuple[Lease, int]]) -> list[int | BaseException]:
            try:
                return list(await store.mark_many(items, worker))
            except _RETRY_ALONE as exc:
                _log.warning("batched mark rolled back; marking one by one", error=str(exc))
                return [r for m in items for r in await store.mark_many([m], worker)]

        self._leases = Batcher(leases, name="lease-batcher", max_batch=max_batch,
                               in_flight=in_flight)
        self._marks = Batcher(marks, name="mark-batcher", max_batch=max_batch,
                              in_flight=in_flight)
        self._commits = Batcher(commits, name="commit-batcher", max_batch=max_batch,
                                in_flight=in_flight)

    async def start(self) -> None:
        await self._leases.start()
        await self._marks.start()
        await self._commits.start()

    async def close(self) -> None:
        await self._commits.close()
        await self._marks.close()
        await self._leases.close()

    async def take_lease(self, tenant: str, execution_id: str) -> Lease | None:
        """``ProcessingStore.take_lease``, batched with the worker's other jobs."""
        return await self._leases.submit((tenant, execution_id))

    async def mark_processing(self, lease: Lease, seq: int) -> int:
        """``ProcessingStore.mark_processing``, batched; raises ``LeaseLost`` where fenced."""
        return await self._marks.submit((lease, seq))

    async def commit(self, lease: Lease, seq: int, outcome: Outcome, snapshot: Snapshot,
                     mark_next: int = 0) -> Committed:
        """``ProcessingStore.commit``, batched; raises ``LeaseLost`` where fenced."""
        return await self._commits.submit(Commit(lease=lease, seq=seq, outcome=outcome,
                                                 snapshot=snapshot, mark_next=mark_next))

