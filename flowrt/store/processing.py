"""The worker side of the log: leases, fenced commits, dead events, relay queries.

Fencing: a worker that takes an execution bumps ``lease_epoch``; its commit of
event ``seq`` only applies where ``processed_seq = seq - 1`` and the epoch is still
its own. A worker that paused past its lock (GC, SIGSTOP) therefore commits
nothing and backs off: an event's outcome is applied exactly once.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from ..errors import LeaseLost
from ..events import ActionRecord, Event, Hint, Outcome, RecordedEvent
from ..machine import Snapshot
from .db import Database

__all__ = ["BEHIND", "Commit", "Committed", "Lease", "ProcessingStore"]


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's hold on one execution, with its projection when the lease was taken."""

    tenant: str
    execution_id: str
    epoch: int
    workflow: str
    version: int
    last_seq: int
    processed_seq: int
    blocked_seq: int | None
    snapshot: Snapshot  # what the log folds to up to processed_seq (kept by the commits)
    pending: tuple[Event, ...] = ()  # the first events after processed_seq, in seq order


class Commit(msgspec.Struct, frozen=True, kw_only=True):
    """One event's outcome and its execution's projection after it, to commit fenced."""

    lease: Lease
    seq: int
    outcome: Outcome
    snapshot: Snapshot
    # seq + 1 when the pass goes on to an event that runs actions: its attempt is
    # counted by this commit (0 for none), as ``mark_processing`` would before them
    mark_next: int = 0


class Committed(msgspec.Struct, frozen=True, kw_only=True):
    """A fenced commit that applied: when, and the log's head at that moment."""

    processed_at: datetime
    last_seq: int


# The log as plain columns, each row made into its RecordedEvent by the Struct
# constructors (no msgspec.convert, no JSON built by PostgreSQL: json_build_object
# cost the server 0.15-0.2 s for 20,000 rows, the columns 0.01 s). The replay of a
# long log is mostly this. actions come as text, for their typed decoder; created_at
# as asyncpg returns a timestamptz, in UTC whatever the session's TimeZone.
_LOG_QUERY = (
    "SELECT e.seq, e.event_id::text AS event_id, e.name, e.payload, e.created_at, p.status,"
    " p.from_state, p.to_state, p.actions::text AS actions, p.error"
    " FROM events e JOIN event_processing p USING (tenant_id, execution_id, seq)"
    " WHERE e.tenant_id = $1 AND e.execution_id = $2 AND e.seq > $3 AND e.seq <= $4"
    " ORDER BY e.seq"
)
_ACTIONS = msgspec.json.Decoder(tuple[ActionRecord, ...])


# Executions not blocked whose next unprocessed event is older than $1 seconds, as
# ``SELECT {} FROM behind``: for the reconciler and for ``flowrt doctor``. Lagging
# executions come from their partial index, then one primary-key look-up each for the
# next event's age. MATERIALIZED, with the look-up as a subquery: the planner
# misjudges how few executions lag (two columns compared) and would otherwise
# hash-join a scan of the whole log.
BEHIND = (
    "WITH behind AS MATERIALIZED (SELECT x.tenant_id, x.execution_id, x.workflow,"
    " x.processed_seq, x.last_seq, (SELECT e.created_at FROM events e"
    " WHERE e.tenant_id = x.tenant_id AND e.execution_id = x.execution_id"
    " AND e.seq = x.processed_seq + 1) AS since FROM executions x"
    " WHERE x.processed_seq < x.last_seq AND x.blocked_seq IS NULL)"
    " SELECT {} FROM behind WHERE since < now() - make_interval(secs => $1)"
)


def _event(r: asyncpg.Record) -> Event:
    return Event(seq=r["seq"], event_id=r["event_id"], name=r["name"], payload=r["payload"],
                 created_at=r["created_at"])


class ProcessingStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def take_lease(self, tenant: str, execution_id: str, worker: str,
                         batch: int = 100) -> Lease | None:
        """Bump the execution's epoch: from now on only this holder's commits apply.

        The same statement counts an attempt on the next unprocessed event, whatever
        happens next: a worker that dies on an event (with or without actions) leaves
        that count behind, which is what tells a poison event from an outage. It also
        returns the projection and up to ``batch`` events after it: one round trip.

        None when there is nothing to do (all processed, blocked behind a dead event, or
        no such execution): then nothing is written, so a redundant hint costs a read,
        not a durable commit.
        """
        [lease] = await self.take_leases([(tenant, execution_id)], worker, batch)
        return lease

    async def take_leases(self, executions: list[tuple[str, str]], worker: str,
                          batch: int = 100) -> list[Lease | None]:
        """``take_lease`` for many executions (tenant, id) in one round trip and one
        commit (``flowrt_take_leases``, sql/0008); results in order."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM flowrt_take_leases($1, $2, $3, $4)",
                [t for t, _x in executions], [x for _t, x in executions], worker, batch)
        by_ord: dict[int, list[asyncpg.Record]] = {}
        for r in rows:
            by_ord.setdefault(r["ord"], []).append(r)
        leases: list[Lease | None] = []
        for i, (tenant, execution_id) in enumerate(executions, start=1):
            mine = by_ord.get(i)
            if not mine:
                leases.append(None)
                continue
            row = mine[0]
            leases.append(Lease(
                tenant=tenant, execution_id=execution_id, epoch=row["lease_epoch"],
                workflow=row["workflow"], version=row["version"], last_seq=row["last_seq"],
                processed_seq=row["processed_seq"], blocked_seq=row["blocked_seq"],
                snapshot=Snapshot(status=row["status"], state=row["state"], data=row["data"],
                                  seq=row["processed_seq"]),
                pending=tuple(_event(r) for r in mine if r["seq"] is not None)))
        return leases

    async def pending(self, tenant: str, execution_id: str, after: int,
                      limit: int = 100) -> list[Event]:
        """Up to ``limit`` events after seq ``after``, in seq order (no outcomes)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT seq, event_id::text AS event_id, name, payload, created_at FROM events"
                " WHERE tenant_id = $1 AND execution_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                tenant, execution_id, after, limit)
        return [_event(r) for r in rows]

    async def has_work(self, tenant: str, execution_id: str) -> int | None:
        """The log's last seq if events wait unprocessed (and unblocked), else None."""
        async with self._db.connection() as conn:
            last: int | None = await conn.fetchval(
                "SELECT last_seq FROM executions WHERE tenant_id = $1 AND execution_id = $2"
                " AND processed_seq < last_seq AND blocked_seq IS NULL", tenant, execution_id)
        return last

    async def attempted(self, tenant: str, execution_id: str) -> bool:
        """Whether a worker already started on the next unprocessed event (and did not
        finish: it died, stalled or lost its lease)."""
        async with self._db.connection() as conn:
            return bool(await conn.fetchval(
                "SELECT p.attempts > 0 FROM executions x JOIN event_processing p"
                " ON p.tenant_id = x.tenant_id AND p.execution_id = x.execution_id"
                " AND p.seq = x.processed_seq + 1"
                " WHERE x.tenant_id = $1 AND x.execution_id = $2 AND x.blocked_seq IS NULL",
                tenant, execution_id))

    async def head(self, tenant: str, execution_id: str) -> tuple[int, int | None]:
        """The log's last seq and the blocked seq, to see whether more work arrived."""
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT last_seq, blocked_seq FROM executions"
                " WHERE tenant_id = $1 AND execution_id = $2", tenant, execution_id)
        return (row["last_seq"], row["blocked_seq"]) if row else (0, None)

    async def load(self, tenant: str, execution_id: str, after: int,
                   upto: int) -> list[RecordedEvent]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(_LOG_QUERY, tenant, execution_id, after, upto)
        actions = _ACTIONS.decode
        return [RecordedEvent(event=_event(r), outcome=Outcome(
                    status=r["status"], from_state=r["from_state"], to_state=r["to_state"],
                    actions=actions(r["actions"]), error=r["error"]))
                for r in rows]

    async def mark_processing(self, lease: Lease, seq: int, worker: str) -> int:
        """Record that ``worker`` starts on ``seq``; returns the attempt number.

        The event at the head when the lease was taken already had its attempt counted.
        """
        [result] = await self.mark_many([(lease, seq)], worker)
        if isinstance(result, LeaseLost):
            raise result
        return result

    async def mark_many(self, marks: list[tuple[Lease, int]],
                        worker: str) -> list[int | LeaseLost]:
        """``mark_processing`` for many (lease, seq) in one round trip and one commit
        (``flowrt_mark_events``, sql/0010): each fenced on its own, results in order
        (``LeaseLost`` where the fence held)."""
        # "status <> 'dead'" in the function: after waiting for a concurrent mark_dead,
        # PostgreSQL re-checks the processing row's new version but the joined execution
        # row as of the statement's start, so without it 'dead' was overwritten by
        # 'processing' (a race the fault suite found). Cheaper than reading the
        # execution row FOR SHARE, which cost ~10% of worker throughput.
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM flowrt_mark_events($1, $2, $3, $4, $5, $6)",
                [lease.tenant for lease, _s in marks],
                [lease.execution_id for lease, _s in marks], [s for _l, s in marks],
                [lease.epoch for lease, _s in marks],
                [lease.processed_seq + 1 for lease, _s in marks], worker)
        by_ord = {r["ord"]: int(r["attempts"]) for r in rows}
        return [by_ord[i] if i in by_ord else
                LeaseLost(f"execution {lease.execution_id} was taken over before seq {seq}")
                for i, (lease, seq) in enumerate(marks, start=1)]

    async def commit(self, lease: Lease, seq: int, outcome: Outcome, snapshot: Snapshot,
                     worker: str, mark_next: int = 0) -> Committed:
        """Apply one event's outcome and the new projection, fenced; returns when, and
        the log's head (so the caller needs no extra query to see whether more came).
        ``mark_next`` (seq + 1): count the attempt on the next event too, as
        ``mark_processing`` would, in the same statement."""
        [result] = await self.commit_many([Commit(lease=lease, seq=seq, outcome=outcome,
                                                  snapshot=snapshot, mark_next=mark_next)],
                                          worker)
        if isinstance(result, LeaseLost):
            raise result
        return result

    async def commit_many(self, commits: list[Commit],
                          worker: str) -> list[Committed | LeaseLost]:
        """``commit`` for many executions in one round trip and one commit
        (``flowrt_commit_events``, sql/0008, with the next event's mark as in sql/0011):
        each fenced on its own, results in order (``LeaseLost`` where the fence held)."""
        # Per execution the projection update is the fence, and the processing record
        # is only written when the fence let it through.
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM flowrt_commit_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                " $11, $12, $13, $14)",
                [c.lease.tenant for c in commits], [c.lease.execution_id for c in commits],
                [c.seq for c in commits], [c.lease.epoch for c in commits],
                [c.snapshot.status for c in commits], [c.snapshot.state for c in commits],
                [c.snapshot.data for c in commits], [c.outcome.status for c in commits],
                [c.outcome.from_state for c in commits], [c.outcome.to_state for c in commits],
                [msgspec.to_builtins(c.outcome.actions) for c in commits],
                [c.outcome.error for c in commits], worker, [c.mark_next for c in commits])
        by_ord = {r["ord"]: r for r in rows}
        results: list[Committed | LeaseLost] = []
        for i, c in enumerate(commits, start=1):
            row = by_ord.get(i)
            results.append(
                LeaseLost(f"execution {c.lease.execution_id}: commit of seq {c.seq} was fenced")
                if row is None else
                Committed(processed_at=row["processed_at"], last_seq=row["last_seq"]))
        return results

    async def mark_dead(self, tenant: str, execution_id: str, reason: str,
                        min_attempts: int) -> int | None:
        """Mark the execution's next unprocessed event dead; later events wait behind it.

        Only when workers started on that event at least ``min_attempts`` times: a hint
        redelivered while PostgreSQL was down shows many deliveries but no attempt,
        and must not kill an event that never failed. Returns the dead seq, or None.
        """
        async with self._db.transaction() as conn:
            seq = await conn.fetchval(
                "UPDATE executions x SET blocked_seq = x.processed_seq + 1, updated_at = now()"
                " FROM event_processing p"
                " WHERE x.tenant_id = $1 AND x.execution_id = $2 AND x.blocked_seq IS NULL"
                " AND x.processed_seq < x.last_seq AND p.tenant_id = x.tenant_id"
                " AND p.execution_id = x.execution_id AND p.seq = x.processed_seq + 1"
                " AND p.attempts >= $3 RETURNING x.blocked_seq",
                tenant, execution_id, min_attempts)
            if seq is not None:
                await conn.execute(
                    "UPDATE event_processing SET status = 'dead', error = $4, processed_at = now()"
                    " WHERE tenant_id = $1 AND execution_id = $2 AND seq = $3",
                    tenant, execution_id, seq, reason)
        return seq  # type: ignore[no-any-return]

    async def lagging(self, grace: float, limit: int) -> list[Hint]:
        """Executions whose next unprocessed event has waited longer than ``grace``."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(BEHIND.format("tenant_id, execution_id, last_seq")
                                    + " ORDER BY since LIMIT $2", grace, limit)
        return [Hint(tenant=r["tenant_id"], execution_id=r["execution_id"], seq=r["last_seq"])
                for r in rows]
