"""flowrt: an event-sourced state-machine runtime.

Workflows are state machines; every event is appended to a PostgreSQL log, Redis
Streams wake the workers, and any execution can be replayed from its log.
"""

from .actions import ActionContext, RetryPolicy
from .app import App
from .definition import Definition, State, Transition, Workflow, load_definition, parse_definition
from .errors import (
    BusUnavailable,
    Conflict,
    DefinitionConflict,
    DefinitionError,
    ExecutionFinished,
    FlowrtError,
    IdempotencyMismatch,
    InvalidInput,
    LeaseLost,
    NotFound,
    SettingsError,
    StoreUnavailable,
    Unavailable,
)
from .events import ActionRecord, Event, Outcome, RecordedEvent
from .machine import Decision, Replay, Snapshot, apply, decide, replay

__all__ = [
    "ActionContext",
    "ActionRecord",
    "App",
    "BusUnavailable",
    "Conflict",
    "Decision",
    "Definition",
    "DefinitionConflict",
    "DefinitionError",
    "Event",
    "ExecutionFinished",
    "FlowrtError",
    "IdempotencyMismatch",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "Outcome",
    "RecordedEvent",
    "Replay",
    "RetryPolicy",
    "SettingsError",
    "Snapshot",
    "State",
    "StoreUnavailable",
    "Transition",
    "Unavailable",
    "Workflow",
    "apply",
    "decide",
    "load_definition",
    "parse_definition",
    "replay",
]
