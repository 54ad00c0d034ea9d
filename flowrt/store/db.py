"""``Database``: owns the asyncpg pool and translates driver errors at the boundary."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from ..errors import StoreUnavailable

__all__ = ["Database", "unavailable"]

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionFailureError,
    asyncpg.QueryCanceledError,  # the command timeout: the server is too slow to answer
)


# flowrt's own tables or functions are missing: the database was never migrated, or is
# older than this flowrt. Retryable like an outage (compose starts the API and workers
# while the one-shot migrate runs), and said plainly. Any other SQL error is a bug and
# is not translated.
_NOT_MIGRATED: tuple[type[BaseException], ...] = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedFunctionError,
)
_OURS = re.compile(r'"(executions|events|event_processing|workflow_definitions|tenants'
                   r'|api_keys|flowrt_\w+)"|\bflowrt_\w+\(')


@asynccontextmanager
async def unavailable() -> AsyncIterator[None]:
    """Turn "PostgreSQL cannot be reached" (or "is not migrated") into ``StoreUnavailable``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc
    except _NOT_MIGRATED as exc:
        what = getattr(exc, "message", None) or str(exc).splitlines()[0]  # no HINT lines
        if not _OURS.search(what):
            raise
        raise StoreUnavailable(f"PostgreSQL is not migrated for this flowrt ({what}):"
                               " run `flowrt migrate`") from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_encode_json, decoder=msgspec.json.decode,
                              schema="pg_catalog", format="text")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release (one round trip per use): flowrt never
    changes session state (no SET, LISTEN or advisory locks on pooled connections),
    and asyncpg still rolls back any transaction left open."""


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Database:
    """One pool, opened by ``start`` and closed by ``close``; no I/O in the constructor."""

    def __init__(self, url: str, *, max_size: int = 10,
                 timeout: float = 5.0) -> None:
        self._url = url
        self._max = max_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("Database was closed; create a new one")
        # min_size=0 at creation: the pool opens lazily, so a process can start (and
        # answer 503) while PostgreSQL is down instead of failing to boot.
        self._pool = await asyncpg.create_pool(
            self._url, min_size=0, max_size=self._max, init=_init_connection,
            timeout=self.timeout, command_timeout=max(self.timeout * 6, 30.0),
            max_inactive_connection_lifetime=60.0, reset=_keep_session,
        )

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=self.timeout)
            except (TimeoutError, OSError):
                pool.terminate()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Database is not started")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with unavailable(), self.pool.acquire(timeout=self.timeout) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")
