"""``Batcher``: the work of concurrent callers, done together.

Callers ``submit`` an item and wait; one ``flush`` call takes every item queued
since the previous one began: one round trip (a Redis pipeline, one script, one SQL
statement) instead of one each. Nothing waits on a timer: a lone caller is flushed
at once, and callers that arrive while flushes are in flight form the next batch, so
batches grow with the load by themselves.

A flush returns one result per item, in order; an exception in an item's place is
raised to that caller only. An exception the flush raises goes to every caller of
its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Owned by whoever owns its connection: ``start`` and ``close``; no I/O in the
    constructor. ``in_flight`` flushes may run at once (each takes its own batch)."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | BaseException]]], *,
                 name: str, max_batch: int = 256, in_flight: int = 1) -> None:
        self._flush = flush
        self._name = name
        self._max = max_batch
        self._slots = asyncio.Semaphore(in_flight)
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flushes:  # let batches already sent finish: their callers get answers
            await asyncio.wait(set(self._flushes), timeout=5)
        for _item, waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(RuntimeError(f"{self._name} is stopping"))
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
                await self._slots.acquire()
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                live = [(i, w) for i, w in batch if not w.done()]  # timed out: skip
                if not live:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._send(live), name=f"{self._name}-flush")
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _send(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([i for i, _ in live])
        except Exception as exc:
            for _i, waiter in live:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for (_i, waiter), result in zip(live, results, strict=True):
                if waiter.done():
                    continue
                if isinstance(result, BaseException):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
        finally:
            self._slots.release()
