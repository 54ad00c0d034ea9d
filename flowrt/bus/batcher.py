"""Concurrent requests' Redis work, sent together.

``Batcher`` queues items from many callers and hands them to one ``flush`` call per
batch: one round trip (a pipeline, or one script) instead of one each, which is most
of the API's Redis cost under load. Each caller still waits for its own result, or
the exception its batch raised.

- ``HintBatcher``: the hints of concurrent appends. Each request still waits for its
  hint to reach Redis (or fail) before its 202, so nothing about the outbox changes.
- ``TokenBatcher``: the rate-limit tokens of concurrent requests, in one script run
  (``rate.lua`` takes a batch: requests of one tenant share one bucket update).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ..events import Hint
from .stream import Bus

__all__ = ["Batcher", "HintBatcher", "TokenBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Owned by the API's lifespan: ``start`` and ``close``; no I/O in the constructor."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R]]], *, name: str,
                 max_batch: int = 256) -> None:
        self._flush = flush
        self._name = name
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _item, waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the API is stopping"))
        self._queue.clear()

    async def submit(self, item: T) -> R:
        """Return ``item``'s result once its batch is flushed; raise what the flush raised."""
        if self._task is None:
            raise RuntimeError(f"{self._name} is not started")
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, waiter))
        self._wake.set()
        return await waiter

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                live = [(i, w) for i, w in batch if not w.done()]  # timed out: skip
                if not live:
                    continue
                try:
                    results = await self._flush([i for i, _ in live])
                except Exception as exc:
                    for _i, waiter in live:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for (_i, waiter), result in zip(live, results, strict=True):
                        if not waiter.done():
                            waiter.set_result(result)


class HintBatcher(Batcher[Hint, None]):
    def __init__(self, bus: Bus, max_batch: int = 256) -> None:
        async def publish(hints: list[Hint]) -> list[None]:
            await bus.publish(hints)
            return [None] * len(hints)

        super().__init__(publish, name="hint-batcher", max_batch=max_batch)

    async def publish(self, hint: Hint) -> None:
        """Return once ``hint`` is in Redis; raise what the publish raised."""
        await self.submit(hint)


Bucket = tuple[str, float, int]  # tenant, rate per second, burst


class TokenBatcher(Batcher[Bucket, float]):
    def __init__(self, bus: Bus, max_batch: int = 256) -> None:
        async def take(requests: list[Bucket]) -> list[float]:
            counts: dict[Bucket, int] = {}
            for bucket in requests:
                counts[bucket] = counts.get(bucket, 0) + 1
            taken = dict(zip(counts, await bus.take_tokens(list(counts.items())), strict=True))
            waits = []
            for bucket in requests:  # in arrival order: the first `granted` go through
                granted, wait = taken[bucket]
                waits.append(0.0 if granted > 0 else wait)
                taken[bucket] = (granted - 1, wait)
            return waits

        super().__init__(take, name="token-batcher", max_batch=max_batch)

    async def take(self, tenant: str, rate: float, burst: int) -> float:
        """Take one request from ``tenant``'s bucket: 0.0 if allowed, else the seconds
        until a token would be there."""
        return await self.submit((tenant, rate, burst))
