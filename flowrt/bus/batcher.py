"""Concurrent requests' Redis work, sent together (``flowrt.batching.Batcher``): one
round trip (a pipeline, or one script) instead of one each, which is most of the
API's Redis cost under load. Each caller still waits for its own result, or the
exception its batch raised.

- ``HintBatcher``: the hints of concurrent appends. Each request still waits for its
  hint to reach Redis (or fail) before its 202, so nothing about the outbox changes.
- ``TokenBatcher``: the rate-limit tokens of concurrent requests, in one script run
  (``rate.lua`` takes a batch: requests of one tenant share one bucket update).
- ``LockBatcher``: a worker's concurrent jobs taking their execution locks, and
  acking their hints with the lock's release (``finish.lua``), each in one pipeline.
"""

from __future__ import annotations

from ..batching import Batcher
from ..events import Hint
from .lock import Lock
from .stream import Bus

__all__ = ["HintBatcher", "LockBatcher", "TokenBatcher"]


class HintBatcher(Batcher[Hint, None]):
    def __init__(self, bus: Bus, max_batch: int = 256) -> None:
        async def publish(hints: list[Hint]) -> list[BaseException | None]:
            await bus.publish(hints)
            return [None] * len(hints)

        super().__init__(publish, name="hint-batcher", max_batch=max_batch)

    async def publish(self, hint: Hint) -> None:
        """Return once ``hint`` is in Redis; raise what the publish raised."""
        await self.submit(hint)


Bucket = tuple[str, float, int]  # tenant, rate per second, burst


class TokenBatcher(Batcher[Bucket, float]):
    def __init__(self, bus: Bus, max_batch: int = 256) -> None:
        async def take(requests: list[Bucket]) -> list[float | BaseException]:
            counts: dict[Bucket, int] = {}
            for bucket in requests:
                counts[bucket] = counts.get(bucket, 0) + 1
            taken = dict(zip(counts, await bus.take_tokens(list(counts.items())), strict=True))
            waits: list[float | BaseException] = []
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


class LockBatcher:
    """Owned by the worker: ``start`` and ``close``."""

    def __init__(self, bus: Bus, *, max_batch: int = 64, in_flight: int = 2) -> None:
        async def acquire(locks: list[Lock]) -> list[bool | BaseException]:
            return list(await bus.acquire_many(locks))

        async def finish(items: list[tuple[Lock, list[str]]]
                         ) -> list[tuple[bool, bool] | BaseException]:
            return list(await bus.finish_many(items))

        self._acquires = Batcher(acquire, name="lock-batcher", max_batch=max_batch,
                                 in_flight=in_flight)
        self._finishes = Batcher(finish, name="finish-batcher", max_batch=max_batch,
                                 in_flight=in_flight)

    async def start(self) -> None:
        await self._acquires.start()
        await self._finishes.start()

    async def close(self) -> None:
        await self._finishes.close()
        await self._acquires.close()

    async def acquire(self, lock: Lock) -> bool:
        """``Lock.acquire``, batched with the worker's other jobs."""
        return await self._acquires.submit(lock)

    async def finish(self, lock: Lock, message_ids: list[str]) -> tuple[bool, bool]:
        """``Bus.finish``, batched: (released, woken)."""
        return await self._finishes.submit((lock, message_ids))
