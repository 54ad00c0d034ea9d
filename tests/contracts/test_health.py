"""HealthStore and ``flowrt.health``: what is stuck, found on this test's own database and key
prefix. Ages come from rows inserted with an explicit ``created_at``; Redis idle times from
XCLAIM's IDLE option or short thresholds, never long sleeps."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from flowrt.bus import Bus, Keys
from flowrt.bus.keys import GROUP
from flowrt.errors import StoreUnavailable
from flowrt.events import Hint
from flowrt.health import (
    STUCK_AFTER,
    UNPUBLISHED_AFTER,
    Report,
    Thresholds,
    check_postgres,
    check_redis,
    diagnose,
)
from flowrt.health_report import render_json, render_text
from flowrt.settings import Settings
from flowrt.store import Database
from flowrt.store.health import HealthStore
from tests.support.stuck import WORKFLOW, add_execution

from .conftest import closed_port

LIMITS = Thresholds(behind=60.0, unpublished=60.0, idle=30.0)
SHORT_IDLE = Thresholds(behind=60.0, unpublished=60.0, idle=0.2)


@pytest.fixture
def store(db: Database) -> HealthStore:
    return HealthStore(db)


async def _ghost_hint(bus: Bus, client: aioredis.Redis, consumer: str = "ghost",
                      idle_ms: int = 120_000) -> str:
    """A hint read by ``consumer`` and left pending, idle for ``idle_ms``."""
    await bus.ensure_group()
    await bus.publish([Hint(tenant="default", execution_id="x-hint", seq=1)])
    [d] = await bus.read(consumer, 1, 50)
    await client.xclaim(bus.keys.stream, GROUP, consumer, 0, [d.message_id], idle=idle_ms)
    return d.message_id


# --- healthy ---------------------------------------------------------------------------


async def test_healthy_finds_nothing(store: HealthStore, bus: Bus, pg: asyncpg.Connection,
                                     redis_client: aioredis.Redis) -> None:
    await add_execution(pg, "done", events=3, processed=3, age=600)  # all processed
    await add_execution(pg, "fresh", events=2, processed=1, published=False)  # just appended
    await bus.ensure_group()
    await bus.publish([Hint(tenant="default", execution_id="fresh", seq=2)])
    await bus.read("live", 10, 50)  # pending, but fresh
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "empty")  # nothing pending

    report = await diagnose(store, bus, LIMITS)

    assert report.healthy and report.problems == []
    pg_side, rd = report.postgres, report.redis
    assert rd is not None and report.redis_error is None
    for finding in (pg_side.stuck_executions, pg_side.dead_events,
                    pg_side.unpublished_events, rd.stale_pending_hints, rd.idle_consumers):
        assert (finding.count, finding.examples) == (0, [])
    assert (rd.stream_length, rd.stream_pending, rd.dead_letters) == (1, 1, 0)
    assert render_text(report).splitlines()[-1] == "flowrt doctor: healthy"


async def test_empty_database_and_prefix_are_healthy(store: HealthStore, bus: Bus) -> None:
    report = await diagnose(store, bus, LIMITS)  # no rows, no stream, no group
    assert report.healthy
    assert report.redis is not None and report.redis.stream_length == 0


# --- each finding ----------------------------------------------------------------------


async def test_lagging_execution_is_stuck(store: HealthStore, pg: asyncpg.Connection) -> None:
    await add_execution(pg, "lagging", events=3, processed=1, age=120)
    await add_execution(pg, "recent", events=2, processed=1, age=5)  # behind, not for long
    await add_execution(pg, "blocked", events=3, processed=1, dead_seq=2, age=120)

    count, [x] = await store.stuck_executions(60, 10)

    assert count == 1
    assert (x.tenant, x.execution_id, x.workflow, x.processed_seq, x.last_seq) == (
        "default", "lagging", WORKFLOW, 1, 3)
    assert 119 < x.waiting < 300
    assert (await store.stuck_executions(1, 10))[0] == 2  # "recent" too, past 1 s
    assert (await store.stuck_executions(600, 10))[0] == 0


async def test_dead_event_is_found_with_its_error(store: HealthStore,
                                                  pg: asyncpg.Connection) -> None:
    await add_execution(pg, "poisoned", events=3, processed=1, dead_seq=2,
                        error="delivered 6 times (max 5) and attempted 5+ times")
    count, [d] = await store.dead_events(10)
    assert count == 1
    assert (d.execution_id, d.seq, d.name) == ("poisoned", 2, "tick")
    assert d.error == "delivered 6 times (max 5) and attempted 5+ times"
    assert 0 <= d.age < 60


async def test_old_unpublished_event_is_found(store: HealthStore,
                                              pg: asyncpg.Connection) -> None:
    await add_execution(pg, "unsent", events=2, processed=0, published=False, age=300)
    await add_execution(pg, "sending", events=1, processed=0, published=False, age=1)
    count, found = await store.unpublished_events(60, 10)
    assert count == 2
    assert [(u.execution_id, u.seq) for u in found] == [("unsent", 1), ("unsent", 2)]
    assert all(299 < u.age < 600 for u in found)


async def test_examples_are_the_oldest_few_and_the_count_is_all(
        store: HealthStore, pg: asyncpg.Connection) -> None:
    for i in range(12):
        await add_execution(pg, f"x{i:02d}", events=2, processed=1, age=100 + i)
    count, examples = await store.stuck_executions(60, 10)
    assert count == 12
    assert [x.execution_id for x in examples] == [f"x{i:02d}" for i in range(11, 1, -1)]
    assert await store.stuck_executions(60, 0) == (12, [])


async def test_stale_pending_hint_and_idle_consumer_are_found(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    message_id = await _ghost_hint(bus, redis_client)
    await bus.publish([Hint(tenant="default", execution_id="x-live", seq=1)])
    [working] = await bus.read("live", 10, 50)

    # the hint is stale at once (XCLAIM IDLE); its consumer has to be idle for real
    rd = await check_redis(bus, SHORT_IDLE)
    assert rd.stale_pending_hints.count == 1
    [p] = rd.stale_pending_hints.examples
    assert (p.message_id, p.consumer) == (message_id, "ghost")
    assert p.hint == Hint(tenant="default", execution_id="x-hint", seq=1)
    assert rd.idle_consumers.count == 0

    await asyncio.sleep(0.3)
    # live keeps its hint fresh, as a worker's lock keeper does: not idle, though holding one
    await bus.touch("live", [working.message_id])
    rd = await check_redis(bus, SHORT_IDLE)
    assert rd.idle_consumers.count == 1
    [c] = rd.idle_consumers.examples
    assert (c.name, c.pending) == ("ghost", 1) and c.idle_ms >= 200
    assert (rd.stream_length, rd.stream_pending) == (2, 2)


async def test_idle_consumer_with_nothing_pending_is_no_problem(
        bus: Bus, redis_client: aioredis.Redis) -> None:
    await bus.ensure_group()
    await redis_client.xgroup_createconsumer(bus.keys.stream, GROUP, "left")
    await asyncio.sleep(0.3)
    rd = await check_redis(bus, SHORT_IDLE)
    assert rd.idle_consumers.count == 0  # the reclaimer prunes these; nothing is stuck


async def test_every_problem_at_once(store: HealthStore, bus: Bus, pg: asyncpg.Connection,
                                     redis_client: aioredis.Redis) -> None:
    await add_execution(pg, "lagging", events=2, processed=1, age=120)
    await add_execution(pg, "poisoned", events=2, processed=1, dead_seq=2, error="boom")
    await add_execution(pg, "unsent", events=1, processed=0, published=False, age=120)
    await _ghost_hint(bus, redis_client)
    await asyncio.sleep(0.3)

    report = await diagnose(store, bus, SHORT_IDLE)

    assert report.problems == ["stuck_executions", "dead_events", "unpublished_events",
                               "stale_pending_hints", "idle_consumers"]
    assert not report.healthy
    # "unsent" is behind as well as unpublished: both are true
    assert report.postgres.stuck_executions.count == 2
    lines = render_text(report).splitlines()
    assert lines[-1] == (
        "flowrt doctor: 5 problem(s): stuck executions, dead events, unpublished events,"
        " stale pending hints, idle consumers")
    for title in ("stuck executions (oldest first): 2", "dead events (oldest first): 1",
                  "unpublished events (oldest first): 1", "stale pending hints (oldest first): 1",
                  "idle consumers (idlest first): 1"):
        assert title in lines, title
    doc = msgspec.json.decode(render_json(report))
    assert doc["healthy"] is False and doc["problems"] == report.problems
    assert msgspec.convert({k: v for k, v in doc.items() if k not in ("healthy", "problems")},
                           Report) == report


# --- Redis or PostgreSQL unreachable ---------------------------------------------------


async def test_redis_unreachable_reports_postgres_and_says_so(
        store: HealthStore, pg: asyncpg.Connection) -> None:
    await add_execution(pg, "poisoned", events=2, processed=1, dead_seq=2, error="boom")
    async with Bus(f"redis://127.0.0.1:{closed_port()}/0", Keys("flowrt-test-dead"),
                   timeout=1.0) as dead:
        report = await diagnose(store, dead, LIMITS)
    assert report.redis is None
    assert report.redis_error is not None and "Redis unavailable" in report.redis_error
    assert report.postgres.dead_events.count == 1
    assert report.problems == ["dead_events", "redis_unreachable"]
    lines = render_text(report).splitlines()
    assert [line.split()[:4] for line in lines if "UNREACHABLE" in line] == [
        ["stale", "pending", "hints", "-"], ["idle", "consumers", "-", "UNREACHABLE"]]
    assert lines[-1] == "flowrt doctor: 2 problem(s): dead events, redis unreachable"


async def test_postgres_unreachable_raises(bus: Bus) -> None:
    async with Database(f"postgresql://postgres@127.0.0.1:{closed_port()}/x",
                        timeout=1.0) as dead:
        with pytest.raises(StoreUnavailable):
            await diagnose(HealthStore(dead), bus, LIMITS)
        with pytest.raises(StoreUnavailable):
            await check_postgres(HealthStore(dead), LIMITS, examples=0)


def test_thresholds_for_settings() -> None:
    s = Settings(claim_timeout=45.0)
    assert Thresholds.for_settings(s) == Thresholds(behind=STUCK_AFTER,
                                                    unpublished=UNPUBLISHED_AFTER, idle=45.0)
    assert Thresholds.for_settings(s, behind=5, unpublished=7) == Thresholds(
        behind=5, unpublished=7, idle=45.0)


async def test_dead_events_have_their_partial_index(pg: asyncpg.Connection) -> None:
    """sql/0003, applied to the template every test database is cloned from."""
    definition = await pg.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'event_processing_dead'")
    assert definition is not None and "WHERE (status = 'dead'::text)" in definition
