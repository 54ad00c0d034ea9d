"""The event envelope and the recorded outcome of processing one event.

Ids and timestamps arrive on the envelope, filled in by the edge (API, worker), so
the core never reads a clock or a random source and a log always folds the same.
Runtime events that later issues add (timers, cancel, pause) are new reserved
names under ``flowrt.``; the envelope does not change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "EVENT_STATUSES",
    "EXECUTION_STATUSES",
    "RESERVED_PREFIX",
    "STARTED",
    "ActionRecord",
    "Event",
    "EventStatus",
    "ExecutionStatus",
    "Hint",
    "Outcome",
    "RecordedEvent",
    "is_reserved",
]

RESERVED_PREFIX = "flowrt."
STARTED = "flowrt.started"

EventStatus = Literal["pending", "processing", "completed", "ignored", "failed", "dead"]
ExecutionStatus = Literal["running", "completed", "failed", "cancelled"]
EVENT_STATUSES: tuple[str, ...] = (
    "pending", "processing", "completed", "ignored", "failed", "dead")
EXECUTION_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


def is_reserved(name: str) -> bool:
    """Names under ``flowrt.`` belong to the runtime; clients may not send them."""
    return name.startswith(RESERVED_PREFIX)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of an execution's log, as appended."""

    seq: int
    event_id: str
    name: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: datetime | None = None


class ActionRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one action did: its result on success, its error when it gave up."""

    name: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The recorded result of processing an event (the processing record)."""

    status: EventStatus
    from_state: str | None = None
    to_state: str | None = None
    actions: tuple[ActionRecord, ...] = ()
    error: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event with its outcome: what replay folds."""

    event: Event
    outcome: Outcome


class Hint(msgspec.Struct, frozen=True, kw_only=True):
    """A wake-up hint: "execution X has work up to seq N". Never the event of record."""

    tenant: str
    execution_id: str
    seq: int
