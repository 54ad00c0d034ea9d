"""The pure state machine (flowrt/machine.py): decide, apply and replay."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowrt.definition import Workflow, load_definition, parse_definition
from flowrt.events import STARTED, ActionRecord, Event, Outcome, RecordedEvent
from flowrt.machine import (
    Decision,
    GuardResult,
    Snapshot,
    apply,
    decide,
    error_actions,
    expected_actions,
    replay,
)

DEMO = Path(__file__).resolve().parents[2] / "workers" / "demo" / "order.yaml"

# A richer workflow: exit/entry actions, internal transitions, guarded candidate
# lists and on_error.
SHOP: dict[str, Any] = {
    "name": "shop",
    "version": 1,
    "initial": "cart",
    "states": {
        "cart": {
            "entry": ["open_cart"],
            "exit": ["close_cart"],
            "on": {
                "add": {"actions": ["add_item", "recount"]},
                "checkout": [
                    {"target": "paying", "guard": "payload.total > 100", "actions": ["big_order"]},
                    {"target": "paying", "guard": "payload.total > 0", "actions": ["small_order"]},
                ],
                "buy_now": {"target": "paid", "actions": ["charge"], "on_error": "payment_failed"},
                "poke": {"actions": ["log"], "on_error": "payment_failed"},
            },
        },
        "paying": {
            "entry": ["start_payment"],
            "exit": ["end_payment"],
            "on": {
                "pay": {"target": "paid", "actions": ["charge"], "on_error": "payment_failed"},
                "abort": {"target": "cart"},
                "give_up": {"target": "cancelled", "actions": ["refund"],
                            "on_error": "cancelled"},
            },
        },
        "paid": {"entry": ["receipt"], "final": True},
        "payment_failed": {"entry": ["alert", "log_failure"],
                           "on": {"retry": {"target": "paying"}}},
        "cancelled": {"entry": ["bye"], "final": True},
    },
}


@pytest.fixture(scope="module")
def demo() -> Workflow:
    return load_definition(DEMO)


@pytest.fixture(scope="module")
def shop() -> Workflow:
    return parse_definition(SHOP)


def ev(seq: int, name: str, **payload: Any) -> Event:
    return Event(seq=seq, event_id=f"e{seq}", name=name, payload=payload)


def start(seq: int = 1, **input_: Any) -> Event:
    return ev(seq, STARTED, input=input_)


def ok(name: str, **result: Any) -> ActionRecord:
    return ActionRecord(name=name, ok=True, result=result or None)


def bad(name: str, error: str = "boom") -> ActionRecord:
    return ActionRecord(name=name, ok=False, error=error)


def run_actions(workflow: Workflow, decision: Decision, seq: int,
                fail: Iterable[str] = ()) -> list[ActionRecord]:
    """A deterministic stand-in for Engine._run_actions (flowrt/engine.py).

    Runs the decision's actions until one fails; after the first failure it runs
    the on_error state's entry actions, stopping if one of those fails too.
    """
    failing = set(fail)
    records: list[ActionRecord] = []
    queue = list(decision.actions)
    failed = False
    while queue:
        name = queue.pop(0)
        if name not in failing:
            records.append(ok(name, **{name: seq}))
            continue
        records.append(bad(name, f"{name} failed"))
        if failed:
            break
        failed = True
        queue = list(error_actions(workflow, decision))
    return records


class Live:
    """Process events one by one as the engine would, keeping the log."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.snapshot = Snapshot()
        self.log: list[RecordedEvent] = []
        self.history: list[Snapshot] = [self.snapshot]

    def send(self, name: str, fail: Iterable[str] = (), **payload: Any) -> Outcome:
        event = ev(len(self.log) + 1, name, **payload)
        decision = decide(self.workflow, self.snapshot, event)
        records = run_actions(self.workflow, decision, event.seq, fail) \
            if decision.kind == "transition" else []
        self.snapshot, outcome = apply(self.workflow, self.snapshot, event, decision, records)
        self.log.append(RecordedEvent(event=event, outcome=outcome))
        self.history.append(self.snapshot)
        return outcome

    def start(self, fail: Iterable[str] = (), **input_: Any) -> Outcome:
        return self.send(STARTED, fail, input=input_)


