"""Property tests: replaying a log gives what live processing gave, at every point.

Random event sequences (the workflow's events, unknown and reserved names, random
payload amounts) are processed step by step with decide + apply and a
deterministic action runner whose failures hypothesis chooses. Replaying any
prefix of the resulting log must reproduce the live snapshot at that point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowrt.definition import Workflow, load_definition, parse_definition
from flowrt.events import FINISHED, STARTED, ActionRecord, Event, RecordedEvent
from flowrt.machine import Decision, Snapshot, apply, decide, error_actions, replay

DEMO = load_definition(Path(__file__).resolve().parents[2] / "workers" / "demo" / "order.yaml")

# Exit/entry actions, internal transitions, guarded candidate lists and on_error.
SHOP = parse_definition({
    "name": "shop",
    "version": 1,
    "initial": "cart",
    "states": {
        "cart": {
            "entry": ["open_cart"],
            "exit": ["close_cart"],
            "on": {
                "add": {"actions": ["add_item"]},
                "approve": [
                    {"target": "paying", "guard": "payload.amount > 1000",
                     "actions": ["big_order"]},
                    {"target": "paying", "guard": "payload.amount >= 0",
                     "actions": ["small_order"]},
                ],
                "ship": {"target": "paid", "actions": ["charge"], "on_error": "payment_failed"},
            },
        },
        "paying": {
            "entry": ["start_payment"],
            "exit": ["end_payment"],
            "on": {
                "ship": {"target": "paid", "actions": ["charge"], "on_error": "payment_failed"},
                "reject": {"target": "cart"},
                "approve_large": {"target": "cancelled", "actions": ["refund"],
                                  "on_error": "cancelled"},
            },
        },
        "paid": {"entry": ["receipt"], "final": True},
        # Two entry actions: a failing first one must stop the second (as the engine does).
        "payment_failed": {"entry": ["alert", "page"],
                           "on": {"reject": {"target": "paying"}, "add": {"actions": ["log"]}}},
        "cancelled": {"entry": ["bye"], "final": True},
    },
})

WORKFLOWS = {"demo": DEMO, "shop": SHOP}

EVENT_NAMES = ["approve", "approve_large", "reject", "ship", "add",
               STARTED, "teleport", "flowrt.timer", "cancel"]

payloads: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"amount": st.integers(min_value=-5, max_value=3000)}),
    st.fixed_dictionaries({"amount": st.sampled_from([0, 999, 1000, 1001, 12.5, 1000.5])}),
    st.just({}),
    st.fixed_dictionaries({"amount": st.sampled_from(["500", None, True])}),
)


def scenarios(workflow: Workflow) -> st.SearchStrategy[Any]:
    """Whether it starts, the start input, and the events after it.

    Each event is its name (mostly one the workflow handles), its payload, and
    which of the actions it runs fail, by position in run order (0 is the first
    action run, on_error entry actions included): mostly none.
    """
    failures = st.one_of(
        st.just(frozenset[int]()),
        st.just(frozenset[int]()),
        st.frozensets(st.integers(min_value=0, max_value=4), min_size=1, max_size=3),
    )
    own = sorted({e for state in workflow.definition.states.values() for e in state.on})
    names = st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(EVENT_NAMES))
    events = st.tuples(names, payloads, failures)
    return st.tuples(
        st.sampled_from([True, True, True, False]),  # start with flowrt.started?
        st.fixed_dictionaries({"amount": st.integers(0, 2000),
                               "customer": st.sampled_from("abc")}),
        failures,                                    # failures while starting
        st.lists(events, max_size=14),
    )


SCENARIOS = {name: scenarios(wf) for name, wf in WORKFLOWS.items()}


def run_actions(workflow: Workflow, decision: Decision, seq: int,
                failing: frozenset[int]) -> list[ActionRecord]:
    """Deterministic stand-in for Engine._run_actions: results from seq and name.

    Runs the decision's actions until one fails; after the first failure it runs
    the on_error state's entry actions, stopping if one of those fails too. The
    n-th action run (from 0) fails when n is in ``failing``.
    """
    records: list[ActionRecord] = []
    queue = list(decision.actions)
    failed = False
    while queue:
        name = queue.pop(0)
        if len(records) in failing:
            records.append(ActionRecord(name=name, ok=False, error=f"{name} failed at {seq}"))
            if failed:
                break
            failed = True
            queue = list(error_actions(workflow, decision))
        elif seq % 3 == 0:
            records.append(ActionRecord(name=name, ok=True))  # no result
        else:
            records.append(ActionRecord(name=name, ok=True,
                                        result={name: seq, "last": name, "amount": -seq}))
    return records


def process(workflow: Workflow, scenario: Any) -> tuple[list[RecordedEvent], list[Snapshot]]:
    """Live processing: the log and the snapshot after each event (history[0] is empty)."""
    started, input_, start_failing, rest = scenario
    todo: list[tuple[str, dict[str, Any], frozenset[int]]] = []
    if started:
        todo.append((STARTED, {"input": input_}, start_failing))
    todo.extend(rest)
    snapshot = Snapshot()
    log: list[RecordedEvent] = []
    history = [snapshot]
    for seq, (name, payload, failing) in enumerate(todo, start=1):
        event = Event(seq=seq, event_id=f"ev-{seq}", name=name, payload=dict(payload))
        decision = decide(workflow, snapshot, event)
        records = (run_actions(workflow, decision, seq, failing)
                   if decision.kind == "transition" else [])
        after, outcome = apply(workflow, snapshot, event, decision, records)
        # Invariants of live processing.
        assert after.seq == seq
        if snapshot.status in FINISHED:
            assert outcome.status == "ignored"
            assert (after.status, after.state, after.data) == (
                snapshot.status, snapshot.state, snapshot.data)
        if outcome.status in ("ignored", "failed"):
            assert after.state == snapshot.state
            assert after.data == snapshot.data
        if outcome.status == "failed":
            assert after.status == "failed"
        log.append(RecordedEvent(event=event, outcome=outcome))
        history.append(after)
        snapshot = after
    return log, history


common = settings(max_examples=200, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("wf_name", sorted(WORKFLOWS))
@common
@given(data=st.data())
def test_replay_of_every_prefix_matches_live_processing(wf_name: str,
                                                        data: st.DataObject) -> None:
    workflow = WORKFLOWS[wf_name]
    scenario = data.draw(SCENARIOS[wf_name], label="scenario")
    log, history = process(workflow, scenario)

    full = replay(workflow, log)
    assert full.blocked_at is None
    assert full.matches, [s.mismatch for s in full.steps if not s.matches]
    assert all(s.matches and s.mismatch is None for s in full.steps)
    assert full.snapshot == history[-1]
    assert len(full.steps) == len(log)
    for i, s in enumerate(full.steps):
        assert s.computed == log[i].outcome
        assert s.before == history[i]
        assert s.after == history[i + 1]

    for k in range(len(log) + 1):
        prefix = replay(workflow, log[:k])
        assert prefix.snapshot == history[k]
        assert prefix.matches
        assert replay(workflow, log, until=k).snapshot == history[k]


@pytest.mark.parametrize("wf_name", sorted(WORKFLOWS))
@common
@given(data=st.data())
def test_replay_stops_at_the_first_unprocessed_event(wf_name: str,
                                                     data: st.DataObject) -> None:
    workflow = WORKFLOWS[wf_name]
    scenario = data.draw(SCENARIOS[wf_name], label="scenario")
    log, history = process(workflow, scenario)
    if not log:
        return
    j = data.draw(st.integers(0, len(log) - 1), label="blocked index")
    status = data.draw(st.sampled_from(["pending", "dead", "processing"]), label="status")
    blocked = list(log)
    blocked[j] = RecordedEvent(event=log[j].event,
                               outcome=msgspec.structs.replace(log[j].outcome, status=status))
    result = replay(workflow, blocked)
    assert result.blocked_at == j + 1
    assert result.snapshot == history[j]
    assert result.matches
    assert all(s.decision is None for s in result.steps[j:])


@pytest.mark.parametrize("wf_name", sorted(WORKFLOWS))
@common
@given(data=st.data())
def test_replay_flags_a_tampered_outcome_at_its_step(wf_name: str,
                                                     data: st.DataObject) -> None:
    workflow = WORKFLOWS[wf_name]
    scenario = data.draw(SCENARIOS[wf_name], label="scenario")
    log, _ = process(workflow, scenario)
    if not log:
        return
    j = data.draw(st.integers(0, len(log) - 1), label="tampered index")
    kind = data.draw(st.sampled_from(["state", "status", "actions"]), label="tampering")
    original = log[j].outcome
    if kind == "state":
        outcome = msgspec.structs.replace(original, to_state="nowhere")
    elif kind == "status":
        other = data.draw(st.sampled_from(
            [s for s in ("completed", "ignored", "failed") if s != original.status]))
        outcome = msgspec.structs.replace(original, status=other)
    else:
        extra = ActionRecord(name="extra", ok=True)
        outcome = msgspec.structs.replace(original, actions=(*original.actions, extra))
    tampered = list(log)
    tampered[j] = RecordedEvent(event=log[j].event, outcome=outcome)
    result = replay(workflow, tampered)
    # Only the tampered step diverges: the fold goes on from what the definition computes.
    assert [s.matches for s in result.steps] == [i != j for i in range(len(log))]
    mismatch = result.steps[j].mismatch
    assert mismatch is not None
    assert mismatch.startswith(f"{kind}: recorded ")
    assert result.snapshot == replay(workflow, log).snapshot
