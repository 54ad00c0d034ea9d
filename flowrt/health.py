"""What is stuck, right now: the invariants ``flowrt doctor`` checks and the worker's gauges show.

PostgreSQL side (the truth):
- stuck executions: not blocked, and their next unprocessed event waited longer than
  ``Thresholds.behind`` (the reconciler and the workers should have moved them);
- dead events: marked dead; each blocks the rest of its execution;
- unpublished events: their hint has not reached Redis ``Thresholds.unpublished``
  after the append (the relay should have sent it).

Redis side (the hints):
- stale pending hints: delivered and not acknowledged for longer than
  ``Thresholds.idle`` (the claim timeout: a reclaimer should have taken them over);
- idle consumers: holding pending hints and idle longer than ``Thresholds.idle``.

``diagnose`` needs PostgreSQL (``StoreUnavailable`` otherwise); when only Redis does
not answer, the report carries the PostgreSQL checks and says Redis is unreachable.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from .bus import Bus, Consumer, PendingHint
from .errors import BusUnavailable
from .settings import Settings
from .store.health import DeadEvent, HealthStore, StuckExecution, UnpublishedEvent

__all__ = [
    "EXAMPLES",
    "STUCK_AFTER",
    "UNPUBLISHED_AFTER",
    "Finding",
    "PostgresHealth",
    "RedisHealth",
    "Report",
    "Thresholds",
    "check_postgres",
    "check_redis",
    "diagnose",
]

STUCK_AFTER = 60.0  # s: well past the reconciler's grace (10 s by default)
UNPUBLISHED_AFTER = 60.0  # s: well past the relay's grace (2 s by default)
EXAMPLES = 10  # rows shown per finding

T = TypeVar("T")


class Finding(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """How many match, and the oldest few of them."""

    count: int
    examples: list[T]


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    """Ages in seconds past which something counts as stuck."""

    behind: float  # the next unprocessed event's wait (stuck executions)
    unpublished: float  # since the append (unpublished events)
    idle: float  # FLOWRT_CLAIM_TIMEOUT (stale pending hints, idle consumers)

    @classmethod
    def for_settings(cls, s: Settings, *, behind: float | None = None,
                     unpublished: float | None = None) -> Thresholds:
        """The defaults (60 s each, the claim timeout for idle), or the ages given."""
        return cls(behind=STUCK_AFTER if behind is None else behind,
                   unpublished=UNPUBLISHED_AFTER if unpublished is None else unpublished,
                   idle=s.claim_timeout)


class PostgresHealth(msgspec.Struct, frozen=True, kw_only=True):
    stuck_executions: Finding[StuckExecution]
    dead_events: Finding[DeadEvent]
    unpublished_events: Finding[UnpublishedEvent]


class RedisHealth(msgspec.Struct, frozen=True, kw_only=True):
    stale_pending_hints: Finding[PendingHint]
    idle_consumers: Finding[Consumer]
    # For information, never a problem by themselves:
    dead_letters: int  # entries in the dead-letter stream (history; the dead events count)
    stream_length: int  # entries in the hint stream
    stream_pending: int  # hints delivered and not yet acknowledged


class Report(msgspec.Struct, frozen=True, kw_only=True):
    thresholds: Thresholds
    postgres: PostgresHealth
    redis: RedisHealth | None  # None when Redis did not answer
    redis_error: str | None = None

    @property
    def problems(self) -> list[str]:
        """The names of the checks that found something (empty when healthy)."""
        found = [name for name, finding in (
            ("stuck_executions", self.postgres.stuck_executions),
            ("dead_events", self.postgres.dead_events),
            ("unpublished_events", self.postgres.unpublished_events),
            *((("stale_pending_hints", self.redis.stale_pending_hints),
               ("idle_consumers", self.redis.idle_consumers)) if self.redis else ()),
        ) if finding.count]
        if self.redis is None:
            found.append("redis_unreachable")
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems


async def check_postgres(store: HealthStore, thresholds: Thresholds,
                         examples: int = EXAMPLES) -> PostgresHealth:
    """The log's checks; ``examples=0`` only counts (the gauges)."""
    stuck = await store.stuck_executions(thresholds.behind, examples)
    dead = await store.dead_events(examples)
    unpublished = await store.unpublished_events(thresholds.unpublished, examples)
    return PostgresHealth(stuck_executions=Finding(count=stuck[0], examples=stuck[1]),
                          dead_events=Finding(count=dead[0], examples=dead[1]),
                          unpublished_events=Finding(count=unpublished[0],
                                                     examples=unpublished[1]))


async def check_redis(bus: Bus, thresholds: Thresholds, examples: int = EXAMPLES) -> RedisHealth:
    """The consumer group's checks; raises ``BusUnavailable`` when Redis does not answer."""
    idle_ms = int(thresholds.idle * 1000)
    stale, stale_examples = await bus.stale_pending(idle_ms, examples)
    idle = [c for c in await bus.consumers() if c.pending > 0 and c.idle_ms >= idle_ms]
    idle.sort(key=lambda c: c.idle_ms, reverse=True)
    length, pending = await bus.stats()
    return RedisHealth(stale_pending_hints=Finding(count=stale, examples=stale_examples),
                       idle_consumers=Finding(count=len(idle), examples=idle[:examples]),
                       dead_letters=await bus.dead_letter_count(),
                       stream_length=length, stream_pending=pending)


async def diagnose(store: HealthStore, bus: Bus, thresholds: Thresholds,
                   examples: int = EXAMPLES) -> Report:
    """Every check. PostgreSQL must answer; Redis not answering is reported, not raised."""
    postgres = await check_postgres(store, thresholds, examples)
    try:
        redis: RedisHealth | None = await check_redis(bus, thresholds, examples)
        error = None
    except BusUnavailable as exc:
        redis, error = None, str(exc)
    return Report(thresholds=thresholds, postgres=postgres, redis=redis, redis_error=error)