def step(workflow: Workflow, snapshot: Snapshot, event: Event,
         records: Callable[[Decision], list[ActionRecord]] | list[ActionRecord] | None = None,
         ) -> tuple[Decision, Snapshot, Outcome]:
    decision = decide(workflow, snapshot, event)
    if records is None:
        recs = run_actions(workflow, decision, event.seq)
    elif callable(records):
        recs = records(decision)
    else:
        recs = records
    after, outcome = apply(workflow, snapshot, event, decision, recs)
    return decision, after, outcome


# --- start ------------------------------------------------------------------------


def test_started_enters_the_initial_state_with_input_as_data(shop: Workflow) -> None:
    event = start(customer="ann", total=3)
    decision = decide(shop, Snapshot(), event)
    assert decision == Decision(kind="transition", from_state=None, to_state="cart",
                                actions=("open_cart",))
    after, outcome = apply(shop, Snapshot(), event, decision, [ok("open_cart")])
    assert after == Snapshot(status="running", state="cart",
                             data={"customer": "ann", "total": 3}, seq=1)
    assert outcome == Outcome(status="completed", from_state=None, to_state="cart",
                              actions=(ok("open_cart"),))


def test_started_merges_entry_results_over_the_input(shop: Workflow) -> None:
    event = start(total=3, cart_id=None)
    decision = decide(shop, Snapshot(), event)
    after, _ = apply(shop, Snapshot(), event, decision, [ok("open_cart", cart_id="c-1")])
    assert after.data == {"total": 3, "cart_id": "c-1"}


def test_started_without_input_gives_empty_data(demo: Workflow) -> None:
    _, after, outcome = step(demo, Snapshot(), ev(1, STARTED))
    assert after == Snapshot(status="running", state="pending", data={}, seq=1)
    assert outcome.status == "completed"
    assert outcome.actions == ()


def test_started_into_a_final_initial_state_completes() -> None:
    wf = parse_definition({"name": "w", "version": 1, "initial": "done",
                           "states": {"done": {"final": True}}})
    _, after, _ = step(wf, Snapshot(), start())
    assert (after.status, after.state) == ("completed", "done")


def test_failed_entry_action_on_start_fails_the_execution(shop: Workflow) -> None:
    event = start(total=1)
    decision = decide(shop, Snapshot(), event)
    after, outcome = apply(shop, Snapshot(), event, decision, [bad("open_cart", "db down")])
    assert after == Snapshot(status="failed", state=None, data={}, seq=1)
    assert outcome.status == "failed"
    assert outcome.error == "db down"
    assert (outcome.from_state, outcome.to_state) == (None, None)


def test_started_twice_is_ignored(demo: Workflow) -> None:
    live = Live(demo)
    live.start(amount=1)
    before = live.snapshot
    outcome = live.send(STARTED, input={"amount": 99})
    assert outcome == Outcome(status="ignored", from_state="pending", to_state="pending",
                              error="execution already started")
    assert live.snapshot == msgspec.structs.replace(before, seq=2)


def test_event_before_start_is_ignored(demo: Workflow) -> None:
    decision = decide(demo, Snapshot(), ev(1, "approve", amount=1))
    assert decision.kind == "ignored"
    assert decision.reason == "execution has not started"
    after, outcome = apply(demo, Snapshot(), ev(1, "approve", amount=1), decision, [])
    assert after == Snapshot(seq=1)
    assert outcome == Outcome(status="ignored", error="execution has not started")


# --- guards -----------------------------------------------------------------------


