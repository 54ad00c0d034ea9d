"""The pure state machine: decide what an event does, apply what happened, replay a log.

No I/O, no clock, no randomness: ``replay(workflow, log)`` is a function, which is
what lets ``flowrt replay`` explain any execution after the fact. Live processing
(the engine) and replay share ``decide`` and ``apply``: the engine runs the actions
a decision names and hands their records to ``apply``; replay hands it the records
from the log instead, and never runs an action.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from .definition import Workflow
from .events import FINISHED, STARTED, ActionRecord, Event, Outcome, RecordedEvent

__all__ = [
    "Decision",
    "GuardResult",
    "Replay",
    "Snapshot",
    "Step",
    "apply",
    "decide",
    "error_actions",
    "replay",
]


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An execution's state after folding its log up to ``seq``."""

    status: str = "running"
    state: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    seq: int = 0


class GuardResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    expression: str
    passed: bool
    error: str | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What an event does in a snapshot, before any action runs."""

    kind: Literal["transition", "ignored"]
    from_state: str | None
    to_state: str | None
    actions: tuple[str, ...] = ()
    guards: tuple[GuardResult, ...] = ()
    on_error: str | None = None
    reason: str | None = None


def decide(workflow: Workflow, snapshot: Snapshot, event: Event) -> Decision:
    """Pick the transition ``event`` takes from ``snapshot`` (pure)."""
    d = workflow.definition
    here = snapshot.state
    if snapshot.status in FINISHED:
        return Decision(kind="ignored", from_state=here, to_state=here,
                        reason=f"execution is {snapshot.status}")
    if event.name == STARTED:
        if here is not None:
            return Decision(kind="ignored", from_state=here, to_state=here,
                            reason="execution already started")
        return Decision(kind="transition", from_state=None, to_state=d.initial,
                        actions=d.states[d.initial].entry)
    if here is None:
        return Decision(kind="ignored", from_state=None, to_state=None,
                        reason="execution has not started")
    candidates = workflow.candidates(here, event.name)
    if not candidates:
        return Decision(kind="ignored", from_state=here, to_state=here,
                        reason=f"no transition for {event.name!r} in state {here!r}")
    results: list[GuardResult] = []
    for t in candidates:
        if t.guard is not None:
            passed, error = workflow.guard(t.guard).evaluate(snapshot.data, event.payload, here)
            results.append(GuardResult(expression=t.guard, passed=passed, error=error))
            if not passed:
                continue
        if t.target is None:  # internal: actions only, no exit or entry
            return Decision(kind="transition", from_state=here, to_state=here, actions=t.actions,
                            guards=tuple(results), on_error=t.on_error)
        actions = d.states[here].exit + t.actions + d.states[t.target].entry
        return Decision(kind="transition", from_state=here, to_state=t.target, actions=actions,
                        guards=tuple(results), on_error=t.on_error)
    return Decision(kind="ignored", from_state=here, to_state=here, guards=tuple(results),
                    reason=f"no guard passed for {event.name!r} in state {here!r}")


def error_actions(workflow: Workflow, decision: Decision) -> tuple[str, ...]:
    """Actions to run after a failure when the transition names ``on_error``."""
    if decision.on_error is None:
        return ()
    return workflow.definition.states[decision.on_error].entry


def expected_actions(workflow: Workflow, decision: Decision,
                     records: Sequence[ActionRecord]) -> tuple[str, ...]:
    """The action names a faithful run of ``decision`` records, given where it failed."""
    for i, rec in enumerate(records[: len(decision.actions)]):
        if not rec.ok:
            handled = decision.actions[: i + 1] + error_actions(workflow, decision)
            # the engine stops at the first on_error entry action that fails too
            for j in range(i + 1, min(len(records), len(handled))):
                if not records[j].ok:
                    return handled[: j + 1]
            return handled
    return decision.actions


def apply(workflow: Workflow, snapshot: Snapshot, event: Event, decision: Decision,
          records: Sequence[ActionRecord]) -> tuple[Snapshot, Outcome]:
    """Fold one processed event: the new snapshot and the outcome to record (pure).

    Successful action results are merged into ``data`` in order. When an action
    gives up, the event fails and the execution fails with its state and data
    unchanged, unless the transition names ``on_error``: then the execution moves
    there, the error stays on the event, and the error state's entry actions run.
    """
    seq = event.seq
    if decision.kind == "ignored":
        return (msgspec.structs.replace(snapshot, seq=seq),
                Outcome(status="ignored", from_state=decision.from_state,
                        to_state=decision.from_state, error=decision.reason))
    records = tuple(records)
    failed_at = next((i for i, r in enumerate(records[: len(decision.actions)]) if not r.ok), None)
    error = None if failed_at is None else records[failed_at].error
    target = decision.to_state
    if failed_at is not None:
        later = records[len(decision.actions[: failed_at + 1]):]
        if decision.on_error is None or any(not r.ok for r in later):
            message = error if decision.on_error is None else (
                f"{error}; then on_error {decision.on_error!r} failed:"
                f" {next(r.error for r in later if not r.ok)}")
            return (msgspec.structs.replace(snapshot, seq=seq, status="failed"),
                    Outcome(status="failed", from_state=decision.from_state,
                            to_state=decision.from_state, actions=records, error=message))
        target = decision.on_error
    data = dict(event.payload.get("input") or {}) if event.name == STARTED else dict(snapshot.data)
    for rec in records:
        if rec.ok and rec.result:
            data.update(rec.result)
    assert target is not None
    status = "completed" if workflow.definition.states[target].final else "running"
    return (Snapshot(status=status, state=target, data=data, seq=seq),
            Outcome(status="completed", from_state=decision.from_state, to_state=target,
                    actions=records, error=error))


# --- replay ------------------------------------------------------------------

PROCESSED = frozenset({"completed", "ignored", "failed"})


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a replay: what the definition decides against what was recorded."""

    event: Event
    recorded: Outcome
    decision: Decision | None = None
    computed: Outcome | None = None
    before: Snapshot | None = None
    after: Snapshot | None = None
    matches: bool = True
    mismatch: str | None = None


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    snapshot: Snapshot
    steps: tuple[Step, ...]
    blocked_at: int | None = None

    @property
    def matches(self) -> bool:
        return all(s.matches for s in self.steps)


