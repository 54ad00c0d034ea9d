"""The invariants every fault scenario ends with, checked over the log and the ledger.

1. every request answered 202 is in the log exactly once (none lost, none
   duplicated per Idempotency-Key), and the log holds nothing nobody sent;
2. every execution is processed up to its last seq, except executions blocked
   behind a dead event, which must be visible as such (and expected);
3. events were processed in seq order within each execution;
4. replaying each log gives the stored projection;
5. the sink holds exactly one effect per (event, action) that the log records as done;
6. the Redis pending list is empty (dead-lettered hints are acked when moved);
7. no response was a 500; every 503 carried problem+json and Retry-After.

``check`` returns the figures a scenario reports.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from flowrt.bus.keys import GROUP
from flowrt.machine import replay
from flowrt.store import Database, ProcessingStore
from tests.faults.harness import TENANT, Ledger, Stack
from tests.faults.sinkapp import app

WORKFLOW = app.workflows[0]


def check_responses(ledger: Ledger) -> None:
    """Invariant 7."""
    bad = [t for t in ledger.tries if t.status is not None and t.status >= 500 and t.status != 503]
    assert not bad, f"server errors: {bad[:3]}"
    for t in ledger.tries:
        if t.status == 503:
            assert t.headers.get("content-type", "").startswith("application/problem+json"), t
            assert t.headers.get("retry-after"), t
            assert t.answer and t.answer.get("status") == 503, t
        if t.status is not None and 400 <= t.status < 500:
            assert t.headers.get("content-type", "").startswith("application/problem+json"), t


async def check(stack: Stack, ledger: Ledger, *, blocked: set[str] = frozenset(),  # type: ignore[assignment]
                failed: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """Assert invariants 1-7; ``blocked`` and ``failed`` name the executions that are
    expected to end blocked behind a dead event, or failed by their action."""
    check_responses(ledger)
    conn = await stack.pg()
    try:
        accepted = ledger.accepted()
        # 1 ---------------------------------------------------------------------------
        rows = await conn.fetch("SELECT execution_id, seq, event_id::text AS event_id, name,"
                                " idempotency_key FROM events ORDER BY execution_id, seq")
        by_key: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            key = "start" if r["seq"] == 1 else r["idempotency_key"]
            by_key.setdefault((r["execution_id"], key), []).append(r)
        sent = {(t.execution_id, t.key) for t in ledger.tries}
        for (x, key), t in accepted.items():
            found = by_key.get((x, key), [])
            assert len(found) == 1, f"202 for {x}/{key} but {len(found)} events in the log"
            assert t.answer is not None and found[0]["event_id"] == t.answer["event_id"], (t, found)
            assert found[0]["seq"] == t.answer["seq"], (t, found)
        phantom = [k for k in by_key if k not in sent]
        assert not phantom, f"events in the log that nobody sent: {phantom[:5]}"
        unanswered = [k for k in sent if k not in accepted and k in by_key]
        # (an event whose every try went unanswered may still have been committed: that
        # is allowed, and reported; a 202 is what promises durability)

        # 2 ---------------------------------------------------------------------------
        executions = {r["execution_id"]: r for r in await conn.fetch(
            "SELECT execution_id, status, state, data::text AS data, last_seq, processed_seq,"
            " blocked_seq FROM executions")}
        for x, r in executions.items():
            if x in blocked:
                assert r["blocked_seq"] is not None, f"{x} should be blocked: {dict(r)}"
                status = await conn.fetchval(
                    "SELECT status FROM event_processing WHERE execution_id = $1 AND seq = $2",
                    x, r["blocked_seq"])
                assert status == "dead", (x, status)
            else:
                assert r["blocked_seq"] is None, f"{x} is blocked: {dict(r)}"
                assert r["processed_seq"] == r["last_seq"], f"{x} lags: {dict(r)}"
            if x in failed:
                assert r["status"] == "failed", dict(r)
            elif x not in blocked:
                assert r["status"] in ("running", "completed"), dict(r)

        # 3 and 4 ---------------------------------------------------------------------
        async with Database(stack.pg_server.url) as db:
            store = ProcessingStore(db)
            expected_effects: set[str] = set()
            for x, r in executions.items():
                log = await store.load(TENANT, x, 0, r["last_seq"])
                done = [e for e in log if e.outcome.status not in ("pending", "processing")]
                result = replay(WORKFLOW, log)
                bad = [s.mismatch for s in result.steps if not s.matches]
                assert result.matches, f"{x}: replay diverges: {bad[:3]}"
                snap = result.snapshot
                assert snap.seq == r["processed_seq"], (x, snap.seq, r["processed_seq"])
                assert (snap.status, snap.state, snap.data) == (
                    r["status"], r["state"], json.loads(r["data"])), x
                effects = [e.event.seq for e in done
                           if any(a.name == "effect" and a.ok for a in e.outcome.actions)]
                # 3: the action appends its seq: applied once each, in seq order
                assert json.loads(r["data"]).get("seqs", []) == effects, x
                expected_effects |= {f"{TENANT}:{x}:{q}:effect" for q in effects}
            order = await conn.fetchval(
                "SELECT count(*) FROM (SELECT processed_at, lag(processed_at) OVER"
                " (PARTITION BY execution_id ORDER BY seq) AS before FROM event_processing"
                " WHERE status IN ('completed', 'ignored', 'failed')) o"
                " WHERE o.processed_at < o.before")
            assert order == 0, f"{order} events processed before an earlier seq"

        # 5 ---------------------------------------------------------------------------
        sink = {r["key"] for r in await conn.fetch("SELECT key FROM fault_sink")}
        missing = expected_effects - sink
        extra = sink - expected_effects
        assert not missing, f"effects missing from the sink: {sorted(missing)[:5]}"
        assert not extra, f"effects in the sink the log does not record: {sorted(extra)[:5]}"
        calls = await conn.fetchrow("SELECT coalesce(max(calls), 0) AS most,"
                                    " coalesce(sum(calls - 1), 0) AS reruns FROM fault_attempts")
        dead = await conn.fetchval("SELECT count(*) FROM event_processing WHERE status = 'dead'")
        events = len(rows)
    finally:
        await conn.close()

    # 6 -------------------------------------------------------------------------------
    client = stack.redis()
    try:
        deadline = time.monotonic() + 10
        while True:  # a late duplicate hint may still be on its way through a worker
            summary = await client.xpending(stack.keys.stream, GROUP)
            if summary["pending"] == 0:
                break
            assert time.monotonic() < deadline, f"hints left pending: {summary}"
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()

    assert stack.sampler is not None
    return {"max_delivery_count": stack.sampler.max_deliveries, "events": events,
            "executions": len(executions), "accepted": len(accepted),
            "committed_unanswered": len(unanswered), "dead": dead,
            "max_action_calls": calls["most"], "action_reruns": calls["reruns"],
            "responses": {str(k): v for k, v in sorted(ledger.statuses().items(),
                                                        key=lambda kv: str(kv[0]))}}
