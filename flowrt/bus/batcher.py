"""Concurrent requests' Redis work, sent together (``flowrt.batching.Batcher``): one
round trip (a pipeline, or one script) instead of one each, which is most of the
API's Redis cost under load. Each caller still waits for its own result, or the
exception its batch raised.

- ``HintBatcher``: the hints of concurrent appends. Each request still waits for its
  hint to reach Redis (or fail) before its 202, so nothing about the outbox changes.
- ``TokenBatcher``: the rate-limit tokens of concurrent requests, in one script run
  (``rate.lua`` takes a batch: requests of one tenant share one bucket update).
"""

from __future__ import annotations

from ..batching import Batcher
from ..events import Hint
from .stream import Bus

__all__ = ["HintBatcher", "TokenBatcher"]


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
