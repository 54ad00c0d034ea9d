"""Migrations: applied once each, in order, safely under concurrency; the log's schema guards."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from flowrt.errors import StoreUnavailable
from flowrt.store import migrate
from flowrt.store.migrate import migrations
from tests.conftest import with_database

from .conftest import closed_port

EXPECTED_TABLES = {"api_keys", "event_processing", "events", "executions", "flowrt_migrations",
                   "tenants", "workflow_definitions"}


@pytest.fixture
async def empty_db(pg_server_url: str) -> AsyncIterator[str]:
    """A brand-new, unmigrated database of this test's own; dropped afterwards."""
    name = f"flowrt_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(pg_server_url, name)
    finally:
        admin = await asyncpg.connect(pg_server_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _versions(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM flowrt_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


ALL = ["0001_init.sql", "0002_append_function.sql", "0003_dead_events_index.sql",
       "0004_start_function.sql", "0005_events_refuse_truncate.sql", "0006_tenants_and_keys.sql",
       "0007_append_events_batch.sql", "0008_worker_batches.sql",
       "0009_start_executions_batch.sql", "0010_mark_events_batch.sql",
       "0011_commit_marks_next.sql"]
VERSIONS = [(1, "init"), (2, "append_function"), (3, "dead_events_index"),
            (4, "start_function"), (5, "events_refuse_truncate"), (6, "tenants_and_keys"),
            (7, "append_events_batch"), (8, "worker_batches"),
            (9, "start_executions_batch"), (10, "mark_events_batch"), (11, "commit_marks_next")]


def test_migrations_are_found_in_order() -> None:
    found = migrations()
    assert [(v, n) for v, n, _ in found] == VERSIONS
    assert [v for v, _, _ in found] == sorted({v for v, _, _ in found})


async def test_migrate_applies_once_then_nothing(empty_db: str) -> None:
    assert await _tables(empty_db) == set()
    progress: list[str] = []

    first = await migrate(empty_db, progress=progress.append)

    assert first == ALL
    assert progress == [f"applying {name}" for name in ALL]
    assert await _tables(empty_db) == EXPECTED_TABLES
    assert await _versions(empty_db) == VERSIONS

    again: list[str] = []
    assert await migrate(empty_db, progress=again.append) == []
    assert again == []
    assert await _versions(empty_db) == VERSIONS


async def test_concurrent_migrations_apply_each_version_once(empty_db: str) -> None:
    results = await asyncio.gather(migrate(empty_db), migrate(empty_db), migrate(empty_db))

    assert sorted(results, key=len) == [[], [], ALL]
    assert await _versions(empty_db) == VERSIONS
    assert await _tables(empty_db) == EXPECTED_TABLES


async def test_migrate_releases_its_advisory_lock(empty_db: str) -> None:
    await migrate(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    finally:
        await conn.close()
    assert held == 0


async def _migrate_to(url: str, last: int, tmp_path: Path) -> None:
    """Apply the migrations up to ``last`` only: a database made by an older flowrt."""
    older = tmp_path / f"sql-{last}"
    older.mkdir()
    for version, _name, path in migrations():
        if version <= last:
            shutil.copy(path, older / path.name)
    await migrate(url, directory=older)


async def test_0006_keeps_the_tenants_and_merges_their_definitions(
        empty_db: str, tmp_path: Path) -> None:
    await _migrate_to(empty_db, 5, tmp_path)
    conn = await asyncpg.connect(empty_db)
    try:
        for tenant in ("acme", "globex"):
            await conn.execute(
                "INSERT INTO workflow_definitions (tenant_id, name, version, body, body_hash)"
                " VALUES ($1, 'wf', 1, '{}', 'same')", tenant)
            await conn.execute(
                "INSERT INTO executions (tenant_id, execution_id, workflow, version,"
                " request_hash) VALUES ($1, 'x1', 'wf', 1, 'r')", tenant)
        assert (await migrate(empty_db))[0] == "0006_tenants_and_keys.sql"
        tenants = await conn.fetch("SELECT tenant_id FROM tenants ORDER BY 1")
        assert [r[0] for r in tenants] == ["acme", "globex"]
        defs = await conn.fetch("SELECT name, version, body_hash FROM workflow_definitions")
        assert [tuple(r) for r in defs] == [("wf", 1, "same")]
        assert await conn.fetchval("SELECT count(*) FROM executions") == 2
    finally:
        await conn.close()


async def test_0006_refuses_two_tenants_bodies_under_one_version(
        empty_db: str, tmp_path: Path) -> None:
    await _migrate_to(empty_db, 5, tmp_path)
    conn = await asyncpg.connect(empty_db)
    try:
        for tenant, digest in (("acme", "one"), ("globex", "two")):
            await conn.execute(
                "INSERT INTO workflow_definitions (tenant_id, name, version, body, body_hash)"
                " VALUES ($1, 'wf', 1, '{}', $2)", tenant, digest)
        with pytest.raises(asyncpg.RaiseError, match="give one of them a new version"):
            await migrate(empty_db)
        assert await _versions(empty_db) == VERSIONS[:5]  # nothing half-applied
    finally:
        await conn.close()


async def test_migrate_against_closed_port_is_store_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    with pytest.raises(StoreUnavailable):
        await migrate(url, timeout=2.0)


# --- the log is append-only ----------------------------------------------------------


async def _one_event(pg: asyncpg.Connection) -> None:
    await pg.execute(
        "INSERT INTO workflow_definitions (name, version, body, body_hash)"
        " VALUES ('wf', 1, '{}', 'h')")
    await pg.execute(
        "INSERT INTO executions (execution_id, workflow, version, last_seq, request_hash)"
        " VALUES ('x1', 'wf', 1, 1, 'r')")
    await pg.execute(
        "INSERT INTO events (execution_id, seq, event_id, name, payload, request_hash)"
        " VALUES ('x1', 1, gen_random_uuid(), 'flowrt.started', '{\"a\": 1}', 'r')")


async def test_events_refuse_update(pg: asyncpg.Connection) -> None:
    await _one_event(pg)
    with pytest.raises(asyncpg.RaiseError, match=r"append-only \(UPDATE refused\)"):
        await pg.execute("UPDATE events SET name = 'tampered' WHERE execution_id = 'x1'")
    name = await pg.fetchval("SELECT name FROM events WHERE execution_id = 'x1'")
    assert name == "flowrt.started"


async def test_events_refuse_delete(pg: asyncpg.Connection) -> None:
    await _one_event(pg)
    with pytest.raises(asyncpg.RaiseError, match=r"append-only \(DELETE refused\)"):
        await pg.execute("DELETE FROM events WHERE execution_id = 'x1'")
    assert await pg.fetchval("SELECT count(*) FROM events") == 1


async def test_events_refuse_truncate(pg: asyncpg.Connection) -> None:
    await _one_event(pg)
    for statement in ("TRUNCATE events, event_processing", "TRUNCATE executions CASCADE"):
        with pytest.raises(asyncpg.RaiseError, match=r"append-only \(TRUNCATE refused\)"):
            await pg.execute(statement)
    assert await pg.fetchval("SELECT count(*) FROM events") == 1