def test_guarded_transition_passes(demo: Workflow) -> None:
    live = Live(demo)
    live.start()
    event = ev(2, "approve", amount=500)
    decision = decide(demo, live.snapshot, event)
    assert decision == Decision(
        kind="transition", from_state="pending", to_state="approved",
        actions=("reserve_stock", "notify"),
        guards=(GuardResult(expression="payload.amount <= 1000", passed=True),))
    after, outcome = apply(demo, live.snapshot, event, decision,
                           [ok("reserve_stock", reserved=True), ok("notify")])
    assert after == Snapshot(status="running", state="approved", data={"reserved": True}, seq=2)
    assert outcome.status == "completed"
    assert (outcome.from_state, outcome.to_state) == ("pending", "approved")
    assert outcome.error is None


def test_guarded_transition_fails_and_is_ignored_with_guard_results(demo: Workflow) -> None:
    live = Live(demo)
    live.start(customer="ann")
    before = live.snapshot
    event = ev(2, "approve", amount=5000)
    decision = decide(demo, before, event)
    assert decision == Decision(
        kind="ignored", from_state="pending", to_state="pending", actions=(),
        guards=(GuardResult(expression="payload.amount <= 1000", passed=False),),
        reason="no guard passed for 'approve' in state 'pending'")
    after, outcome = apply(demo, before, event, decision, [])
    assert after == msgspec.structs.replace(before, seq=2)
    assert outcome == Outcome(status="ignored", from_state="pending", to_state="pending",
                              error="no guard passed for 'approve' in state 'pending'")


def test_guard_error_is_recorded_and_the_event_ignored(demo: Workflow) -> None:
    live = Live(demo)
    live.start()
    decision = decide(demo, live.snapshot, ev(2, "approve"))
    assert decision.kind == "ignored"
    assert decision.guards == (GuardResult(expression="payload.amount <= 1000", passed=False,
                                           error="no such key: amount"),)


def test_guard_sees_data_and_state() -> None:
    wf = parse_definition({"name": "w", "version": 1, "initial": "a", "states": {
        "a": {"on": {"go": {"target": "b", "guard": "data.limit >= payload.n && state == 'a'"}}},
        "b": {"final": True}}})
    snap = Snapshot(state="a", data={"limit": 5}, seq=1)
    assert decide(wf, snap, ev(2, "go", n=5)).to_state == "b"
    assert decide(wf, snap, ev(2, "go", n=6)).kind == "ignored"


def test_candidates_are_tried_in_order(shop: Workflow) -> None:
    snap = Snapshot(state="cart", data={}, seq=1)
    small = decide(shop, snap, ev(2, "checkout", total=50))
    assert small.kind == "transition"
    assert small.actions == ("close_cart", "small_order", "start_payment")
    assert small.guards == (
        GuardResult(expression="payload.total > 100", passed=False),
        GuardResult(expression="payload.total > 0", passed=True),
    )
    big = decide(shop, snap, ev(2, "checkout", total=500))
    assert big.actions == ("close_cart", "big_order", "start_payment")
    # The first candidate passed: the second guard is not evaluated.
    assert big.guards == (GuardResult(expression="payload.total > 100", passed=True),)
    none = decide(shop, snap, ev(2, "checkout", total=0))
    assert none.kind == "ignored"
    assert [g.passed for g in none.guards] == [False, False]
    assert none.reason == "no guard passed for 'checkout' in state 'cart'"


def test_unguarded_candidate_after_failed_guard_is_taken() -> None:
    wf = parse_definition({"name": "w", "version": 1, "initial": "a", "states": {
        "a": {"on": {"go": [{"target": "b", "guard": "payload.vip"}, {"target": "c"}]}},
        "b": {"final": True}, "c": {"final": True}}})
    d = decide(wf, Snapshot(state="a", seq=1), ev(2, "go", vip=False))
    assert (d.kind, d.to_state) == ("transition", "c")
    assert d.guards == (GuardResult(expression="payload.vip", passed=False),)


# --- ignored events ------------------------------------------------------------------


