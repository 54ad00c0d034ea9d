"""``HintBatcher``: the API's hints of concurrent requests, published together.

Each request still waits for its own hint to reach Redis (or fail) before its 202,
so nothing about the outbox changes; requests that arrive while a publish is in
flight share the next one: one pipeline, one write, instead of one round trip each.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..events import Hint
from .stream import Bus

__all__ = ["HintBatcher"]


class HintBatcher:
    """Owned by the API's lifespan: ``start`` and ``close``; no I/O in the constructor."""

    def __init__(self, bus: Bus, max_batch: int = 256) -> None:
        self._bus = bus
        self._max = max_batch
        self._queue: list[tuple[Hint, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hint-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _hint, waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the API is stopping"))
        self._queue.clear()

    async def publish(self, hint: Hint) -> None:
        """Return once ``hint`` is in Redis; raise what the publish raised."""
        if self._task is None:
            raise RuntimeError("HintBatcher is not started")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((hint, waiter))
        self._wake.set()
        await waiter

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                live = [(h, w) for h, w in batch if not w.done()]  # timed out: skip
                if not live:
                    continue
                try:
                    await self._bus.publish([h for h, _ in live])
                except Exception as exc:
                    for _h, waiter in live:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for _h, waiter in live:
                        if not waiter.done():
                            waiter.set_result(None)
