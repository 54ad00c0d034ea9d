"""``AppendBatcher`` and ``StartBatcher``: the appends and the starts of concurrent API
requests, each kind in one statement.

Under load most of an append's cost is per round trip and per commit, not per event
(the asyncpg call, the statement, the transaction). Requests that arrive while
earlier batches are in flight go together (``flowrt_append_events``, sql/0007;
``flowrt_start_executions``, sql/0009): one round trip and one commit, each event
with its own outcome. A lone request goes alone through the single statement, so
light load waits for nothing. Every request still gets its 202 only after its own
event is committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from ..batching import Batcher
from ..errors import FlowrtError, Unavailable
from .executions import Appended, AppendRequest, ExecutionStore, StartRequest

__all__ = ["AppendBatcher", "StartBatcher"]

_log = structlog.get_logger("flowrt.appends")

Q = TypeVar("Q")


class _LogBatcher(Batcher[Q, Appended]):
    def __init__(self, one: Callable[[Q], Awaitable[Appended]],
                 many: Callable[[list[Q]], Awaitable[list[Appended | FlowrtError]]], *,
                 name: str, max_batch: int, in_flight: int) -> None:
        async def alone(request: Q) -> Appended | BaseException:
            try:
                return await one(request)
            except Exception as exc:  # this caller's error, not its neighbours'
                return exc

        async def flush(requests: list[Q]) -> list[Appended | BaseException]:
            if len(requests) == 1:
                return [await alone(requests[0])]
            try:
                return list(await many(requests))
            except Unavailable:
                raise  # PostgreSQL is down or cut us off: 503 for each, none written
            except Exception as exc:
                # Nothing of the batch was written (one transaction). An event that
                # PostgreSQL refuses must not fail its neighbours: each on its own.
                _log.warning(f"batched {name} failed; one by one", events=len(requests),
                             error=str(exc))
                return [await alone(r) for r in requests]

        super().__init__(flush, name=f"{name}-batcher", max_batch=max_batch,
                         in_flight=in_flight)


class AppendBatcher(_LogBatcher[AppendRequest]):
    def __init__(self, store: ExecutionStore, *, max_batch: int = 64, in_flight: int = 2) -> None:
        async def one(r: AppendRequest) -> Appended:
            return await store.append(r.tenant, r.execution_id, name=r.name, payload=r.payload,
                                      idempotency_key=r.idempotency_key,
                                      request_hash=r.request_hash)

        super().__init__(one, store.append_many, name="append", max_batch=max_batch,
                         in_flight=in_flight)

    async def append(self, request: AppendRequest) -> Appended:
        """Return once ``request``'s event is committed; raise its error (``NotFound``,
        ``IdempotencyMismatch``, ``ExecutionFinished``, ``StoreUnavailable``...)."""
        return await self.submit(request)


class StartBatcher(_LogBatcher[StartRequest]):
    def __init__(self, store: ExecutionStore, *, max_batch: int = 64, in_flight: int = 2) -> None:
        async def one(r: StartRequest) -> Appended:
            return await store.start(r.tenant, workflow=r.workflow, version=r.version,
                                     input=r.input, execution_id=r.execution_id,
                                     request_hash=r.request_hash)

        super().__init__(one, store.start_many, name="start", max_batch=max_batch,
                         in_flight=in_flight)

    async def start_execution(self, request: StartRequest) -> Appended:
        """Return once the execution and its started event are committed; raise its
        error (``NotFound``, ``Conflict``, ``StoreUnavailable``...)."""
        return await self.submit(request)