def test_unknown_event_is_ignored_with_reason(demo: Workflow) -> None:
    live = Live(demo)
    live.start()
    outcome = live.send("teleport")
    assert outcome == Outcome(status="ignored", from_state="pending", to_state="pending",
                              error="no transition for 'teleport' in state 'pending'")
    assert live.snapshot == Snapshot(status="running", state="pending", data={}, seq=2)


def test_event_known_elsewhere_is_ignored_in_this_state(demo: Workflow) -> None:
    live = Live(demo)
    live.start()
    assert live.send("ship").error == "no transition for 'ship' in state 'pending'"


def test_events_after_a_final_state_are_ignored(demo: Workflow) -> None:
    live = Live(demo)
    live.start()
    live.send("reject")
    assert live.snapshot.status == "completed"
    assert live.snapshot.state == "rejected"
    done = live.snapshot
    for name in ("approve", "ship", STARTED, "teleport"):
        outcome = live.send(name, amount=1)
        assert outcome == Outcome(status="ignored", from_state="rejected",
                                  to_state="rejected", error="execution is completed")
    assert live.snapshot == msgspec.structs.replace(done, seq=6)


def test_events_after_a_failure_are_ignored(shop: Workflow) -> None:
    live = Live(shop)
    live.start()
    live.send("checkout", total=5)
    live.send("abort", fail=["end_payment"])
    assert live.snapshot.status == "failed"
    outcome = live.send("pay")
    assert outcome.status == "ignored"
    assert outcome.error == "execution is failed"
    assert live.snapshot.status == "failed"


# --- actions --------------------------------------------------------------------------


def test_exit_transition_entry_action_order(shop: Workflow) -> None:
    live = Live(shop)
    live.start()
    outcome = live.send("checkout", total=500)
    assert [r.name for r in outcome.actions] == ["close_cart", "big_order", "start_payment"]
    outcome = live.send("pay")
    assert [r.name for r in outcome.actions] == ["end_payment", "charge", "receipt"]
    assert live.snapshot.state == "paid"
    assert live.snapshot.status == "completed"


def test_transition_to_self_state_runs_exit_and_entry() -> None:
    wf = parse_definition({"name": "w", "version": 1, "initial": "a", "states": {
        "a": {"entry": ["in"], "exit": ["out"], "on": {"again": {"target": "a",
                                                                  "actions": ["mid"]}}}}})
    d = decide(wf, Snapshot(state="a", seq=1), ev(2, "again"))
    assert d.actions == ("out", "mid", "in")
    assert (d.from_state, d.to_state) == ("a", "a")


def test_internal_transition_keeps_state_and_runs_only_its_actions(shop: Workflow) -> None:
    snap = Snapshot(state="cart", data={"items": 0}, seq=1)
    event = ev(2, "add", sku="x")
    decision = decide(shop, snap, event)
    assert decision == Decision(kind="transition", from_state="cart", to_state="cart",
                                actions=("add_item", "recount"))
    after, outcome = apply(shop, snap, event, decision,
                           [ok("add_item", last="x"), ok("recount", items=1)])
    assert after == Snapshot(status="running", state="cart", data={"items": 1, "last": "x"},
                             seq=2)
    assert (outcome.status, outcome.from_state, outcome.to_state) == ("completed", "cart", "cart")


def test_action_failure_fails_the_execution_keeping_state_and_data(shop: Workflow) -> None:
    snap = Snapshot(state="paying", data={"total": 5}, seq=2)
    event = ev(3, "abort")
    decision = decide(shop, snap, event)
    assert decision.actions == ("end_payment", "open_cart")
    assert decision.on_error is None
    records = [ok("end_payment", paid=False), bad("open_cart", "no cart")]
    after, outcome = apply(shop, snap, event, decision, records)
    assert after == Snapshot(status="failed", state="paying", data={"total": 5}, seq=3)
    assert outcome == Outcome(status="failed", from_state="paying", to_state="paying",
                              actions=tuple(records), error="no cart")


