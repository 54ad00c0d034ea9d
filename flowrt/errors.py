"""flowrt's one exception tree.

    FlowrtError                      base of everything flowrt raises on purpose
    ├── DefinitionError              a workflow definition is invalid (carries every problem)
    ├── DefinitionConflict           same name and version, different body
    ├── SettingsError                a FLOWRT_* variable or flag is invalid (names it)
    ├── NotFound                     unknown execution, workflow or version
    ├── Conflict                     the request contradicts what is recorded
    │   ├── ExecutionFinished        event for a completed/failed/cancelled execution
    │   └── IdempotencyMismatch      same Idempotency-Key, different body
    ├── InvalidInput                 a request body or argument is malformed
    ├── Unavailable                  a dependency is down; retryable
    │   ├── StoreUnavailable         PostgreSQL unreachable (or not migrated yet)
    │   └── BusUnavailable           Redis unreachable
    ├── LeaseLost                    a worker's fenced commit affected nothing
    └── ActionMissing                this worker's app lacks an action the definition names

An action that gives up is not an exception here: its error is recorded on the
event (``ActionRecord.error``) and the event fails, or moves to ``on_error``.

Whether an error may be retried travels as data (``retryable``), so callers never
match on driver exception types: adapters translate those at the boundary.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ActionMissing",
    "BusUnavailable",
    "Conflict",
    "DefinitionConflict",
    "DefinitionError",
    "ExecutionFinished",
    "FlowrtError",
    "IdempotencyMismatch",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "SettingsError",
    "StoreUnavailable",
    "Unavailable",
]


class FlowrtError(Exception):
    """Base class of every error flowrt raises on purpose."""

    retryable: ClassVar[bool] = False


class DefinitionError(FlowrtError):
    """A definition is invalid. ``problems`` lists every problem as ``(location, message)``;
    ``positions`` gives the (line, column) of locations in a YAML file."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None,
                 positions: dict[str, tuple[int, int]] | None = None) -> None:
        self.problems = problems
        self.source = source
        self.positions = positions or {}
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {loc}{self._at(loc)}: {msg}" for loc, msg in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")

    def _at(self, loc: str) -> str:
        if loc not in self.positions:
            return ""
        line, column = self.positions[loc]
        return f" (line {line}, column {column})"


class DefinitionConflict(FlowrtError):
    """A definition with this name and version is registered with a different body."""


class SettingsError(FlowrtError):
    """A setting is invalid; the message names the variable or flag."""


class NotFound(FlowrtError):
    """The execution, workflow or version does not exist."""


class Conflict(FlowrtError):
    """The request contradicts what is already recorded."""


class ExecutionFinished(Conflict):
    """The execution has finished and accepts no more events."""


class IdempotencyMismatch(Conflict):
    """An Idempotency-Key was reused with a different request body."""


class InvalidInput(FlowrtError):
    """A request body or argument is malformed."""


class Unavailable(FlowrtError):
    """A dependency is unreachable; the same request may succeed later."""

    retryable = True


class StoreUnavailable(Unavailable):
    """PostgreSQL is unreachable, or has no flowrt schema yet (run ``flowrt migrate``)."""


class BusUnavailable(Unavailable):
    """Redis is unreachable."""


class LeaseLost(FlowrtError):
    """A fenced commit affected nothing: another worker owns the execution now."""

    retryable = True


class ActionMissing(FlowrtError):
    """This worker's app does not register an action the definition names.

    A deployment problem, not the event's fault: the event is left for a worker that
    has the action (it is dead-lettered only if no worker ever does).
    """
