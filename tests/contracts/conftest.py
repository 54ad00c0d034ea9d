"""Fixtures for the contract tests: a started Database, a started Bus, demo executions."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from flowrt.bus import Bus, Keys
from flowrt.settings import Settings
from flowrt.store import Database, ExecutionStore, ProcessingStore
from tests.support.api import register_demo


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    async with Database(settings.database_url, timeout=3.0) as database:
        yield database


@pytest.fixture
async def demo_db(settings: Settings, db: Database) -> Database:
    """``db`` with the demo definitions (workflow ``order`` v1) registered."""
    await register_demo(settings)
    return db


@pytest.fixture
def executions(demo_db: Database) -> ExecutionStore:
    return ExecutionStore(demo_db)


@pytest.fixture
def processing(demo_db: Database) -> ProcessingStore:
    return ProcessingStore(demo_db)


@pytest.fixture
async def bus(redis_server_url: str, redis_prefix: str) -> AsyncIterator[Bus]:
    """A started Bus on this test's key prefix (the same values ``settings`` carries, without
    cloning a database for tests that only need Redis)."""
    async with Bus(redis_server_url, Keys(redis_prefix), timeout=3.0) as b:
        yield b