def test_first_failure_is_the_reported_error(shop: Workflow) -> None:
    snap = Snapshot(state="paying", data={}, seq=2)
    event = ev(3, "abort")
    decision = decide(shop, snap, event)
    _, outcome = apply(shop, snap, event, decision,
                       [bad("end_payment", "first"), bad("open_cart", "second")])
    assert outcome.error == "first"


def test_failure_with_on_error_moves_to_the_error_state(shop: Workflow) -> None:
    snap = Snapshot(state="paying", data={"total": 5}, seq=2)
    event = ev(3, "pay")
    decision = decide(shop, snap, event)
    assert decision.on_error == "payment_failed"
    assert decision.to_state == "paid"
    assert error_actions(shop, decision) == ("alert", "log_failure")
    records = [ok("end_payment"), bad("charge", "card declined"),
               ok("alert", alerted=True), ok("log_failure", logged=3)]
    assert expected_actions(shop, decision, records) == (
        "end_payment", "charge", "alert", "log_failure")
    after, outcome = apply(shop, snap, event, decision, records)
    assert after.status == "running"
    assert after.state == "payment_failed"
    assert after.seq == 3
    assert after.data["total"] == 5
    assert after.data["alerted"] is True
    assert after.data["logged"] == 3
    assert outcome == Outcome(status="completed", from_state="paying",
                              to_state="payment_failed", actions=tuple(records),
                              error="card declined")


def test_on_error_target_that_is_final_completes_the_execution(shop: Workflow) -> None:
    snap = Snapshot(state="paying", data={}, seq=2)
    event = ev(3, "give_up")
    decision = decide(shop, snap, event)
    after, outcome = apply(shop, snap, event, decision,
                           [ok("end_payment"), bad("refund", "nope"), ok("bye")])
    assert (after.status, after.state) == ("completed", "cancelled")
    assert outcome.error == "nope"


def test_on_error_on_an_internal_transition(shop: Workflow) -> None:
    snap = Snapshot(state="cart", data={}, seq=1)
    event = ev(2, "poke")
    decision = decide(shop, snap, event)
    assert (decision.to_state, decision.on_error) == ("cart", "payment_failed")
    after, outcome = apply(shop, snap, event, decision,
                           [bad("log", "disk full"), ok("alert"), ok("log_failure")])
    assert (after.status, after.state) == ("running", "payment_failed")
    assert outcome.error == "disk full"


def test_failing_error_action_fails_the_execution(shop: Workflow) -> None:
    snap = Snapshot(state="paying", data={"total": 5}, seq=2)
    event = ev(3, "pay")
    decision = decide(shop, snap, event)
    records = [ok("end_payment"), bad("charge", "declined"), ok("alert", a=1),
               bad("log_failure", "disk full")]
    after, outcome = apply(shop, snap, event, decision, records)
    assert after == Snapshot(status="failed", state="paying", data={"total": 5}, seq=3)
    assert outcome.status == "failed"
    assert (outcome.from_state, outcome.to_state) == ("paying", "paying")
    # both errors are kept: the one that triggered on_error and the one that ended it
    assert outcome.error == "declined; then on_error 'payment_failed' failed: disk full"


def test_replay_of_a_failing_error_action_matches(shop: Workflow) -> None:
    live = Live(shop)
    live.start()
    live.send("checkout", total=50)
    # charge fails, then the first of payment_failed's two entry actions fails too.
    outcome = live.send("pay", fail=["charge", "alert"])
    assert [r.name for r in outcome.actions] == ["end_payment", "charge", "alert"]
    assert outcome.status == "failed"
    result = replay(shop, live.log)
    assert result.matches, [s.mismatch for s in result.steps]


def test_success_without_error_records_runs_no_error_actions(shop: Workflow) -> None:
    decision = decide(shop, Snapshot(state="paying", seq=2), ev(3, "pay"))
    records = [ok("end_payment"), ok("charge"), ok("receipt")]
    assert expected_actions(shop, decision, records) == decision.actions
    assert error_actions(shop, decide(shop, Snapshot(state="paying", seq=2), ev(3, "abort"))) == ()


