"""Driver errors become flowrt errors here, at the Redis boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as rexc

from ..errors import BusUnavailable

__all__ = ["unavailable"]


@asynccontextmanager
async def unavailable() -> AsyncIterator[None]:
    """Turn "Redis cannot be reached" into ``BusUnavailable``."""
    try:
        yield
    # Besides the connection failing: the server cannot serve now (loading, a read-only
    # replica during failover, out of memory under noeviction, cluster TRYAGAIN).
    except (TimeoutError, rexc.ConnectionError, rexc.TimeoutError, OSError,
            rexc.BusyLoadingError, rexc.ReadOnlyError, rexc.OutOfMemoryError,
            rexc.TryAgainError) as exc:
        raise BusUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
