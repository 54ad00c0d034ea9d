"""Batched appends and starts (sql/0007 and 0009, AppendBatcher, StartBatcher): concurrent
requests' events in one statement, each with the single statement's rules and its own
outcome."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from structlog.testing import capture_logs

from flowrt.errors import (
    Conflict,
    ExecutionFinished,
    IdempotencyMismatch,
    NotFound,
    StoreUnavailable,
)
from flowrt.settings import Settings
from flowrt.store import Database, ExecutionStore
from flowrt.store.appends import AppendBatcher, StartBatcher
from flowrt.store.executions import Appended, AppendRequest, StartRequest

from .conftest import closed_port


def _req(tenant: str, xid: str, name: str = "approve", key: str | None = None,
         request_hash: str = "h") -> AppendRequest:
    return AppendRequest(tenant=tenant, execution_id=xid, name=name,
                         payload={"amount": 1, "note": "ü\u2028"}, idempotency_key=key,
                         request_hash=request_hash)


async def _start(executions: ExecutionStore, tenant: str, xid: str) -> None:
    await executions.start(tenant, workflow="order", version=None, input={},
                           execution_id=xid, request_hash="s")


async def test_append_many_gives_each_event_its_own_outcome_in_order(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    t = settings.tenant
    for xid in ("b", "a"):
        await _start(executions, t, xid)
    await pg.execute("UPDATE executions SET status = 'completed' WHERE execution_id = 'a'")
    results = await executions.append_many([
        _req(t, "b", key="k1"), _req(t, "missing"), _req(t, "b", key="k1"),
        _req(t, "b", key="k1", request_hash="other"), _req(t, "a"), _req(t, "b", name="n2")])
    first, missing, replayed, mismatch, finished, second = results
    assert isinstance(first, Appended) and (first.seq, first.created) == (2, True)
    assert isinstance(missing, NotFound)
    assert isinstance(replayed, Appended) and (replayed.event_id, replayed.created) == (
        first.event_id, False)
    assert isinstance(mismatch, IdempotencyMismatch)
    assert isinstance(finished, ExecutionFinished)
    assert isinstance(second, Appended) and second.seq == 3
    rows = await pg.fetch("SELECT seq, name, payload FROM events WHERE execution_id = 'b'"
                          " ORDER BY seq")
    assert [(r["seq"], r["name"]) for r in rows] == [
        (1, "flowrt.started"), (2, "approve"), (3, "n2")]
    assert json.loads(rows[1]["payload"]) == {"amount": 1, "note": "ü\u2028"}


async def test_concurrent_appends_are_batched_gap_free_and_each_answered(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    t = settings.tenant
    ids = [f"x{i}" for i in range(10)]
    for xid in ids:
        await _start(executions, t, xid)
    batcher = AppendBatcher(executions, max_batch=16)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.append(_req(t, ids[i % 10], key=f"k{i}"))
                                         for i in range(200)))
        with pytest.raises(NotFound):
            await batcher.append(_req(t, "nope"))  # alone: the single append
    finally:
        await batcher.close()
    assert all(r.created for r in results)
    per = await pg.fetch("SELECT execution_id, array_agg(seq ORDER BY seq) AS seqs FROM events"
                         " GROUP BY execution_id")
    assert {r["execution_id"]: r["seqs"] for r in per} == {x: list(range(1, 22)) for x in ids}
    # each caller got its own event back
    got = {(r.execution_id, r.seq) for r in results}
    assert len(got) == 200
    by_key = dict(await pg.fetch("SELECT idempotency_key, event_id::text FROM events"
                                 " WHERE idempotency_key IS NOT NULL"))
    assert all(by_key[f"k{i}"] == r.event_id for i, r in enumerate(results))


async def test_an_event_postgresql_refuses_fails_alone(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    t = settings.tenant
    await _start(executions, t, "x")
    bad = AppendRequest(tenant=t, execution_id="x", name="approve", payload={"s": "\u0000"},
                        idempotency_key=None, request_hash="h")  # jsonb refuses NUL
    batcher = AppendBatcher(executions)
    await batcher.start()
    try:
        with capture_logs() as logs:
            results = await asyncio.gather(
                batcher.append(_req(t, "x")), batcher.append(bad), batcher.append(_req(t, "x")),
                batcher.append(_req(t, "x")), return_exceptions=True)
    finally:
        await batcher.close()
    assert [e["event"] for e in logs] == ["batched append failed; one by one"]
    assert [type(r).__name__ for r in results].count("Appended") == 3
    assert isinstance(results[1], asyncpg.PostgresError)
    assert await pg.fetchval("SELECT last_seq FROM executions WHERE execution_id = 'x'") == 4


async def test_postgresql_down_fails_the_batch_unavailable() -> None:
    async with Database(f"postgresql://127.0.0.1:{closed_port()}/x", timeout=0.5) as down:
        batcher = AppendBatcher(ExecutionStore(down))
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.append(_req("t", "x")) for _ in range(4)),
                                           return_exceptions=True)
        finally:
            await batcher.close()
    assert all(isinstance(r, StoreUnavailable) for r in results)


def _start_req(tenant: str, xid: str, workflow: str = "order", request_hash: str = "s",
               version: int | None = None) -> StartRequest:
    return StartRequest(tenant=tenant, execution_id=xid, workflow=workflow, version=version,
                        input={"sku": xid}, request_hash=request_hash)


async def test_start_many_gives_each_start_its_own_outcome(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    t = settings.tenant
    results = await executions.start_many([
        _start_req(t, "b"), _start_req(t, "a"), _start_req(t, "b"),
        _start_req(t, "b", request_hash="other"), _start_req(t, "c", workflow="nope"),
        _start_req(t, "d", version=9)])
    b, a, again, conflict, no_workflow, no_version = results
    assert isinstance(b, Appended) and (b.execution_id, b.seq, b.created) == ("b", 1, True)
    assert isinstance(a, Appended) and a.created
    assert isinstance(again, Appended) and (again.event_id, again.created) == (b.event_id, False)
    assert isinstance(conflict, Conflict)
    assert isinstance(no_workflow, NotFound) and isinstance(no_version, NotFound)
    rows = await pg.fetch("SELECT execution_id, payload FROM events ORDER BY execution_id")
    assert [(r["execution_id"], json.loads(r["payload"])) for r in rows] == [
        ("a", {"input": {"sku": "a"}}), ("b", {"input": {"sku": "b"}})]


async def test_concurrent_starts_through_the_batcher(
        settings: Settings, executions: ExecutionStore, pg: asyncpg.Connection) -> None:
    t = settings.tenant
    batcher = StartBatcher(executions, max_batch=8)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.start_execution(_start_req(t, f"s{i % 30}"))
                                         for i in range(60)))  # each id twice
        with pytest.raises(Conflict):
            await batcher.start_execution(_start_req(t, "s0", request_hash="another"))
    finally:
        await batcher.close()
    assert sum(r.created for r in results) == 30
    assert all(r.event_id == results[i % 30].event_id for i, r in enumerate(results))
    assert await pg.fetchval("SELECT count(*) FROM executions") == 30