def test_results_are_merged_into_data_in_order(shop: Workflow) -> None:
    snap = Snapshot(state="cart", data={"x": 0, "keep": "me"}, seq=1)
    event = ev(2, "add")
    decision = decide(shop, snap, event)
    after, _ = apply(shop, snap, event, decision,
                     [ok("add_item", x=1, y="first"), ok("recount", x=2)])
    assert after.data == {"x": 2, "keep": "me", "y": "first"}
    after, _ = apply(shop, snap, event, decision, [ok("add_item", x=1), ok("recount")])
    assert after.data == {"x": 1, "keep": "me"}


def test_apply_does_not_mutate_its_inputs(shop: Workflow) -> None:
    data = {"x": 0}
    snap = Snapshot(state="cart", data=data, seq=1)
    event = ev(2, "add")
    decision = decide(shop, snap, event)
    after, _ = apply(shop, snap, event, decision, [ok("add_item", x=1), ok("recount")])
    assert data == {"x": 0}
    assert snap.data == {"x": 0}
    assert after.data == {"x": 1}
    assert after.data is not snap.data


def test_decide_is_pure(demo: Workflow) -> None:
    snap = Snapshot(state="pending", data={"a": 1}, seq=1)
    event = ev(2, "approve", amount=10)
    assert decide(demo, snap, event) == decide(demo, snap, event)
    assert snap == Snapshot(state="pending", data={"a": 1}, seq=1)


# --- replay ---------------------------------------------------------------------------


def _demo_log(demo: Workflow) -> Live:
    live = Live(demo)
    live.start(customer="ann")
    live.send("approve", amount=5000)   # ignored: guard fails
    live.send("teleport")               # ignored: unknown
    live.send("approve", amount=500)    # approved, reserve_stock + notify
    live.send("ship")                   # shipped, final
    live.send("reject")                 # ignored: completed
    return live


def test_replay_of_a_recorded_log_matches(demo: Workflow) -> None:
    live = _demo_log(demo)
    result = replay(demo, live.log)
    assert result.matches
    assert result.blocked_at is None
    assert result.snapshot == live.snapshot
    assert result.snapshot == Snapshot(status="completed", state="shipped",
                                       data={"customer": "ann", "reserve_stock": 4, "notify": 4},
                                       seq=6)
    assert len(result.steps) == len(live.log)
    for i, s in enumerate(result.steps):
        assert s.matches and s.mismatch is None
        assert s.event == live.log[i].event
        assert s.recorded == live.log[i].outcome
        assert s.computed == live.log[i].outcome
        assert s.before == live.history[i]
        assert s.after == live.history[i + 1]
        assert s.decision is not None


def test_replay_of_failures_and_on_error_matches(shop: Workflow) -> None:
    live = Live(shop)
    live.start(total=3)
    live.send("add", sku="a")
    live.send("checkout", total=50)
    live.send("pay", fail=["charge"])
    live.send("retry")
    live.send("abort", fail=["open_cart"])
    live.send("pay")
    statuses = [r.outcome.status for r in live.log]
    assert statuses == ["completed", "completed", "completed", "completed", "completed",
                        "failed", "ignored"]
    result = replay(shop, live.log)
    assert result.matches
    assert result.snapshot == live.snapshot
    assert result.snapshot.status == "failed"
    assert result.snapshot.state == "paying"


def test_replay_never_runs_actions_and_uses_recorded_results(demo: Workflow) -> None:
    live = _demo_log(demo)
    # Rewrite the recorded results: replay must fold what the log says.
    log = [
        RecordedEvent(event=r.event, outcome=msgspec.structs.replace(
            r.outcome, actions=tuple(msgspec.structs.replace(a, result={"from_log": a.name})
                                     for a in r.outcome.actions)))
        for r in live.log
    ]
    result = replay(demo, log)
    assert result.matches
    assert result.snapshot.data == {"customer": "ann", "from_log": "notify"}


