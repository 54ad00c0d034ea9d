"""Database: driver and socket errors become StoreUnavailable at the boundary."""

from __future__ import annotations

import asyncpg
import pytest

from flowrt.errors import StoreUnavailable, Unavailable
from flowrt.settings import Settings
from flowrt.store import Database

from .conftest import closed_port


def _dead_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"


async def test_start_does_no_io_and_ping_is_store_unavailable() -> None:
    async with Database(_dead_url(), timeout=1.0) as db:  # starts although nothing listens
        with pytest.raises(StoreUnavailable) as info:
            await db.ping()
    assert isinstance(info.value, Unavailable) and info.value.retryable is True
    assert isinstance(info.value.__cause__, OSError)
    assert not isinstance(info.value, (OSError, asyncpg.PostgresError))


async def test_connection_is_store_unavailable() -> None:
    async with Database(_dead_url(), timeout=1.0) as db:
        with pytest.raises(StoreUnavailable, match="PostgreSQL unavailable"):
            async with db.connection():
                pytest.fail("connected to a closed port")
        with pytest.raises(StoreUnavailable):
            async with db.transaction():
                pytest.fail("connected to a closed port")


async def test_live_database_answers(settings: Settings) -> None:
    async with Database(settings.database_url) as db:
        await db.ping()
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}


async def test_sql_errors_are_not_translated(settings: Settings) -> None:
    async with Database(settings.database_url) as db:
        with pytest.raises(asyncpg.UndefinedTableError):
            async with db.connection() as conn:
                await conn.fetchval("SELECT * FROM no_such_table")


async def test_missing_flowrt_schema_is_store_unavailable(settings: Settings) -> None:
    """Only flowrt's own objects: a deployment that skipped ``flowrt migrate``."""
    async with Database(settings.database_url) as db:
        for query in ("SELECT * FROM flowrt_nothing_here", "SELECT flowrt_nothing_here(1)"):
            with pytest.raises(StoreUnavailable, match=r"not migrated.*run `flowrt migrate`"):
                async with db.connection() as conn:
                    await conn.fetchval(query)


async def test_closed_database_cannot_restart(settings: Settings) -> None:
    db = Database(settings.database_url)
    await db.start()
    await db.close()
    with pytest.raises(RuntimeError):
        await db.start()
    with pytest.raises(RuntimeError):
        _ = db.pool
