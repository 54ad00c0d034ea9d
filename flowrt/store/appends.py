"""``AppendBatcher``: the appends of concurrent API requests, in one statement.

Under load most of an append's cost is per round trip and per commit, not per event
(the asyncpg call, the statement, the transaction). Requests that arrive while
earlier batches are in flight are appended together by ``flowrt_append_events``
(sql/0007): one round trip and one commit, each event with its own outcome. A lone
request goes alone through the single append, so light load waits for nothing.
Every request still gets its 202 only after its own event is committed.
"""

from __future__ import annotations

import structlog

from ..batching import Batcher
from ..errors import Unavailable
from .executions import Appended, AppendRequest, ExecutionStore

__all__ = ["AppendBatcher"]

_log = structlog.get_logger("flowrt.appends")


class AppendBatcher(Batcher[AppendRequest, Appended]):
    def __init__(self, store: ExecutionStore, *, max_batch: int = 64, in_flight: int = 2) -> None:
        async def one(request: AppendRequest) -> Appended | BaseException:
            try:
                return await store.append(
                    request.tenant, request.execution_id, name=request.name,
                    payload=request.payload, idempotency_key=request.idempotency_key,
                    request_hash=request.request_hash)
            except Exception as exc:  # this caller's error, not its neighbours'
                return exc

        async def append(requests: list[AppendRequest]) -> list[Appended | BaseException]:
            if len(requests) == 1:
                return [await one(requests[0])]
            try:
                return list(await store.append_many(requests))
            except Unavailable:
                raise  # PostgreSQL is down or cut us off: 503 for each, none appended
            except Exception as exc:
                # Nothing of the batch was appended (one transaction). An event that
                # PostgreSQL refuses must not fail its neighbours: each on its own.
                _log.warning("batched append failed; appending one by one",
                             events=len(requests), error=str(exc))
                return [await one(r) for r in requests]

        super().__init__(append, name="append-batcher", max_batch=max_batch,
                         in_flight=in_flight)

    async def append(self, request: AppendRequest) -> Appended:
        """Return once ``request``'s event is committed; raise its error (``NotFound``,
        ``IdempotencyMismatch``, ``ExecutionFinished``, ``StoreUnavailable``...)."""
        return await self.submit(request)