def replay(workflow: Workflow, log: Iterable[RecordedEvent], until: int | None = None) -> Replay:
    """Fold a log through the machine with the recorded action results (pure).

    Processed events are re-decided and compared with what was recorded; a
    pending or dead event ends the fold (later events wait behind it).
    """
    snapshot = Snapshot()
    steps: list[Step] = []
    blocked_at: int | None = None
    for rec in log:
        event, recorded = rec.event, rec.outcome
        if until is not None and event.seq > until:
            break
        if blocked_at is not None or recorded.status not in PROCESSED:
            if blocked_at is None:
                blocked_at = event.seq
            steps.append(Step(event=event, recorded=recorded))
            continue
        if event.seq != snapshot.seq + 1:
            steps.append(Step(event=event, recorded=recorded, matches=False,
                              mismatch=f"gap in the log: expected seq {snapshot.seq + 1}"))
            blocked_at = event.seq
            continue
        decision = decide(workflow, snapshot, event)
        after, computed = apply(workflow, snapshot, event, decision, recorded.actions)
        mismatch = _compare(workflow, decision, computed, recorded)
        steps.append(Step(event=event, recorded=recorded, decision=decision, computed=computed,
                          before=snapshot, after=after, matches=mismatch is None,
                          mismatch=mismatch))
        snapshot = after
    return Replay(snapshot=snapshot, steps=tuple(steps), blocked_at=blocked_at)


def _compare(workflow: Workflow, decision: Decision, computed: Outcome,
             recorded: Outcome) -> str | None:
    if computed.status != recorded.status:
        return f"status: recorded {recorded.status}, replay gives {computed.status}"
    if computed.to_state != recorded.to_state:
        return f"state: recorded {recorded.to_state}, replay gives {computed.to_state}"
    names = tuple(r.name for r in recorded.actions)
    want = (expected_actions(workflow, decision, recorded.actions)
            if decision.kind != "ignored" else ())
    if names != want:
        return f"actions: recorded {list(names)}, definition names {list(want)}"
    return None
