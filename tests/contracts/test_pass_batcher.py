"""Batched leases, attempt marks and commits (sql/0008 and 0010, PassBatcher): a
worker's concurrent jobs in one statement each, every execution fenced on its own."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from flowrt.errors import LeaseLost
from flowrt.events import Outcome
from flowrt.machine import Snapshot
from flowrt.settings import Settings
from flowrt.store import Database, ExecutionStore, Outbox, ProcessingStore
from flowrt.store.passes import PassBatcher
from flowrt.store.processing import Commit, Committed, Lease

OK = Outcome(status="completed", from_state="pending", to_state="pending", actions=())


async def _start(executions: ExecutionStore, tenant: str, xid: str, events: int) -> None:
    await executions.start(tenant, workflow="order", version=None, input={},
                           execution_id=xid, request_hash=f"h-{xid}")
    for i in range(events):
        await executions.append(tenant, xid, name="approve", payload={"i": i},
                                idempotency_key=None, request_hash=f"h-{xid}-{i}")


def _after(lease: Lease, seq: int) -> Snapshot:
    return Snapshot(status="running", state="pending", data={"at": seq}, seq=seq)


async def test_take_leases_in_order_with_their_events_and_none_for_no_work(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    t = settings.tenant
    await _start(executions, t, "b", 2)
    await _start(executions, t, "a", 0)
    [done] = [await processing.take_lease(t, "a", "w")]
    assert done is not None
    await processing.commit(done, 1, OK, _after(done, 1), "w")  # a: nothing left to do
    leases = await processing.take_leases([(t, "b"), (t, "missing"), (t, "a")], "w2")
    b, missing, a = leases
    assert missing is None and a is None
    assert b is not None and (b.execution_id, b.epoch, b.processed_seq, b.last_seq) == (
        "b", 1, 0, 3)
    assert [e.seq for e in b.pending] == [1, 2, 3] and b.pending[1].payload == {"i": 0}
    row = await pg.fetchrow("SELECT status, attempts, worker FROM event_processing"
                            " WHERE execution_id = 'b' AND seq = 1")
    assert tuple(row) == ("processing", 1, "w2")  # an attempt counted on the next event only
    assert await pg.fetchval("SELECT count(*) FROM event_processing WHERE execution_id = 'b'"
                             " AND attempts > 0") == 1


async def test_commit_many_fences_each_execution_on_its_own(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    t = settings.tenant
    for xid in ("x", "y", "z"):
        await _start(executions, t, xid, 1)
    x, y, z = await processing.take_leases([(t, "x"), (t, "y"), (t, "z")], "w")
    assert x and y and z
    await processing.take_lease(t, "y", "other")  # y's epoch moves on: our lease is stale
    results = await processing.commit_many([
        Commit(lease=x, seq=1, outcome=OK, snapshot=_after(x, 1)),
        Commit(lease=y, seq=1, outcome=OK, snapshot=_after(y, 1)),
        Commit(lease=z, seq=2, outcome=OK, snapshot=_after(z, 2)),  # out of order
        Commit(lease=x, seq=2, outcome=OK, snapshot=_after(x, 2)),  # x's next, same batch
    ], "w")
    assert [type(r).__name__ for r in results] == ["Committed", "LeaseLost", "LeaseLost",
                                                   "Committed"]
    assert isinstance(results[3], Committed) and results[3].last_seq == 2
    rows = dict(await pg.fetch("SELECT execution_id, processed_seq FROM executions"))
    assert rows == {"x": 2, "y": 0, "z": 0}
    assert await pg.fetchval("SELECT count(*) FROM event_processing"
                             " WHERE processed_at IS NOT NULL") == 2


async def test_concurrent_jobs_through_the_batcher_each_get_their_own_answer(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    t = settings.tenant
    ids = [f"j{i}" for i in range(20)]
    for xid in ids:
        await _start(executions, t, xid, 2)
    passes = PassBatcher(processing, "w", max_batch=8)
    await passes.start()
    try:
        async def job(xid: str) -> int:
            lease = await passes.take_lease(t, xid)
            assert lease is not None and lease.execution_id == xid
            for event in lease.pending:
                if event.seq > lease.processed_seq + 1:  # the lease counted the first
                    assert await passes.mark_processing(lease, event.seq) == 1
                committed = await passes.commit(lease, event.seq, OK, _after(lease, event.seq))
                assert committed.last_seq == 3
            return len(lease.pending)

        done = await asyncio.gather(*(job(x) for x in ids))
        stale = await processing.take_lease(t, "j0", "w")  # nothing left: None
        assert stale is None
        with pytest.raises(LeaseLost):  # a fenced commit through the batcher raises
            await passes.commit(_lease_of(t, ids[0]), 1, OK, _after(_lease_of(t, ids[0]), 1))
        with pytest.raises(LeaseLost):  # and so does a fenced mark
            await passes.mark_processing(_lease_of(t, ids[0]), 2)
    finally:
        await passes.close()
    assert done == [3] * 20
    assert await pg.fetchval("SELECT count(*) FROM executions WHERE processed_seq = 3") == 20
    # every event counted exactly one attempt: by the lease, or by its mark
    assert await pg.fetchval("SELECT count(*) FROM event_processing WHERE attempts = 1"
                             " AND status = 'completed'") == 60


async def test_mark_many_fences_each_mark_on_its_own(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        pg: asyncpg.Connection) -> None:
    t = settings.tenant
    for xid in ("x", "y"):
        await _start(executions, t, xid, 2)
    x, y = await processing.take_leases([(t, "x"), (t, "y")], "w")
    assert x and y
    await processing.commit(x, 1, OK, _after(x, 1), "w")
    await processing.commit(y, 1, OK, _after(y, 1), "w")
    newer = await processing.take_lease(t, "y", "other")  # y's epoch moves on
    assert newer is not None
    results = await processing.mark_many([(y, 2), (x, 3), (x, 2)], "w")
    assert isinstance(results[0], LeaseLost)
    assert isinstance(results[1], LeaseLost)  # out of order: seq 2 is next, not 3
    assert results[2] == 1
    rows = dict(await pg.fetch("SELECT execution_id || ':' || seq, worker FROM event_processing"
                               " WHERE status = 'processing'"))
    assert rows == {"x:2": "w", "y:2": "other"}  # the fenced mark wrote nothing


def _lease_of(tenant: str, xid: str) -> Lease:
    return Lease(tenant=tenant, execution_id=xid, epoch=1, workflow="order", version=1,
                 last_seq=3, processed_seq=0, blocked_seq=None,
                 snapshot=Snapshot(status="running", state=None, data={}, seq=0))


async def test_a_leased_or_committed_event_is_marked_published(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore,
        demo_db: Database, pg: asyncpg.Connection) -> None:
    """It reached a worker: the relay must not resend it, and the API's own mark (usually
    later) finds nothing left to write."""
    t = settings.tenant
    await _start(executions, t, "x", 2)  # seqs 1-3, all unpublished
    [lease] = await processing.take_leases([(t, "x")], "w")
    assert lease is not None
    published = "SELECT seq FROM event_processing WHERE published ORDER BY seq"
    assert [r["seq"] for r in await pg.fetch(published)] == [1]  # the one it started on
    await processing.commit_many([Commit(lease=lease, seq=1, outcome=OK,
                                         snapshot=_after(lease, 1)),
                                  Commit(lease=lease, seq=2, outcome=OK,
                                         snapshot=_after(lease, 2))], "w")
    assert [r["seq"] for r in await pg.fetch(published)] == [1, 2]
    assert [h.seq for h in await Outbox(demo_db).unpublished(-1, 10)] == [3]


async def test_the_lease_skips_its_wal_flush_for_itself_only(
        settings: Settings, executions: ExecutionStore) -> None:
    """synchronous_commit is off for the lease's own transaction, and back on after it
    for whatever the pooled connection runs next (the commits)."""
    await _start(executions, settings.tenant, "x", 0)
    async with Database(settings.database_url, max_size=1) as one:  # one connection
        store = ProcessingStore(one)
        [lease] = await store.take_leases([(settings.tenant, "x")], "w")
        assert lease is not None
        async with one.connection() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            in_lease = await conn.fetchval(
                "SELECT current_setting('synchronous_commit') FROM"
                " (SELECT * FROM flowrt_take_leases(ARRAY[$1], ARRAY['none'], 'w', 1)) l"
                " RIGHT JOIN (SELECT 1) one ON true", settings.tenant)
            assert in_lease == "off"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            in_mark = await conn.fetchval(  # the marks skip it the same way (sql/0010)
                "SELECT current_setting('synchronous_commit') FROM"
                " (SELECT * FROM flowrt_mark_events(ARRAY[$1], ARRAY['none'], ARRAY[2::bigint],"
                " ARRAY[1::bigint], ARRAY[1::bigint], 'w')) m RIGHT JOIN (SELECT 1) one ON true",
                settings.tenant)
            assert in_mark == "off"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