def test_replay_detects_a_changed_target(demo: Workflow) -> None:
    live = _demo_log(demo)
    changed = msgspec.to_builtins(demo.definition)
    changed["states"]["pending"]["on"]["approve"]["target"] = "review"
    result = replay(parse_definition(changed), live.log)
    assert not result.matches
    bad_steps = [s for s in result.steps if not s.matches]
    first = bad_steps[0]
    assert first.event.seq == 4
    assert first.mismatch == "state: recorded approved, replay gives review"
    assert [s.matches for s in result.steps[:3]] == [True, True, True]


def test_replay_detects_changed_actions(demo: Workflow) -> None:
    live = _demo_log(demo)
    changed = msgspec.to_builtins(demo.definition)
    changed["states"]["approved"]["entry"] = ["notify", "audit"]
    result = replay(parse_definition(changed), live.log)
    assert not result.matches
    (mismatch,) = [s for s in result.steps if not s.matches]
    assert mismatch.event.seq == 4
    assert mismatch.mismatch == (
        "actions: recorded ['reserve_stock', 'notify'], "
        "definition names ['reserve_stock', 'notify', 'audit']")


def test_replay_detects_a_changed_guard(demo: Workflow) -> None:
    live = _demo_log(demo)
    changed = msgspec.to_builtins(demo.definition)
    changed["states"]["pending"]["on"]["approve"]["guard"] = "payload.amount <= 10000"
    result = replay(parse_definition(changed), live.log)
    assert not result.matches
    assert result.steps[1].mismatch == "status: recorded ignored, replay gives completed"


def test_replay_detects_a_recorded_failure_the_definition_cannot_explain(
        shop: Workflow) -> None:
    live = Live(shop)
    live.start()
    live.send("checkout", total=50)
    live.send("pay", fail=["charge"])
    changed = msgspec.to_builtins(shop.definition)
    del changed["states"]["paying"]["on"]["pay"]["on_error"]
    result = replay(parse_definition(changed), live.log)
    assert not result.matches
    assert result.steps[2].mismatch == "status: recorded completed, replay gives failed"


@pytest.mark.parametrize("status", ["pending", "dead", "processing"])
def test_replay_stops_at_an_unprocessed_event(demo: Workflow, status: str) -> None:
    live = _demo_log(demo)
    log = list(live.log)
    log[3] = RecordedEvent(event=log[3].event, outcome=Outcome(status=status))  # type: ignore[arg-type]
    result = replay(demo, log)
    assert result.blocked_at == 4
    assert result.snapshot == live.history[3]
    assert result.snapshot.state == "pending"
    assert len(result.steps) == len(log)
    for s in result.steps[3:]:
        assert s.decision is None and s.after is None and s.computed is None
    assert result.matches


def test_replay_reports_a_gap_in_the_log(demo: Workflow) -> None:
    live = _demo_log(demo)
    log = live.log[:2] + live.log[3:]
    result = replay(demo, log)
    assert not result.matches
    assert result.blocked_at == 4
    assert result.steps[2].mismatch == "gap in the log: expected seq 3"
    assert result.snapshot == live.history[2]
    assert all(s.decision is None for s in result.steps[2:])


@pytest.mark.parametrize("until", [0, 1, 2, 3, 4, 5, 6, 100])
def test_until_stops_the_replay(demo: Workflow, until: int) -> None:
    live = _demo_log(demo)
    result = replay(demo, live.log, until=until)
    n = min(until, len(live.log))
    assert result.snapshot == live.history[n]
    assert len(result.steps) == n
    assert result.matches


def test_replay_of_an_empty_log() -> None:
    wf = parse_definition({"name": "w", "version": 1, "initial": "a",
                           "states": {"a": {"final": True}}})
    result = replay(wf, [])
    assert result.snapshot == Snapshot()
    assert result.steps == ()
    assert result.blocked_at is None
    assert result.matches


def test_replay_accepts_any_iterable(demo: Workflow) -> None:
    live = _demo_log(demo)
    assert replay(demo, iter(live.log)).snapshot == live.snapshot
