"""ProcessingStore: leases, fenced commits (an outcome is applied exactly once), dead events,
and the relay/reconciler queries."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from flowrt.errors import LeaseLost
from flowrt.events import ActionRecord, Hint, Outcome
from flowrt.machine import Snapshot
from flowrt.settings import Settings
from flowrt.store import Database, ExecutionStore, Outbox, ProcessingStore, PublishedMarks
from flowrt.store.processing import Committed

EXEC_COLS = "status, state, data, last_seq, processed_seq, blocked_seq, lease_epoch, updated_at"
EP_COLS = ("status, published, attempts, worker, from_state, to_state, actions, error,"
           " started_at, processed_at")

STARTED_OUTCOME = Outcome(status="completed", from_state=None, to_state="pending",
                          actions=(ActionRecord(name="notify", ok=True, result={"n": 1}),))
STARTED_SNAPSHOT = Snapshot(status="running", state="pending", data={"sku": "A"}, seq=1)
SECOND_SNAPSHOT = Snapshot(status="running", state="pending", data={"sku": "A"}, seq=2)


async def _start(executions: ExecutionStore, tenant: str, xid: str, extra: int = 0) -> None:
    """An execution with the started event (seq 1) and ``extra`` more events."""
    await executions.start(tenant, workflow="order", version=None, input={"sku": "A"},
                           execution_id=xid, request_hash=f"h-{xid}")
    for i in range(extra):
        await executions.append(tenant, xid, name="approve", payload={"amount": i},
                                idempotency_key=None, request_hash=f"h-{xid}-{i}")


async def _execution(pg: asyncpg.Connection, xid: str) -> dict[str, Any]:
    row = await pg.fetchrow(f"SELECT {EXEC_COLS} FROM executions WHERE execution_id = $1", xid)
    assert row is not None
    out = dict(row)
    out["data"] = json.loads(out["data"])
    return out


async def _processing(pg: asyncpg.Connection, xid: str, seq: int) -> dict[str, Any]:
    row = await pg.fetchrow(f"SELECT {EP_COLS} FROM event_processing"
                            " WHERE execution_id = $1 AND seq = $2", xid, seq)
    assert row is not None
    out = dict(row)
    out["actions"] = json.loads(out["actions"])
    return out


# --- leases ---------------------------------------------------------------------------


async def test_take_lease_bumps_the_epoch(settings: Settings, executions: ExecutionStore,
                                          processing: ProcessingStore,
                                          pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    first = await processing.take_lease(settings.tenant, "x1", "w1")
    assert first is not None
    assert (first.epoch, first.workflow, first.version, first.last_seq,
            first.processed_seq, first.blocked_seq) == (1, "order", 1, 2, 0, None)
    # with the projection and the events after it, in the same round trip
    assert first.snapshot == Snapshot(status="running", state=None, data={}, seq=0)
    assert [(e.seq, e.name) for e in first.pending] == [(1, "flowrt.started"), (2, "approve")]
    assert first.pending[1].payload == {"amount": 0}
    # the lease counts an attempt on the next unprocessed event and marks it processing
    p = await _processing(pg, "x1", 1)
    assert (p["status"], p["attempts"], p["worker"]) == ("processing", 1, "w1")
    assert (await _processing(pg, "x1", 2))["attempts"] == 0
    second = await processing.take_lease(settings.tenant, "x1", "w2")
    assert second is not None and second.epoch == 2
    assert (await _execution(pg, "x1"))["lease_epoch"] == 2
    p = await _processing(pg, "x1", 1)
    assert (p["attempts"], p["worker"]) == (2, "w2")  # a worker that vanished leaves a count


async def test_attempted_says_whether_a_worker_started_the_next_event(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    assert not await processing.attempted(settings.tenant, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")  # then it vanishes
    assert lease is not None
    assert await processing.attempted(settings.tenant, "x1")
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    assert not await processing.attempted(settings.tenant, "x1")  # seq 2: nobody started it
    assert not await processing.attempted(settings.tenant, "missing")


async def test_take_lease_of_unknown_execution_is_none(settings: Settings,
                                                       processing: ProcessingStore) -> None:
    assert await processing.take_lease(settings.tenant, "missing", "w1") is None
    assert await processing.head(settings.tenant, "missing") == (0, None)


# --- fenced commit --------------------------------------------------------------------


async def test_commit_applies_projection_and_processing_record(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    before = await _execution(pg, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None

    committed = await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    processed_at = committed.processed_at

    assert isinstance(processed_at, datetime)
    assert committed.last_seq == 2  # the log's head, so the worker sees seq 2 waits
    x = await _execution(pg, "x1")
    assert (x["status"], x["state"], x["data"], x["processed_seq"], x["last_seq"],
            x["blocked_seq"]) == ("running", "pending", {"sku": "A"}, 1, 2, None)
    assert x["updated_at"] == processed_at and x["updated_at"] > before["updated_at"]
    p = await _processing(pg, "x1", 1)
    assert p == {
        "status": "completed", "published": True, "attempts": 1, "worker": "w1",
        "from_state": None, "to_state": "pending",
        "actions": [{"name": "notify", "ok": True, "result": {"n": 1}}], "error": None,
        "started_at": p["started_at"], "processed_at": processed_at,
    }
    # the next event is untouched
    assert (await _processing(pg, "x1", 2))["status"] == "pending"

    # and the log reads back with the outcome
    logged = await processing.load(settings.tenant, "x1", 0, 2)
    assert [le.event.seq for le in logged] == [1, 2]
    assert logged[0].outcome == STARTED_OUTCOME
    assert logged[1].outcome == Outcome(status="pending")


async def test_commit_sequence_advances_one_by_one(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    done = Snapshot(status="completed", state="approved", data={"sku": "A", "ok": True}, seq=2)
    await processing.commit(lease, 2, Outcome(status="completed", from_state="pending",
                                              to_state="approved"), done, "w1")
    x = await _execution(pg, "x1")
    assert (x["status"], x["state"], x["data"], x["processed_seq"]) == (
        "completed", "approved", {"sku": "A", "ok": True}, 2)
    assert await processing.head(settings.tenant, "x1") == (2, None)


async def test_stale_epoch_commit_is_fenced_and_changes_nothing(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1")
    old = await processing.take_lease(settings.tenant, "x1", "w1")
    new = await processing.take_lease(settings.tenant, "x1", "w1")
    assert old is not None and new is not None and new.epoch == old.epoch + 1
    x_before, p_before = await _execution(pg, "x1"), await _processing(pg, "x1", 1)

    with pytest.raises(LeaseLost):
        await processing.commit(old, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "stale")

    assert await _execution(pg, "x1") == x_before
    assert await _processing(pg, "x1", 1) == p_before
    assert p_before["status"] == "processing" and p_before["worker"] == "w1"

    # the current holder still commits
    await processing.commit(new, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "fresh")
    assert (await _processing(pg, "x1", 1))["worker"] == "fresh"
    assert (await _execution(pg, "x1"))["processed_seq"] == 1


async def test_committing_the_same_seq_twice_is_fenced(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    x_before, p_before = await _execution(pg, "x1"), await _processing(pg, "x1", 1)

    other = Snapshot(status="failed", state="rejected", data={"twice": True}, seq=1)
    with pytest.raises(LeaseLost):
        await processing.commit(lease, 1, Outcome(status="failed", error="again"), other, "w2")

    assert await _execution(pg, "x1") == x_before
    assert await _processing(pg, "x1", 1) == p_before
    assert p_before["attempts"] == 1 and p_before["worker"] == "w1"


async def test_out_of_order_commit_is_fenced(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=3)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    x_before = await _execution(pg, "x1")
    with pytest.raises(LeaseLost):
        await processing.commit(lease, 2, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    assert await _execution(pg, "x1") == x_before
    assert (await _processing(pg, "x1", 2))["status"] == "pending"

    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    x_before = await _execution(pg, "x1")
    with pytest.raises(LeaseLost):
        await processing.commit(lease, 3, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    assert await _execution(pg, "x1") == x_before
    assert (await _processing(pg, "x1", 3))["status"] == "pending"
    assert x_before["processed_seq"] == 1


async def test_concurrent_commits_of_one_seq_apply_once(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    results = await asyncio.gather(
        *(processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, f"w{i}")
          for i in range(5)), return_exceptions=True)
    applied = [r for r in results if isinstance(r, Committed)]
    assert len(applied) == 1
    assert all(isinstance(r, LeaseLost) for r in results if not isinstance(r, Committed))
    p = await _processing(pg, "x1", 1)
    assert p["attempts"] == 1 and p["processed_at"] == applied[0].processed_at


# --- mark_processing ------------------------------------------------------------------


async def test_mark_processing_counts_attempts(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    # seq 1 was the head when the lease was taken: its attempt is counted already
    assert await processing.mark_processing(lease, 1, "w1") == 1
    p = await _processing(pg, "x1", 1)
    assert (p["status"], p["attempts"], p["worker"]) == ("processing", 1, "w1")
    assert p["started_at"] is not None and p["processed_at"] is None

    # the commit after mark_processing does not count another attempt
    at = (await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT,
                                  "w1")).processed_at
    p = await _processing(pg, "x1", 1)
    assert (p["status"], p["attempts"], p["processed_at"]) == ("completed", 1, at)
    assert p["started_at"] is not None and p["started_at"] <= at


async def test_mark_processing_is_fenced(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    old = await processing.take_lease(settings.tenant, "x1", "w1")
    new = await processing.take_lease(settings.tenant, "x1", "w1")
    assert old is not None and new is not None
    before = await _processing(pg, "x1", 1)

    with pytest.raises(LeaseLost):
        await processing.mark_processing(old, 1, "stale")  # stale epoch
    with pytest.raises(LeaseLost):
        await processing.mark_processing(new, 2, "w1")  # out of order
    assert await _processing(pg, "x1", 1) == before
    assert (await _processing(pg, "x1", 2))["attempts"] == 0

    await processing.commit(new, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    done = await _processing(pg, "x1", 1)
    with pytest.raises(LeaseLost):
        await processing.mark_processing(new, 1, "w1")  # already processed
    assert await _processing(pg, "x1", 1) == done
    assert await processing.mark_processing(new, 2, "w1") == 1


async def test_a_commit_counts_the_attempt_on_the_next_event_when_asked(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=2)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    at = (await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1",
                                  mark_next=2)).processed_at
    p2 = await _processing(pg, "x1", 2)
    assert (p2["status"], p2["attempts"], p2["worker"]) == ("processing", 1, "w1")
    assert p2["started_at"] == at and p2["processed_at"] is None
    assert (await _processing(pg, "x1", 3))["attempts"] == 0  # only the next one

    # its own commit counts no second attempt; without mark_next, nothing is marked
    await processing.commit(lease, 2, STARTED_OUTCOME, SECOND_SNAPSHOT, "w1")
    assert ((await _processing(pg, "x1", 2))["status"],
            (await _processing(pg, "x1", 2))["attempts"]) == ("completed", 1)
    p3 = await _processing(pg, "x1", 3)
    assert (p3["status"], p3["attempts"]) == ("pending", 0)


async def test_the_mark_of_the_next_event_is_fenced_with_its_commit(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=2)
    old = await processing.take_lease(settings.tenant, "x1", "w1")
    new = await processing.take_lease(settings.tenant, "x1", "w2")
    assert old is not None and new is not None
    with pytest.raises(LeaseLost):  # a stale epoch marks nothing either
        await processing.commit(old, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "stale",
                                mark_next=2)
    assert (await _processing(pg, "x1", 2))["attempts"] == 0
    # a seq that is not the next one is not marked
    await processing.commit(new, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w2", mark_next=3)
    assert (await _processing(pg, "x1", 3))["attempts"] == 0
    assert (await _processing(pg, "x1", 2))["attempts"] == 0
    # nor a dead one
    await pg.execute("UPDATE event_processing SET status = 'dead' WHERE execution_id = 'x1'"
                     " AND seq = 3")
    await processing.commit(new, 2, STARTED_OUTCOME, SECOND_SNAPSHOT, "w2", mark_next=3)
    p3 = await _processing(pg, "x1", 3)
    assert (p3["status"], p3["attempts"]) == ("dead", 0)


async def test_the_commit_of_workers_before_0011_still_applies(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    # a rolling upgrade: a worker of the version before calls the 13-argument form
    await _start(executions, settings.tenant, "x1", extra=1)
    lease = await processing.take_lease(settings.tenant, "x1", "old")
    assert lease is not None
    rows = await pg.fetch(
        "SELECT * FROM flowrt_commit_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        " $12, $13)", [settings.tenant], ["x1"], [1], [lease.epoch], ["running"],
        ["pending"], ['{"sku": "A"}'], ["completed"], [None], ["pending"], ["[]"], [None],
        "old")
    assert [r["ord"] for r in rows] == [1] and rows[0]["last_seq"] == 2
    assert (await _execution(pg, "x1"))["processed_seq"] == 1
    assert (await _processing(pg, "x1", 2))["attempts"] == 0  # it marks no next event
    stale = await pg.fetch(
        "SELECT * FROM flowrt_commit_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        " $12, $13)", [settings.tenant], ["x1"], [2], [lease.epoch - 1], ["running"],
        ["pending"], ['{"sku": "A"}'], ["completed"], [None], ["pending"], ["[]"], [None],
        "old")
    assert stale == []  # fenced as before


# --- dead events ----------------------------------------------------------------------


async def test_mark_dead_blocks_the_next_event_once(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=2)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")

    assert await processing.mark_dead(settings.tenant, "x1", "poison", 0) == 2

    x = await _execution(pg, "x1")
    assert (x["blocked_seq"], x["processed_seq"], x["last_seq"]) == (2, 1, 3)
    p2 = await _processing(pg, "x1", 2)
    assert (p2["status"], p2["error"]) == ("dead", "poison")
    assert p2["processed_at"] is not None
    assert (await _processing(pg, "x1", 3))["status"] == "pending"
    assert (await _processing(pg, "x1", 1))["status"] == "completed"
    assert await processing.head(settings.tenant, "x1") == (3, 2)

    # a second call does nothing
    assert await processing.mark_dead(settings.tenant, "x1", "again", 0) is None
    assert (await _execution(pg, "x1"))["blocked_seq"] == 2
    assert await _processing(pg, "x1", 2) == p2
    assert (await _processing(pg, "x1", 3))["status"] == "pending"


async def test_mark_dead_needs_failed_attempts_not_just_deliveries(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    # A hint redelivered during a PostgreSQL outage has many deliveries but no attempt:
    # its event must not die. Only workers that started on it (and vanished) count.
    await _start(executions, settings.tenant, "x1", extra=1)
    assert await processing.mark_dead(settings.tenant, "x1", "outage", 2) is None
    assert (await _execution(pg, "x1"))["blocked_seq"] is None
    assert (await _processing(pg, "x1", 1))["status"] == "pending"
    await pg.execute("UPDATE event_processing SET attempts = 2 WHERE execution_id = 'x1'"
                     " AND seq = 1")
    assert await processing.mark_dead(settings.tenant, "x1", "poison", 2) == 1
    assert (await _processing(pg, "x1", 1))["status"] == "dead"


async def test_mark_dead_on_fully_processed_or_unknown_does_nothing(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    assert await processing.mark_dead(settings.tenant, "x1", "late", 0) is None
    assert (await _execution(pg, "x1"))["blocked_seq"] is None
    assert (await _processing(pg, "x1", 1))["status"] == "completed"
    assert await processing.mark_dead(settings.tenant, "missing", "x", 0) is None


# --- relay and reconciler queries -----------------------------------------------------


async def test_unpublished_lists_old_unpublished_events(
        settings: Settings, executions: ExecutionStore, demo_db: Database,
        pg: asyncpg.Connection) -> None:
    outbox = Outbox(demo_db)
    t = settings.tenant
    await _start(executions, t, "old", extra=1)
    await _start(executions, t, "older")
    await _start(executions, t, "fresh")
    await pg.execute("UPDATE event_processing SET created_at = now() - interval '10 minutes'"
                     " WHERE execution_id = 'old'")
    await pg.execute("UPDATE event_processing SET created_at = now() - interval '20 minutes'"
                     " WHERE execution_id = 'older'")

    assert await outbox.unpublished(3600.0, 100) == []
    expected = [Hint(tenant=t, execution_id="older", seq=1),
                Hint(tenant=t, execution_id="old", seq=1),
                Hint(tenant=t, execution_id="old", seq=2)]
    got = await outbox.unpublished(60.0, 100)
    assert got[0] == expected[0]
    assert sorted(got, key=lambda h: (h.execution_id, h.seq)) == sorted(
        expected, key=lambda h: (h.execution_id, h.seq))
    assert await outbox.unpublished(60.0, 1) == [expected[0]]

    await outbox.mark_published([expected[0], expected[2]])
    assert await outbox.unpublished(60.0, 100) == [expected[1]]
    published = await pg.fetch("SELECT execution_id, seq FROM event_processing"
                               " WHERE published ORDER BY execution_id, seq")
    assert [tuple(r) for r in published] == [("old", 2), ("older", 1)]
    await outbox.mark_published([])  # no-op

    await outbox.mark_published([Hint(tenant=t, execution_id="old", seq=1)])
    assert await outbox.unpublished(60.0, 100) == []
    # fresh ones show up once older than the grace
    await asyncio.sleep(0.05)
    assert await outbox.unpublished(0.01, 100) == [Hint(tenant=t, execution_id="fresh", seq=1)]


async def test_published_marks_are_written_in_batches_and_flushed_on_close(
        settings: Settings, executions: ExecutionStore, demo_db: Database,
        pg: asyncpg.Connection) -> None:
    t = settings.tenant
    for name in ("a", "b", "c"):
        await _start(executions, t, name)
    marks = PublishedMarks(Outbox(demo_db), interval=3600)  # only close() flushes here
    await marks.start()
    marks.add(Hint(tenant=t, execution_id="a", seq=1))
    marks.add(Hint(tenant=t, execution_id="c", seq=1))
    await asyncio.sleep(0.05)
    assert await pg.fetchval("SELECT count(*) FROM event_processing WHERE published") == 0
    await marks.close()
    rows = await pg.fetch("SELECT execution_id FROM event_processing WHERE published"
                          " ORDER BY execution_id")
    assert [r[0] for r in rows] == ["a", "c"]


async def test_a_published_mark_that_fails_is_logged_and_left_to_the_relay(
        settings: Settings) -> None:
    """A database that is not there (never started): the flush fails, the marks'
    owner is not told (the relay resends those hints), and the warning says how many."""
    marks = PublishedMarks(Outbox(Database(settings.database_url)), interval=3600)
    await marks.start()
    marks.add(Hint(tenant=settings.tenant, execution_id="a", seq=1))
    marks.add(Hint(tenant=settings.tenant, execution_id="b", seq=1))
    with capture_logs() as logs:
        await marks.close()
    [entry] = [e for e in logs if e["event"] == "could not mark hints published"]
    assert entry["log_level"] == "warning" and entry["count"] == 2 and entry["error"]


async def test_lagging_lists_executions_waiting_too_long(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore) -> None:
    t = settings.tenant
    await _start(executions, t, "waiting")                 # next unprocessed: seq 1
    await _start(executions, t, "partial", extra=2)        # processed 1 of 3
    await _start(executions, t, "done")                    # fully processed
    await _start(executions, t, "blocked", extra=1)        # dead event holds it back
    for xid in ("partial", "done"):
        lease = await processing.take_lease(t, xid, "w1")
        assert lease is not None
        await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    assert await processing.mark_dead(t, "blocked", "poison", 0) == 1

    assert await processing.lagging(3600.0, 100) == []
    await asyncio.sleep(0.05)
    got = await processing.lagging(0.01, 100)
    assert sorted(got, key=lambda h: h.execution_id) == [
        Hint(tenant=t, execution_id="partial", seq=3),
        Hint(tenant=t, execution_id="waiting", seq=1),
    ]
    assert len(await processing.lagging(0.01, 1)) == 1
    # ordered by the age of the next unprocessed event: waiting's seq 1 is older than
    # partial's seq 2
    assert got[0].execution_id == "waiting"


# --- a dead event is never applied afterwards -----------------------------------------
#
# mark_dead is called by a worker's reclaimer, without the execution's Redis lock and
# without bumping lease_epoch, so the lease holder may still be working on that very
# event. Its later commit must be fenced, or the "dead" event gets applied anyway and
# blocked_seq is left pointing at a processed event: the execution is then blocked for
# good (the engine skips blocked executions, lagging() excludes them) although nothing
# is dead any more.


async def test_commit_of_an_event_marked_dead_meanwhile_is_fenced(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1", extra=1)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    assert await processing.mark_processing(lease, 1, "w1") == 1
    assert await processing.mark_dead(settings.tenant, "x1", "poison", 0) == 1  # by a reclaimer

    with pytest.raises(LeaseLost):
        await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")

    x = await _execution(pg, "x1")
    assert (x["processed_seq"], x["blocked_seq"], x["state"]) == (0, 1, None)
    p = await _processing(pg, "x1", 1)
    assert (p["status"], p["error"]) == ("dead", "poison")


async def test_mark_processing_of_a_dead_event_is_fenced(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant, "x1")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    assert await processing.mark_dead(settings.tenant, "x1", "poison", 0) == 1

    with pytest.raises(LeaseLost):
        await processing.mark_processing(lease, 1, "w1")

    p = await _processing(pg, "x1", 1)
    assert (p["status"], p["error"], p["attempts"]) == ("dead", "poison", 1)


async def test_mark_processing_racing_mark_dead_leaves_the_event_dead(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection, database_url: str) -> None:
    """Found by the fault suite: mark_processing that started while mark_dead's
    transaction was open used to re-check only the processing row after waiting for
    it, overwrite 'dead' with 'processing', and leave a blocked execution whose dead
    event no longer said so."""
    await _start(executions, settings.tenant, "x1", extra=1)
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    other = await asyncpg.connect(database_url)
    try:
        tx = other.transaction()
        await tx.start()  # mark_dead's two statements, not yet committed
        await other.execute("UPDATE executions SET blocked_seq = 1 WHERE execution_id = 'x1'")
        await other.execute("UPDATE event_processing SET status = 'dead', error = 'poison'"
                            " WHERE execution_id = 'x1' AND seq = 1")
        racing = asyncio.create_task(processing.mark_processing(lease, 1, "w1"))
        await asyncio.sleep(0.3)
        assert not racing.done()  # waits for the open transaction
        await tx.commit()
        with pytest.raises(LeaseLost):
            await racing
    finally:
        await other.close()
    assert (await _processing(pg, "x1", 1))["status"] == "dead"


async def test_lease_batches_pending_events_and_pending_reads_the_rest(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore) -> None:
    await _start(executions, settings.tenant, "x1", extra=4)  # seqs 1-5
    lease = await processing.take_lease(settings.tenant, "x1", "w1", batch=2)
    assert lease is not None and [e.seq for e in lease.pending] == [1, 2]
    rest = await processing.pending(settings.tenant, "x1", 2)
    assert [e.seq for e in rest] == [3, 4, 5]
    assert [e.seq for e in await processing.pending(settings.tenant, "x1", 3, limit=1)] == [4]
    assert await processing.pending(settings.tenant, "x1", 5) == []
    # a processed execution: nothing to do, and nothing is written (the epoch stays)
    for seq in range(1, 6):
        await processing.commit(lease, seq, Outcome(status="ignored"),
                                Snapshot(state="pending", seq=seq), "w1")
    assert await processing.take_lease(settings.tenant, "x1", "w1") is None
    assert (await processing.take_lease(settings.tenant, "x1", "w1")) is None
    await executions.append(settings.tenant, "x1", name="approve", payload={},
                            idempotency_key=None, request_hash="h-more")
    again = await processing.take_lease(settings.tenant, "x1", "w1")
    assert again is not None and again.epoch == lease.epoch + 1
    assert again.snapshot == Snapshot(state="pending", seq=5)
    assert [e.seq for e in again.pending] == [6]


# --- the log, as replay reads it -------------------------------------------------------


async def test_load_returns_each_event_with_its_outcome_as_recorded(
        pg: asyncpg.Connection, processing: ProcessingStore, executions: ExecutionStore,
        database_url: str) -> None:
    """Replay's read of the log (columns made into RecordedEvents): the
    same values as the tables hold, created_at in UTC whatever the session's TimeZone."""
    await pg.execute(f'ALTER DATABASE "{database_url.rsplit("/", 1)[1]}"'
                     " SET timezone = 'Asia/Kolkata'")
    await _start(executions, "default", "log-1", extra=2)
    lease = await processing.take_lease("default", "log-1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, STARTED_OUTCOME, STARTED_SNAPSHOT, "w1")
    failed = Outcome(status="failed", from_state="pending", to_state="pending",
                     actions=(ActionRecord(name="charge", ok=False, error="card declined",
                                           attempts=3),), error="charge gave up")
    await processing.commit(lease, 2, failed, Snapshot(status="running", state="pending",
                                                       data={"sku": "A"}, seq=2), "w1")
    async with Database(database_url) as fresh:  # new sessions: the database's TimeZone
        log = await ProcessingStore(fresh).load("default", "log-1", 0, 3)
    rows = await pg.fetch("SELECT seq, event_id::text, name, payload, created_at FROM events"
                          " WHERE execution_id = 'log-1' ORDER BY seq")
    assert [r.event.seq for r in log] == [1, 2, 3]
    for rec, row in zip(log, rows, strict=True):
        assert rec.event.event_id == row["event_id"] and rec.event.name == row["name"]
        assert rec.event.payload == json.loads(row["payload"])
        assert rec.event.created_at == row["created_at"]
        assert rec.event.created_at is not None
        assert rec.event.created_at.utcoffset() == timedelta(0)
    assert log[2].event.payload == {"amount": 1}
    assert log[0].outcome == STARTED_OUTCOME
    assert log[1].outcome == failed
    assert log[2].outcome == Outcome(status="pending")
    assert await processing.load("default", "log-1", 1, 2) == log[1:2]
    assert await processing.load("default", "nobody", 0, 9) == []
