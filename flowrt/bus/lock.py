"""A per-execution lock: SET NX PX with a random token, Lua compare-and-act to extend or release."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from .errors_map import unavailable

__all__ = ["Lock"]


class Lock:
    """One holder's lock on one key. Acquiring again confirms a lock we hold (a retried
    command whose first reply was lost); a lost lock is simply not ours."""

    def __init__(self, client: aioredis.Redis, key: str, ttl: float, *, acquire: AsyncScript,
                 extend: AsyncScript, release: AsyncScript, wake: str) -> None:
        self._client = client
        self.key = key
        self.wake = wake  # the flag a worker that finds the lock held raises
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = secrets.token_hex(16)
        self._acquire = acquire
        self._extend = extend
        self._release = release

    async def acquire(self) -> bool:
        async with unavailable():
            return bool(await self._acquire(keys=[self.key, self.wake],
                                            args=[self.token, self.ttl_ms]))

    async def extend(self) -> bool:
        async with unavailable():
            return bool(await self._extend(keys=[self.key], args=[self.token, self.ttl_ms]))

    async def release(self) -> bool:
        async with unavailable():
            return bool(await self._release(keys=[self.key], args=[self.token]))
