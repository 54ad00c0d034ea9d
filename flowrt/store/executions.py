"""The API side of the log: start executions, append events, read them back."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ..errors import (
    Conflict,
    ExecutionFinished,
    FlowrtError,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
)
from ..events import STARTED, ActionRecord
from .db import Database

__all__ = ["AppendRequest", "Appended", "EventView", "ExecutionPage", "ExecutionStore",
           "ExecutionView", "StartRequest"]


class Appended(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted event. ``created`` is False when an earlier append was returned."""

    execution_id: str
    event_id: str
    seq: int
    workflow: str
    created: bool = True
    status: str = "pending"


class ExecutionView(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    workflow: str
    version: int
    status: str
    state: str | None
    data: dict[str, Any]
    last_seq: int
    processed_seq: int
    blocked_seq: int | None
    created_at: datetime
    updated_at: datetime


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    event_id: str
    name: str
    payload: dict[str, Any]
    status: str
    from_state: str | None
    to_state: str | None
    actions: list[ActionRecord]
    attempts: int
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    processed_at: datetime | None
    published: bool


class ExecutionPage(msgspec.Struct, frozen=True, kw_only=True):
    executions: list[ExecutionView]
    next_cursor: str | None


_EXEC_COLUMNS = ("execution_id, workflow, version, status, state, data, last_seq, processed_seq,"
                 " blocked_seq, created_at, updated_at")
_EVENT_QUERY = (
    "SELECT e.seq, e.event_id::text AS event_id, e.name, e.payload, p.status, p.from_state,"
    " p.to_state, p.actions, p.attempts, p.error, p.worker, e.created_at, p.started_at,"
    " p.processed_at, p.published"
    " FROM events e JOIN event_processing p USING (tenant_id, execution_id, seq)"
    " WHERE e.tenant_id = $1 AND e.execution_id = $2 AND e.seq > $3 ORDER BY e.seq LIMIT $4"
)


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One event to append (the tenant from the caller's key)."""

    tenant: str
    execution_id: str
    name: str
    payload: dict[str, Any]
    idempotency_key: str | None
    request_hash: str


class StartRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One execution to start (the tenant from the caller's key; the id chosen)."""

    tenant: str
    execution_id: str
    workflow: str
    version: int | None
    input: dict[str, Any]
    request_hash: str


def _started(request: StartRequest, row: asyncpg.Record) -> Appended | FlowrtError:
    """A start's outcome (sql/0004) as its accepted started event, or the error."""
    outcome, workflow = row["outcome"], request.workflow
    if outcome == "no_workflow":
        return NotFound(f"workflow {workflow!r} is not registered")
    if outcome == "no_version":
        return NotFound(f"workflow {workflow!r} version {request.version} is not registered")
    if outcome == "conflict":
        return Conflict(f"execution {request.execution_id!r} already exists with another"
                        " request")
    return Appended(execution_id=request.execution_id, event_id=row["event_id"], seq=1,
                    workflow=row["workflow"], created=outcome == "started")


def _appended(request: AppendRequest, row: asyncpg.Record) -> Appended | FlowrtError:
    """An append's outcome (sql/0002) as the accepted event, or the error to answer."""
    outcome = row["outcome"]
    execution_id = request.execution_id
    if outcome == "not_found":
        return NotFound(f"execution {execution_id!r} does not exist")
    if outcome == "key_mismatch":
        return IdempotencyMismatch(
            f"Idempotency-Key {request.idempotency_key!r} was used with a different body")
    if outcome == "finished":
        return ExecutionFinished(
            f"execution {execution_id!r} is {row['status']} and accepts no more events")
    return Appended(execution_id=execution_id, event_id=row["event_id"], seq=row["seq"],
                    workflow=row["workflow"], created=outcome == "appended")


def _execution(row: asyncpg.Record) -> ExecutionView:
    return ExecutionView(**dict(row))


def event_view(row: asyncpg.Record) -> EventView:
    values = dict(row)
    values["actions"] = msgspec.convert(values["actions"], list[ActionRecord])
    return EventView(**values)


def _encode_cursor(created_at: datetime, execution_id: str) -> str:
    raw = msgspec.json.encode([created_at.isoformat(), execution_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, execution_id = msgspec.json.decode(raw, type=tuple[str, str])
        if "\x00" in execution_id:
            raise ValueError("NUL in cursor")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive datetime in cursor")
        return when.astimezone(UTC), execution_id
    except (ValueError, OverflowError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput("cursor is malformed; pass back next_cursor unchanged") from None


class ExecutionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self, tenant: str, *, workflow: str, version: int | None, input: dict[str, Any],
                    execution_id: str | None, request_hash: str) -> Appended:
        """Create an execution and append its ``flowrt.started`` event (seq 1).

        One round trip: ``flowrt_start_execution`` (sql/0004). The same execution id
        with the same request returns the first start; with another, ``Conflict``.
        """
        request = StartRequest(tenant=tenant, execution_id=execution_id or str(uuid.uuid4()),
                               workflow=workflow, version=version, input=input,
                               request_hash=request_hash)
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT outcome, event_id::text AS event_id, workflow"
                " FROM flowrt_start_execution($1, $2, $3, $4, $5, $6, $7, $8)",
                tenant, request.execution_id, str(uuid.uuid4()), workflow, version, STARTED,
                {"input": input}, request_hash)
        result = _started(request, row)
        if isinstance(result, FlowrtError):
            raise result
        return result

    async def start_many(self, requests: list[StartRequest]) -> list[Appended | FlowrtError]:
        """Start many executions in one statement and one commit
        (``flowrt_start_executions``, sql/0009): each with the single start's rules and
        its own outcome, in order. An error the statement raises fails them all."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT ord, outcome, event_id::text AS event_id, workflow"
                " FROM flowrt_start_executions($1, $2, $3, $4, $5, $6, $7, $8)",
                [r.tenant for r in requests], [r.execution_id for r in requests],
                [str(uuid.uuid4()) for _ in requests], [r.workflow for r in requests],
                [r.version for r in requests], STARTED,
                [{"input": r.input} for r in requests], [r.request_hash for r in requests])
        by_ord = {row["ord"]: row for row in rows}
        return [_started(r, by_ord[i]) for i, r in enumerate(requests, start=1)]

    async def append(self, tenant: str, execution_id: str, *, name: str, payload: dict[str, Any],
                     idempotency_key: str | None, request_hash: str) -> Appended:
        """Append an event at the log's head; an idempotency key returns the first append.

        One round trip: ``flowrt_append_event`` (sql/0002) locks the execution row, so
        appends to one execution serialise and seq has no gaps.
        """
        request = AppendRequest(tenant=tenant, execution_id=execution_id, name=name,
                                payload=payload, idempotency_key=idempotency_key,
                                request_hash=request_hash)
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT outcome, event_id::text AS event_id, seq, workflow, status"
                " FROM flowrt_append_event($1, $2, $3, $4, $5, $6, $7)",
                tenant, execution_id, str(uuid.uuid4()), name, payload, idempotency_key,
                request_hash)
        result = _appended(request, row)
        if isinstance(result, FlowrtError):
            raise result
        return result

    async def append_many(self, requests: list[AppendRequest]) -> list[Appended | FlowrtError]:
        """Append many events in one statement and one commit (``flowrt_append_events``,
        sql/0007): each with the single append's rules and its own outcome, in order.

        An error the statement raises fails them all, none appended (one transaction).
        """
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT ord, outcome, event_id::text AS event_id, seq, workflow, status"
                " FROM flowrt_append_events($1, $2, $3, $4, $5, $6, $7)",
                [r.tenant for r in requests], [r.execution_id for r in requests],
                [str(uuid.uuid4()) for _ in requests], [r.name for r in requests],
                [r.payload for r in requests], [r.idempotency_key for r in requests],
                [r.request_hash for r in requests])
        by_ord = {row["ord"]: row for row in rows}
        return [_appended(r, by_ord[i]) for i, r in enumerate(requests, start=1)]

    async def get(self, tenant: str, execution_id: str) -> ExecutionView:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_EXEC_COLUMNS} FROM executions"
                " WHERE tenant_id = $1 AND execution_id = $2", tenant, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id!r} does not exist")
        return _execution(row)

    async def events(self, tenant: str, execution_id: str, *, after: int = 0,
                     limit: int = 1000) -> list[EventView]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(_EVENT_QUERY, tenant, execution_id, after, limit)
            if not rows and not await conn.fetchval(
                    "SELECT true FROM executions WHERE tenant_id = $1 AND execution_id = $2",
                    tenant, execution_id):
                raise NotFound(f"execution {execution_id!r} does not exist")
        return [event_view(r) for r in rows]

    async def list(self, tenant: str, *, workflow: str | None, status: str | None, limit: int,
                   cursor: str | None) -> ExecutionPage:
        clauses = ["tenant_id = $1"]
        args: list[Any] = [tenant]
        if workflow is not None:
            args.append(workflow)
            clauses.append(f"workflow = ${len(args)}")
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if cursor is not None:
            created_at, last_id = _decode_cursor(cursor)
            args += [created_at, last_id]
            clauses.append(f"(created_at, execution_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        query = (f"SELECT {_EXEC_COLUMNS} FROM executions WHERE {' AND '.join(clauses)}"
                 f" ORDER BY created_at DESC, execution_id DESC LIMIT ${len(args)}")
        async with self._db.connection() as conn:
            rows = await conn.fetch(query, *args)
        items = [_execution(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = _encode_cursor(items[-1].created_at, items[-1].execution_id) if more else None
        return ExecutionPage(executions=items, next_cursor=next_cursor)
