"""The pure core, no I/O: ``decide`` + ``apply`` per event and ``replay`` of a long log."""

from __future__ import annotations

import time
from typing import Any

from flowrt.events import STARTED, ActionRecord, Event, RecordedEvent
from flowrt.machine import Snapshot, apply, decide, replay

from .app import app

__all__ = ["bench_core", "counter_log"]


def counter_log(n: int, execution_id: str = "x") -> tuple[Snapshot, list[RecordedEvent]]:
    """The log ``n`` events of the counter workflow leave, with the outcomes a worker
    records (the ``record`` action's result as it computes it), and its snapshot."""
    wf = app.workflow("counter", 1)
    assert wf is not None
    snap = Snapshot()
    log: list[RecordedEvent] = []
    for seq in range(1, n + 1):
        event = Event(seq=seq, event_id=f"{execution_id}-{seq}",
                      name=STARTED if seq == 1 else "tick",
                      payload={"input": {}} if seq == 1 else {})
        decision = decide(wf, snap, event)
        records = [ActionRecord(name=a, ok=True,
                                result={"count": snap.data.get("count", 0) + 1, "last": seq})
                   for a in decision.actions]
        snap, outcome = apply(wf, snap, event, decision, records)
        log.append(RecordedEvent(event=event, outcome=outcome))
    return snap, log


def bench_core(n: int) -> dict[str, Any]:
    wf = app.workflow("counter", 1)
    assert wf is not None
    t0 = time.perf_counter()
    snap, log = counter_log(n)
    live = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = replay(wf, log)
    folded = time.perf_counter() - t0
    assert result.matches and result.snapshot == snap
    return {"events": n, "decide_apply_us": round(live / n * 1e6, 2),
            "replay_events": n, "replay_ms": round(folded * 1e3, 1)}
