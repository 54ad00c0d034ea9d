"""Actions: the context they receive, their retry policy and its backoff.

Actions are at-least-once: a worker that dies after an action ran but before the
outcome was committed leaves the event to another worker, which runs it again.
``ActionContext.idempotency_key`` is stable across those runs so an action can
deduplicate its external side effects (pass it to the payment API, say).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .events import Event

__all__ = ["ActionContext", "ActionFn", "RetryPolicy", "backoff"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often an action is tried, how long one try may take, and the waits between.

    A try that outlives ``timeout`` (seconds) is cancelled and counts as failed: a hung
    call must not hold its execution, and its lock, for ever.
    """

    attempts: int = 3
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.timeout <= 0:
            raise ValueError("RetryPolicy.timeout must be positive")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("RetryPolicy needs 0 <= initial_delay <= max_delay")


def backoff(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """Delay before try ``attempt + 1`` after try ``attempt`` failed (pure).

    Exponential, capped at ``max_delay``, with "equal jitter": half the delay is
    fixed, half is scaled by ``jitter`` in [0, 1), so retries of many executions
    that failed together spread out instead of arriving in waves.
    """
    base = min(policy.max_delay, policy.initial_delay * policy.multiplier ** (attempt - 1))
    return base / 2 + base / 2 * jitter


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action receives. ``data`` is a copy: return a dict to change it."""

    execution_id: str
    tenant: str
    workflow: str
    version: int
    event: Event
    state: str | None
    data: dict[str, Any]
    attempt: int
    idempotency_key: str
    log: Any  # a structlog BoundLogger bound to execution_id, event_id, seq, action


ActionFn = Callable[[ActionContext], Awaitable[dict[str, Any] | None]]
