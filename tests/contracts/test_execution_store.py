"""ExecutionStore: start and append write the log (gap-free seqs, idempotent replays)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from flowrt.errors import Conflict, ExecutionFinished, IdempotencyMismatch, InvalidInput, NotFound
from flowrt.events import Outcome
from flowrt.machine import Snapshot
from flowrt.settings import Settings
from flowrt.store import ExecutionStore, ProcessingStore


async def _start(executions: ExecutionStore, tenant: str, xid: str | None = "x1",
                 request_hash: str = "h1"):  # type: ignore[no-untyped-def]
    return await executions.start(tenant, workflow="order", version=None, input={"sku": "A"},
                                  execution_id=xid, request_hash=request_hash)


async def test_start_writes_execution_and_started_event(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    appended = await _start(executions, settings.tenant)
    assert (appended.execution_id, appended.seq, appended.workflow, appended.created,
            appended.status) == ("x1", 1, "order", True, "pending")

    view = await executions.get(settings.tenant, "x1")
    assert (view.workflow, view.version, view.status, view.state, view.data, view.last_seq,
            view.processed_seq, view.blocked_seq) == ("order", 1, "running", None, {}, 1, 0, None)
    [event] = await executions.events(settings.tenant, "x1")
    assert (event.seq, event.event_id, event.name, event.payload, event.status, event.attempts,
            event.published, event.actions) == (
        1, appended.event_id, "flowrt.started", {"input": {"sku": "A"}}, "pending", 0, False, [])


async def test_start_generates_an_id(settings: Settings, executions: ExecutionStore) -> None:
    a = await _start(executions, settings.tenant, None)
    b = await _start(executions, settings.tenant, None)
    assert a.execution_id != b.execution_id and len(a.execution_id) == 36


async def test_start_is_idempotent_per_request_hash(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    first = await _start(executions, settings.tenant)
    again = await _start(executions, settings.tenant)
    assert (again.created, again.event_id, again.seq) == (False, first.event_id, 1)
    with pytest.raises(Conflict):
        await _start(executions, settings.tenant, request_hash="other")
    assert await pg.fetchval("SELECT count(*) FROM events") == 1


async def test_concurrent_starts_of_one_id_create_it_once(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    results = await asyncio.gather(*(_start(executions, settings.tenant) for _ in range(10)))
    assert sum(r.created for r in results) == 1
    assert len({r.event_id for r in results}) == 1
    assert await pg.fetchval("SELECT count(*) FROM events") == 1
    assert await pg.fetchval("SELECT count(*) FROM event_processing") == 1


async def test_start_with_an_explicit_version(settings: Settings,
                                              executions: ExecutionStore) -> None:
    started = await executions.start(settings.tenant, workflow="order", version=1, input={},
                                     execution_id="x1", request_hash="h")
    assert started.created and started.workflow == "order"
    assert (await executions.get(settings.tenant, "x1")).version == 1


async def test_start_unknown_workflow_or_version(settings: Settings,
                                                 executions: ExecutionStore) -> None:
    with pytest.raises(NotFound):
        await executions.start(settings.tenant, workflow="nope", version=None, input={},
                               execution_id="x1", request_hash="h")
    with pytest.raises(NotFound):
        await executions.start(settings.tenant, workflow="order", version=9, input={},
                               execution_id="x1", request_hash="h")
    with pytest.raises(NotFound):
        await executions.get(settings.tenant, "x1")


async def test_append_numbers_events_without_gaps(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant)
    results = await asyncio.gather(*(
        executions.append(settings.tenant, "x1", name="approve", payload={"i": i},
                          idempotency_key=None, request_hash=f"r{i}") for i in range(10)))
    assert sorted(r.seq for r in results) == list(range(2, 12))
    seqs = [r["seq"] for r in await pg.fetch("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, 12))
    assert await pg.fetchval("SELECT count(*) FROM event_processing") == 11
    assert (await executions.get(settings.tenant, "x1")).last_seq == 11


async def test_append_idempotency_key(settings: Settings, executions: ExecutionStore,
                                      pg: asyncpg.Connection) -> None:
    await _start(executions, settings.tenant)
    first = await executions.append(settings.tenant, "x1", name="approve", payload={"amount": 5},
                                    idempotency_key="k1", request_hash="r1")
    again = await executions.append(settings.tenant, "x1", name="approve", payload={"amount": 5},
                                    idempotency_key="k1", request_hash="r1")
    assert (first.seq, first.created) == (2, True)
    assert (again.seq, again.event_id, again.created) == (2, first.event_id, False)
    with pytest.raises(IdempotencyMismatch):
        await executions.append(settings.tenant, "x1", name="approve", payload={"amount": 6},
                                idempotency_key="k1", request_hash="r2")
    assert await pg.fetchval("SELECT last_seq FROM executions") == 2


async def test_append_to_unknown_or_finished(
        settings: Settings, executions: ExecutionStore, processing: ProcessingStore) -> None:
    with pytest.raises(NotFound):
        await executions.append(settings.tenant, "nope", name="approve", payload={},
                                idempotency_key=None, request_hash="r")
    await _start(executions, settings.tenant)
    await executions.append(settings.tenant, "x1", name="reject", payload={},
                            idempotency_key="k", request_hash="r")
    lease = await processing.take_lease(settings.tenant, "x1", "w1")
    assert lease is not None
    await processing.commit(lease, 1, Outcome(status="completed", to_state="pending"),
                            Snapshot(state="pending", seq=1), "w")
    await processing.commit(lease, 2, Outcome(status="completed", from_state="pending",
                                              to_state="rejected"),
                            Snapshot(status="completed", state="rejected", seq=2), "w")
    with pytest.raises(ExecutionFinished):
        await executions.append(settings.tenant, "x1", name="ship", payload={},
                                idempotency_key=None, request_hash="r3")
    # a replay of an accepted append is still answered
    replayed = await executions.append(settings.tenant, "x1", name="reject", payload={},
                                       idempotency_key="k", request_hash="r")
    assert (replayed.seq, replayed.created) == (2, False)


async def test_events_paging_and_unknown(settings: Settings, executions: ExecutionStore) -> None:
    await _start(executions, settings.tenant)
    for i in range(3):
        await executions.append(settings.tenant, "x1", name="approve", payload={"i": i},
                                idempotency_key=None, request_hash=f"r{i}")
    page = await executions.events(settings.tenant, "x1", after=1, limit=2)
    assert [e.seq for e in page] == [2, 3]
    assert await executions.events(settings.tenant, "x1", after=4) == []
    with pytest.raises(NotFound):
        await executions.events(settings.tenant, "nope")


async def test_list_pages_newest_first(settings: Settings, executions: ExecutionStore) -> None:
    for i in range(5):
        await _start(executions, settings.tenant, f"x{i}", request_hash=f"h{i}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await executions.list(settings.tenant, workflow="order", status="running",
                                     limit=2, cursor=cursor)
        seen += [x.execution_id for x in page.executions]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["x4", "x3", "x2", "x1", "x0"]
    empty = await executions.list(settings.tenant, workflow=None, status="completed", limit=10,
                                  cursor=None)
    assert (empty.executions, empty.next_cursor) == ([], None)
    with pytest.raises(InvalidInput):
        await executions.list(settings.tenant, workflow=None, status=None, limit=2,
                              cursor="not-a-cursor")
