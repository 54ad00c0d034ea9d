"""The worker against real PostgreSQL and Redis: a ``Worker`` runs in-process, events go
through the real API (in-process), outcomes are read back through the API or the DB.

Every wait is a poll with a deadline (``wait_until``); nothing asserts on timings.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from redis import exceptions as rexc

import workers.demo as demo
from flowrt import ActionContext, App, RetryPolicy
from flowrt.worker import Worker
from tests.support.api import api_client
from tests.support.workerkit import (
    GROUP,
    Recorder,
    closed_port_url,
    events,
    execution,
    keys,
    processed,
    running_worker,
    send,
    start,
    stream_state,
    wait_until,
)

DEMO_YAML = Path(demo.__file__).with_name("order.yaml")


# --- helpers -------------------------------------------------------------------


def summary(evs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["seq"], e["name"], e["status"], e["from_state"], e["to_state"],
             [a["name"] for a in e["actions"]]) for e in evs]


def metric(worker: Worker, name: str, labels: dict[str, str] | None = None) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def event_row(pg: Any, execution_id: str, seq: int) -> Any:
    return await pg.fetchrow(
        "SELECT status, attempts, worker, actions, processed_at FROM event_processing"
        " WHERE execution_id = $1 AND seq = $2", execution_id, seq)


# --- 1. happy path with the demo app ----------------------------------------------


async def test_demo_order_runs_to_shipped_and_each_action_runs_once(settings):
    app = App()
    app.load_definition(DEMO_YAML)
    rec = Recorder(app)
    rec.action("reserve_stock", demo.reserve_stock)
    rec.action("notify", demo.notify)

    async with running_worker(settings, app, name="w-happy"), api_client(settings) as client:
        eid = await start(client, "order", {"sku": "A-1", "customer": "c-7"})
        assert await send(client, eid, "approve", {"amount": 50}) == 2
        assert await send(client, eid, "ship") == 3
        x = await processed(client, eid, 3)
        evs = await events(client, eid)

    assert x["status"] == "completed"
    assert x["state"] == "shipped"
    assert x["data"] == {"sku": "A-1", "customer": "c-7", "reserved": True, "notified": True}
    assert x["last_seq"] == x["processed_seq"] == 3
    assert x["blocked_seq"] is None

    assert summary(evs) == [
        (1, "flowrt.started", "completed", None, "pending", []),
        (2, "approve", "completed", "pending", "approved", ["reserve_stock", "notify"]),
        (3, "ship", "completed", "approved", "shipped", []),
    ]
    assert [(a["name"], a["ok"], a.get("result"), a.get("attempts", 1))
            for a in evs[1]["actions"]] == [
        ("reserve_stock", True, {"reserved": True}, 1),
        ("notify", True, {"notified": True}, 1),
    ]
    for e in evs:
        assert e["error"] is None
        assert e["worker"] == "w-happy"
        assert e["processed_at"] is not None

    assert rec.count("reserve_stock") == 1
    assert rec.count("notify") == 1
    # actions see the data merged so far: notify runs after reserve_stock's result
    reserve, notify = rec.calls["reserve_stock"][0], rec.calls["notify"][0]
    assert reserve.state == "pending" and reserve.event.seq == 2
    assert reserve.data == {"sku": "A-1", "customer": "c-7"}
    assert notify.data == {"sku": "A-1", "customer": "c-7", "reserved": True}


# --- 2. ignored events ------------------------------------------------------------

GATE = {
    "name": "gate", "version": 1, "initial": "open",
    "states": {
        "open": {"on": {"go": {"target": "done", "guard": "payload.ok == true",
                               "actions": ["mark"]}}},
        "done": {"final": True},
    },
}


async def test_guard_false_unknown_event_and_events_after_final_are_ignored(settings):
    app = App()
    app.add_definition(GATE)
    rec = Recorder(app)
    rec.action("mark")

    # Enter the worker (registers the definition) but run it only once every event is
    # in the log, so the events after the final one are appended before it is reached.
    async with Worker(settings, app, name="w-ign") as w, api_client(settings) as client:
        eid = await start(client, "gate")
        assert await send(client, eid, "go", {"ok": False}) == 2
        assert await send(client, eid, "bogus") == 3
        assert await send(client, eid, "go", {"ok": True}) == 4
        assert await send(client, eid, "go", {"ok": True}) == 5
        assert await send(client, eid, "bogus") == 6
        task = asyncio.create_task(w.run())
        try:
            x = await processed(client, eid, 6)
            evs = await events(client, eid)
            late = await client.post(f"/v1/executions/{eid}/events", json={"name": "go"})
        finally:
            w.stop()
            await task

    assert summary(evs) == [
        (1, "flowrt.started", "completed", None, "open", []),
        (2, "go", "ignored", "open", "open", []),
        (3, "bogus", "ignored", "open", "open", []),
        (4, "go", "completed", "open", "done", ["mark"]),
        (5, "go", "ignored", "done", "done", []),
        (6, "bogus", "ignored", "done", "done", []),
    ]
    # the reason is recorded on every ignored event
    for e in (evs[1], evs[2], evs[4], evs[5]):
        assert e["error"], e
    assert "go" in evs[1]["error"] and "bogus" in evs[2]["error"]
    assert "completed" in evs[4]["error"] and "completed" in evs[5]["error"]

    assert x["status"] == "completed" and x["state"] == "done"
    assert x["data"] == {"mark_done": True}
    assert [c.event.seq for c in rec.calls["mark"]] == [4]
    assert late.status_code == 409


# --- 3-5. action failures -----------------------------------------------------------

FAILING = {
    "name": "failing", "version": 1, "initial": "idle",
    "states": {
        "idle": {"exit": ["leave"],
                 "on": {"run": {"target": "done", "actions": ["flaky"]},
                        "crash": {"target": "done", "actions": ["broken"]},
                        "risky": {"target": "done", "actions": ["broken", "never"],
                                  "on_error": "recovering"},
                        "poke": {}}},
        "recovering": {"entry": ["cleanup"], "on": {"finish": {"target": "done"}}},
        "done": {"final": True, "entry": ["arrive"]},
    },
}


def failing_app(broken_retry: RetryPolicy | None = None) -> tuple[App, Recorder]:
    app = App()
    app.add_definition(FAILING)
    rec = Recorder(app)

    async def flaky(ctx: ActionContext) -> dict[str, Any]:
        if rec.count("flaky") <= 2:
            raise RuntimeError(f"transient {rec.count('flaky')}")
        return {"flaky": "ok"}

    async def broken(ctx: ActionContext) -> dict[str, Any]:
        raise RuntimeError("boom")

    async def cleanup(ctx: ActionContext) -> dict[str, Any]:
        return {"cleaned": True}

    rec.action("leave")
    rec.action("flaky", flaky, retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02))
    rec.action("broken", broken, retry=broken_retry)
    rec.action("never")
    rec.action("cleanup", cleanup)
    rec.action("arrive")
    return app, rec


async def test_action_retried_until_it_succeeds_records_attempts(settings):
    # the worker's default allows one attempt only: the action's own policy must win
    s = replace(settings, retry_attempts=1)
    app, rec = failing_app()

    async with running_worker(s, app), api_client(s) as client:
        eid = await start(client, "failing")
        assert await send(client, eid, "run") == 2
        x = await processed(client, eid, 2)
        evs = await events(client, eid)

    ev = evs[1]
    assert (ev["status"], ev["from_state"], ev["to_state"]) == ("completed", "idle", "done")
    assert ev["error"] is None
    flaky = [a for a in ev["actions"] if a["name"] == "flaky"]
    assert flaky == [{"name": "flaky", "ok": True, "result": {"flaky": "ok"}, "attempts": 3}]
    assert [a["name"] for a in ev["actions"]] == ["leave", "flaky", "arrive"]
    assert x["status"] == "completed" and x["state"] == "done"
    assert x["data"]["flaky"] == "ok"

    ctxs = rec.calls["flaky"]
    assert [c.attempt for c in ctxs] == [1, 2, 3]
    assert {c.idempotency_key for c in ctxs} == {f"{s.tenant}:{eid}:2:flaky"}
    assert all(c.event.seq == 2 and c.state == "idle" and c.execution_id == eid for c in ctxs)
    assert rec.count("leave") == 1 and rec.count("arrive") == 1


async def test_action_that_always_fails_fails_event_and_execution(settings):
    app, rec = failing_app()  # default policy from settings: 3 attempts

    async with running_worker(settings, app), api_client(settings) as client:
        eid = await start(client, "failing")
        assert await send(client, eid, "crash") == 2
        x = await processed(client, eid, 2)
        evs = await events(client, eid)
        refused = await client.post(f"/v1/executions/{eid}/events", json={"name": "poke"})
        evs_after = await events(client, eid)

    ev = evs[1]
    assert (ev["status"], ev["from_state"], ev["to_state"]) == ("failed", "idle", "idle")
    assert ev["error"] == "RuntimeError: boom"
    assert [a["name"] for a in ev["actions"]] == ["leave", "broken"]
    assert ev["actions"][1] == {"name": "broken", "ok": False, "error": "RuntimeError: boom",
                                "attempts": 3}
    assert rec.count("broken") == settings.retry_attempts == 3
    assert rec.count("arrive") == 0
    assert x["status"] == "failed" and x["state"] == "idle"
    assert x["data"] == {}  # state and data unchanged on failure

    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("execution-finished")
    assert len(evs_after) == 2


async def test_on_error_moves_to_error_state_and_runs_its_entry(settings):
    app, rec = failing_app(broken_retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02))

    async with running_worker(settings, app), api_client(settings) as client:
        eid = await start(client, "failing")
        assert await send(client, eid, "risky") == 2
        x = await processed(client, eid, 2)
        evs = await events(client, eid)
        # the execution goes on from the error state
        assert await send(client, eid, "finish") == 3
        x3 = await processed(client, eid, 3)

    ev = evs[1]
    assert (ev["status"], ev["from_state"], ev["to_state"]) == ("completed", "idle", "recovering")
    assert ev["error"] == "RuntimeError: boom"
    assert [(a["name"], a["ok"]) for a in ev["actions"]] == [
        ("leave", True), ("broken", False), ("cleanup", True)]
    assert x["status"] == "running" and x["state"] == "recovering"
    assert x["data"] == {"leave_done": True, "cleaned": True}
    assert rec.count("broken") == 2
    assert rec.count("cleanup") == 1
    assert rec.count("never") == 0  # the rest of the failed transition is skipped
    assert rec.count("arrive") == 1  # only by the later `finish`
    assert x3["status"] == "completed" and x3["state"] == "done"


# --- 6. order -----------------------------------------------------------------------

COUNTER = {
    "name": "counter", "version": 1, "initial": "counting",
    "states": {"counting": {"on": {"tick": {"actions": ["record"]}}}},
}


async def test_many_events_processed_in_seq_order_exactly_once(settings):
    app = App()
    app.add_definition(COUNTER)
    rec = Recorder(app)
    seen: list[int] = []

    async def record(ctx: ActionContext) -> dict[str, Any]:
        seen.append(ctx.event.seq)
        await asyncio.sleep(0)
        return {"last": ctx.event.payload["i"]}

    rec.action("record", record)
    n = 30
    # two workers compete for the one execution
    async with running_worker(settings, app, name="w-a"), \
            running_worker(settings, app, name="w-b"), api_client(settings) as client:
        eid = await start(client, "counter")
        for i in range(n):
            assert await send(client, eid, "tick", {"i": i}) == i + 2
        x = await processed(client, eid, n + 1)
        evs = await events(client, eid)

    assert seen == list(range(2, n + 2))
    assert [c.event.payload["i"] for c in rec.calls["record"]] == list(range(n))
    assert all(e["status"] == "completed" and e["to_state"] == "counting" for e in evs)
    assert [e["attempts"] for e in evs[1:]] == [1] * n
    assert x["data"] == {"last": n - 1}
    assert x["state"] == "counting" and x["status"] == "running"


# --- 7. relay -------------------------------------------------------------------------

SIMPLE = {
    "name": "simple", "version": 1, "initial": "a",
    "states": {
        "a": {"on": {"go": {"target": "b", "actions": ["step"]}, "tick": {"actions": ["tock"]}}},
        "b": {"on": {"go": {"target": "c", "actions": ["step"]}, "tick": {"actions": ["tock"]}}},
        "c": {"final": True},
    },
}


def simple_app() -> tuple[App, Recorder]:
    app = App()
    app.add_definition(SIMPLE)
    rec = Recorder(app)
    rec.action("step")
    rec.action("tock")
    return app, rec


def gated_app(result: dict[str, Any]) -> tuple[App, Recorder, asyncio.Event, asyncio.Event]:
    """SIMPLE whose ``step`` sets ``began``, waits for ``release``, then returns ``result``."""
    app = App()
    app.add_definition(SIMPLE)
    rec = Recorder(app)
    began, release = asyncio.Event(), asyncio.Event()

    async def gated(ctx: ActionContext) -> dict[str, Any]:
        began.set()
        await release.wait()
        return result

    rec.action("step", gated)
    rec.action("tock")
    return app, rec, began, release


async def test_relay_publishes_events_whose_hint_never_reached_redis(settings, redis_client):
    broken = replace(settings, redis_url=closed_port_url())
    app, rec = simple_app()

    async with Worker(settings, app, name="w-relay") as w:
        async with api_client(broken) as down:
            eid = await start(down, "simple")
            assert await send(down, eid, "go") == 2
            before = await events(down, eid)
        assert [(e["status"], e["published"]) for e in before] == [("pending", False)] * 2
        assert (await stream_state(redis_client, settings))[0] == 0  # nothing reached Redis

        task = asyncio.create_task(w.run())
        try:
            async with api_client(settings) as client:
                x = await processed(client, eid, 2)
                evs = await wait_until(
                    lambda: _all_published(client, eid), what="relay marks events published")
        finally:
            w.stop()
            await task

    assert x["state"] == "b"
    assert [e["status"] for e in evs] == ["completed", "completed"]
    assert rec.count("step") == 1
    assert metric(w, "flowrt_hints_republished_total", {"source": "relay"}) >= 1


async def _all_published(client: httpx.AsyncClient, eid: str) -> list[dict[str, Any]] | None:
    evs = await events(client, eid)
    return evs if all(e["published"] for e in evs) else None


# --- 8. reconciler ------------------------------------------------------------------


async def test_reconciler_recreates_lost_stream_and_rehints(settings, redis_client):
    app, rec = simple_app()
    k = keys(settings)
    async with api_client(settings) as client:
        async with running_worker(settings, app, name="w-before"):
            eid = await start(client, "simple")
            await processed(client, eid, 1)

        assert await send(client, eid, "go") == 2  # hint published while no worker runs
        assert (await stream_state(redis_client, settings))[0] == 1
        # Redis lost everything: the stream, its hints and the group are gone
        assert await redis_client.delete(k.stream) == 1

        async with running_worker(settings, app, name="w-after") as w:
            x = await processed(client, eid, 2)
            await wait_until(lambda: _drained(redis_client, settings), what="stream drained")
        groups = await redis_client.xinfo_groups(k.stream)

    assert x["state"] == "b"
    assert rec.count("step") == 1
    assert metric(w, "flowrt_hints_republished_total", {"source": "reconciler"}) >= 1
    assert [g["name"] for g in groups] == [GROUP]


async def _drained(redis_client: Any, settings: Any) -> bool:
    return await stream_state(redis_client, settings) == (0, 0)


async def _group_exists(redis_client: Any, stream: str) -> bool:
    try:
        return any(g["name"] == GROUP for g in await redis_client.xinfo_groups(stream))
    except rexc.ResponseError:  # no such key
        return False


async def test_running_worker_survives_stream_deleted_under_it(settings, redis_client):
    app, rec = simple_app()
    k = keys(settings)
    async with running_worker(settings, app, name="w-live"), api_client(settings) as client:
        eid = await start(client, "simple")
        await processed(client, eid, 1)
        for _ in range(3):  # the reader is almost always blocked in XREADGROUP
            await wait_until(lambda: _group_exists(redis_client, k.stream), what="group exists")
            await asyncio.sleep(0.2)
            await redis_client.delete(k.stream)
        assert await send(client, eid, "go") == 2
        await wait_until(lambda: _processed_seq(client, eid, 2), within=8,
                         what="event processed after the stream was deleted")
    assert rec.count("step") == 1


async def _processed_seq(client: httpx.AsyncClient, eid: str, seq: int) -> bool:
    return bool((await execution(client, eid))["processed_seq"] >= seq)


# --- 9. dead letter ---------------------------------------------------------------------


async def test_hint_delivered_too_often_is_dead_lettered_and_blocks_later_events(
        settings, redis_client, pg):
    app, rec = simple_app()
    k = keys(settings)
    async with api_client(settings) as client:
        async with running_worker(settings, app, name="w-first"):
            eid = await start(client, "simple")
            await processed(client, eid, 1)

        # Two events whose hints never reach Redis (API on an unreachable Redis)...
        async with api_client(replace(settings, redis_url=closed_port_url())) as down:
            assert await send(down, eid, "tick") == 2
            assert await send(down, eid, "tick") == 3
        # ...and one hint added by hand, read by a consumer that never acks, redelivered
        hint_id = await redis_client.xadd(k.stream, {"t": settings.tenant, "x": eid, "s": "3"})
        got = await redis_client.xreadgroup(GROUP, "ghost", {k.stream: ">"}, count=10)
        assert [mid for _s, msgs in got for mid, _f in msgs] == [hint_id]
        await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id])
        await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id], idle=60_000)
        [p] = await redis_client.xpending_range(k.stream, GROUP, "-", "+", 10)
        assert p["times_delivered"] == 3 and p["time_since_delivered"] >= 60_000

        # Workers started on seq 2 twice and vanished each time (a poison event): only
        # attempts recorded in PostgreSQL make the many deliveries count.
        await pg.execute("UPDATE event_processing SET attempts = 2 WHERE execution_id = $1"
                         " AND seq = 2", eid)
        # relay and reconciler kept out of the way: the hand-made hint is the only one
        s = replace(settings, max_deliveries=2, relay_grace=60.0, reconciler_grace=60.0)
        async with running_worker(s, app, name="w-dead") as w:
            dead = await wait_until(lambda: redis_client.xrange(k.dead), what="dead letter")
            x = await wait_until(lambda: _blocked(client, eid), what="blocked_seq set")
            evs = await events(client, eid)
            assert await stream_state(redis_client, s) == (0, 0)

            # a fresh hint for the execution: acked, but seq 3 still waits behind seq 2
            await redis_client.xadd(k.stream, {"t": s.tenant, "x": eid, "s": "3"})
            await wait_until(lambda: _drained(redis_client, s), what="fresh hint acked")
            x_after = await execution(client, eid)
            evs_after = await events(client, eid)

    assert len(dead) == 1
    fields = dead[0][1]
    assert (fields["x"], fields["s"], fields["id"]) == (eid, "3", hint_id)
    assert int(fields["deliveries"]) > 2 and "delivered" in fields["reason"]
    assert metric(w, "flowrt_dead_letters_total") == 1

    assert x["blocked_seq"] == 2 and x["processed_seq"] == 1 and x["state"] == "a"
    assert [(e["seq"], e["status"]) for e in evs] == [(1, "completed"), (2, "dead"), (3, "pending")]
    assert "delivered" in evs[1]["error"]

    assert x_after["processed_seq"] == 1 and x_after["blocked_seq"] == 2
    assert [(e["seq"], e["status"]) for e in evs_after] == [
        (1, "completed"), (2, "dead"), (3, "pending")]
    assert rec.count("tock") == 0


async def _blocked(client: httpx.AsyncClient, eid: str) -> dict[str, Any] | None:
    x = await execution(client, eid)
    return x if x["blocked_seq"] is not None else None


# --- 10. lease fencing -------------------------------------------------------------------


async def test_worker_whose_lease_was_taken_commits_nothing(settings, pg):
    app = App()
    app.add_definition(SIMPLE)
    rec = Recorder(app)
    started = [asyncio.Event(), asyncio.Event()]
    release = [asyncio.Event(), asyncio.Event()]

    async def gated(ctx: ActionContext) -> dict[str, Any]:
        n = rec.count("step")  # this call is already recorded
        started[n - 1].set()
        await release[n - 1].wait()
        return {"run": n}

    rec.action("step", gated)
    rec.action("tock")

    async with running_worker(settings, app, name="w-fenced") as w, \
            api_client(settings) as client:
        eid = await start(client, "simple")
        await processed(client, eid, 1)
        assert await send(client, eid, "go") == 2
        await wait_until(started[0].is_set, what="first run started")

        # another holder takes the execution while the action runs
        await pg.execute("UPDATE executions SET lease_epoch = lease_epoch + 1"
                         " WHERE execution_id = $1", eid)
        release[0].set()
        await wait_until(lambda: metric(w, "flowrt_lease_lost_total") >= 1, what="lease lost")
        row = await event_row(pg, eid, 2)
        x = await execution(client, eid)
        assert row["status"] == "processing"  # the fenced commit applied nothing
        assert x["processed_seq"] == 1 and x["state"] == "a" and x["data"] == {}

        # a later pass (reconciler / reclaimer) processes the event again, and commits
        await wait_until(started[1].is_set, what="second run started")
        assert (await event_row(pg, eid, 2))["status"] == "processing"
        release[1].set()
        x = await processed(client, eid, 2)
        evs = await events(client, eid)

    assert x["state"] == "b" and x["data"] == {"run": 2}
    ev = evs[1]
    assert ev["status"] == "completed" and ev["to_state"] == "b"
    assert ev["actions"] == [{"name": "step", "ok": True, "result": {"run": 2}}]
    assert ev["attempts"] == 2
    assert rec.count("step") == 2
    assert len({c.idempotency_key for c in rec.calls["step"]}) == 1
    assert metric(w, "flowrt_lease_lost_total") == 1


# --- 11. graceful shutdown --------------------------------------------------------------


async def test_stop_waits_for_running_action_and_commits_it(settings, redis_client):
    app = App()
    app.add_definition(SIMPLE)
    rec = Recorder(app)
    began, stopping = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def slow(ctx: ActionContext) -> dict[str, Any]:
        began.set()
        await stopping.wait()  # stop() is called while this action runs...
        await asyncio.sleep(0.5)  # ...and it still has 0.5 s to go
        finished.append(True)
        return {"slow": True}

    rec.action("step", slow)
    rec.action("tock")
    async with Worker(settings, app, name="w-stop") as w, api_client(settings) as client:
        task = asyncio.create_task(w.run())
        try:
            eid = await start(client, "simple")
            await processed(client, eid, 1)
            assert await send(client, eid, "go") == 2
            await wait_until(began.is_set, what="slow action started")
            lock_key = keys(settings).lock(settings.tenant, eid)
            assert await redis_client.exists(lock_key) == 1
        finally:
            w.stop()
            stopping.set()
            await asyncio.wait_for(task, 30)
        # run() has returned: everything below was done before it returned
        assert finished == [True]
        x = await execution(client, eid)
        evs = await events(client, eid)
        assert await redis_client.exists(lock_key) == 0
        assert (await stream_state(redis_client, settings))[1] == 0

    assert x["processed_seq"] == 2 and x["state"] == "b" and x["data"] == {"slow": True}
    assert evs[1]["status"] == "completed"
    assert rec.count("step") == 1


async def test_a_worker_stopped_with_work_left_hints_it_for_the_next(settings, redis_client):
    app, rec, began, stopping = gated_app({"slow": True})
    s = replace(settings, relay_grace=300.0, reconciler_grace=300.0)  # neither helps here
    async with Worker(s, app, name="w-stop-left") as w, api_client(s) as client:
        task = asyncio.create_task(w.run())
        try:
            eid = await start(client, "simple")
            await processed(client, eid, 1)
            assert await send(client, eid, "go") == 2
            await wait_until(began.is_set, what="slow action started")
            async with api_client(replace(s, redis_url=closed_port_url())) as no_redis:
                assert await send(no_redis, eid, "tick") == 3  # its hint never reaches Redis
        finally:
            w.stop()
            stopping.set()
            await asyncio.wait_for(task, 30)
        x = await execution(client, eid)
        hints = await redis_client.xrange(keys(s).stream)

    # the pass stopped after seq 2; its look at the log hinted seq 3 for the next worker
    assert x["processed_seq"] == 2
    assert [(f["x"], f["s"]) for _id, f in hints] == [(eid, "3")]
    assert metric(w, "flowrt_hints_republished_total", {"source": "release"}) == 1
    assert rec.count("tock") == 0


async def test_a_pass_counts_each_later_attempt_with_the_commit_before_it(settings, pg):
    app, rec = simple_app()
    n = 105  # more than a lease returns (100): the pass reads the rest, which starts unmarked
    async with Worker(settings, app, name="w-marks") as w, api_client(settings) as client:
        eid = await start(client, "simple")  # the worker registered it; it is not running
        for _ in range(n):
            await send(client, eid, "tick")
        marks: list[int] = []
        mark = w._passes.mark_processing

        async def counted(lease: Any, seq: int) -> int:
            marks.append(seq)
            return await mark(lease, seq)

        w._passes.mark_processing = counted  # type: ignore[method-assign]
        task = asyncio.create_task(w.run())
        try:
            await processed(client, eid, n + 1)
        finally:
            w.stop()
            await task
    rows = await pg.fetch("SELECT seq, status, attempts FROM event_processing"
                          " WHERE execution_id = $1 ORDER BY seq", eid)

    assert rec.count("tock") == n
    assert all((r["status"], r["attempts"]) == ("completed", 1) for r in rows), rows
    # one pass: the lease counted seq 1, each commit the next event's attempt, except
    # where the lease's events ended and the pass read on (seq 101)
    assert metric(w, "flowrt_events_processed_total",
                  {"outcome": "completed", "workflow": "simple"}) == n + 1
    assert marks == [101]


# --- 12. duplicate hints ------------------------------------------------------------------


async def test_hints_for_processed_execution_are_acked_without_rerunning(
        settings, redis_client, pg):
    app, rec = simple_app()
    k = keys(settings)
    async with running_worker(settings, app, name="w-dup"), api_client(settings) as client:
        eid = await start(client, "simple")
        assert await send(client, eid, "go") == 2
        assert await send(client, eid, "tick") == 3
        await processed(client, eid, 3)
        await wait_until(lambda: _drained(redis_client, settings), what="hints acked")
        before = [(c, len(v)) for c, v in rec.calls.items()]
        rows_before = [dict(await event_row(pg, eid, s)) for s in (1, 2, 3)]
        x_before = await execution(client, eid)

        added = (await redis_client.xinfo_stream(k.stream))["entries-added"]
        for seq in ("3", "2", "3"):
            await redis_client.xadd(k.stream, {"t": settings.tenant, "x": eid, "s": seq})
        # the worker may take them at once: count what was added, not what is left
        assert (await redis_client.xinfo_stream(k.stream))["entries-added"] == added + 3
        await wait_until(lambda: _drained(redis_client, settings), what="duplicate hints acked")

        rows_after = [dict(await event_row(pg, eid, s)) for s in (1, 2, 3)]
        x_after = await execution(client, eid)
        dead_letters = await redis_client.xlen(k.dead)

    assert [(c, len(v)) for c, v in rec.calls.items()] == before
    assert rec.count("step") == 1 and rec.count("tock") == 1
    assert rows_after == rows_before
    assert x_after == x_before
    # acked by the worker that read them, not dead-lettered after redeliveries
    assert dead_letters == 0


async def test_a_hint_is_applied_only_in_its_own_tenant(settings, redis_client, pg):
    """The hint's tenant selects the execution: a hint naming another tenant (forged, or
    from a bug) finds nothing there, is acked, and leaves this tenant's work alone."""
    quiet = replace(settings, relay_grace=60.0, reconciler_grace=60.0)  # only our hints
    app, rec = simple_app()
    k = keys(settings)
    async with running_worker(quiet, app, name="w-tenant"):
        async with api_client(replace(settings, redis_url=closed_port_url())) as down:
            eid = await start(down, "simple")  # committed; its hint never reached Redis
        for tenant in ("globex", "default-", "x" * 65):
            await redis_client.xadd(k.stream, {"t": tenant, "x": eid, "s": "1"})
        await wait_until(lambda: _drained(redis_client, settings), what="forged hints acked")
        row = await event_row(pg, eid, 1)
        assert (row["status"], row["attempts"], row["worker"]) == ("pending", 0, None)
        assert rec.order == [] and await redis_client.xlen(k.dead) == 0

        await redis_client.xadd(k.stream, {"t": settings.tenant, "x": eid, "s": "1"})
        await wait_until(lambda: _event_status(pg, eid, 1, "completed"), what="processed")
    assert await pg.fetchval("SELECT count(DISTINCT tenant_id) FROM executions") == 1


async def _event_status(pg: Any, execution_id: str, seq: int, status: str) -> bool:
    return (await event_row(pg, execution_id, seq))["status"] == status


# --- dead-lettering an event that is being processed ------------------------------------


async def test_hint_redelivered_without_attempts_is_renewed_not_dead(settings, redis_client, pg):
    """Many deliveries but no failed attempt (PostgreSQL was down): the event lives."""
    app, rec = simple_app()
    k = keys(settings)
    async with api_client(settings) as client:
        async with running_worker(settings, app, name="w-first"):
            eid = await start(client, "simple")
            await processed(client, eid, 1)
        async with api_client(replace(settings, redis_url=closed_port_url())) as down:
            assert await send(down, eid, "tick") == 2
        hint_id = await redis_client.xadd(k.stream, {"t": settings.tenant, "x": eid, "s": "2"})
        await redis_client.xreadgroup(GROUP, "ghost", {k.stream: ">"}, count=10)
        for _ in range(4):
            await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id])
        await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id], idle=60_000)
        s = replace(settings, max_deliveries=2, relay_grace=60.0, reconciler_grace=60.0)
        async with running_worker(s, app, name="w-renew") as w:
            x = await wait_until(lambda: _processed_to(client, eid, 2), what="seq 2 processed")
            assert await redis_client.xlen(k.dead) == 0
            assert metric(w, "flowrt_dead_letters_total") == 0
            evs = await events(client, eid)
    assert x["blocked_seq"] is None
    assert [(e["seq"], e["status"]) for e in evs] == [(1, "completed"), (2, "completed")]
    assert rec.count("tock") == 1


async def _processed_to(client: httpx.AsyncClient, eid: str, seq: int) -> dict[str, Any] | None:
    x = await execution(client, eid)
    return x if x["processed_seq"] >= seq else None


async def test_dead_lettering_an_event_in_flight_leaves_a_consistent_execution(
        settings, redis_client, pg):
    """A stale hint is dead-lettered while a worker is processing the event it points at.

    At b194ade this failed: ProcessingStore.commit did not check blocked_seq, so the
    in-flight pass committed the dead event 'completed' and left blocked_seq set (the
    execution blocked forever behind an event that is not dead).
    """
    app, _rec, began, release = gated_app({"run": True})
    k = keys(settings)
    # max 1: the in-flight attempt itself is enough to let the stale hint kill seq 2
    s = replace(settings, max_deliveries=1)
    async with running_worker(s, app, name="w-race") as w, api_client(s) as client:
        eid = await start(client, "simple")
        await processed(client, eid, 1)
        assert await send(client, eid, "go") == 2
        await wait_until(began.is_set, what="action started")

        # A stale hint for the same execution, pending on a consumer that died long ago
        # after several deliveries. MULTI keeps the running worker's blocked read off it.
        async with redis_client.pipeline(transaction=True) as pipe:
            pipe.xadd(k.stream, {"t": s.tenant, "x": eid, "s": "2"})
            pipe.xreadgroup(GROUP, "ghost", {k.stream: ">"}, count=1)
            hint_id, _ = await pipe.execute()
        await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id])
        await redis_client.xclaim(k.stream, GROUP, "ghost", 0, [hint_id], idle=60_000)
        await wait_until(lambda: redis_client.xrange(k.dead), what="stale hint dead-lettered")

        release.set()  # the in-flight pass now tries to commit seq 2
        await wait_until(
            lambda: metric(w, "flowrt_events_processed_total",
                           {"workflow": "simple", "outcome": "completed"}) >= 2
            or metric(w, "flowrt_lease_lost_total") >= 1,
            what="the in-flight commit was attempted")
        await wait_until(lambda: _lock_free(redis_client, k.lock(s.tenant, eid)), what="job done")
        x = await execution(client, eid)
        evs = await events(client, eid)

    status = {e["seq"]: e["status"] for e in evs}
    if x["blocked_seq"] is not None:
        # blocked: the blocking event is dead and nothing at or after it was applied
        assert status[x["blocked_seq"]] == "dead", (x, status)
        assert x["processed_seq"] < x["blocked_seq"], x
    else:
        # not blocked: the event was processed normally
        assert status[2] == "completed" and x["processed_seq"] == 2, (x, status)


async def _lock_free(redis_client: Any, key: str) -> bool:
    return not await redis_client.exists(key)


# --- a worker that lost its lock --------------------------------------------------------


async def test_worker_that_lost_its_lock_does_not_take_the_lease_again(
        settings, redis_client, pg):
    app, _rec, began, release = gated_app({"run": True})
    k = keys(settings)
    s = replace(settings, lock_ttl=0.3)  # the keeper extends (and touches hints) every 0.1 s
    async with running_worker(s, app, name="w-lost"), api_client(s) as client:
        eid = await start(client, "simple")
        await processed(client, eid, 1)
        assert await send(client, eid, "go") == 2
        await wait_until(began.is_set, what="action started")
        [(hint2, _)] = await redis_client.xrange(k.stream)

        # the lock expired and another worker took it
        await redis_client.set(k.lock(s.tenant, eid), "another-worker", px=60_000)
        # the keeper notices: it stops touching the job's hint, whose idle time grows
        await wait_until(lambda: _idle_ms(redis_client, k.stream, hint2, 1000),
                         what="keeper gave up the lock")
        epoch = await pg.fetchval("SELECT lease_epoch FROM executions WHERE execution_id = $1", eid)

        assert await send(client, eid, "tick") == 3  # more work arrives for the job in hand
        hint3 = next(mid for mid, _f in await redis_client.xrange(k.stream) if mid != hint2)
        await wait_until(lambda: _delivered_to(redis_client, k.stream, hint3, "w-lost"),
                         what="hint 3 delivered to the worker")
        release.set()
        # the job ends: both of its hints are acked (and deleted)
        await wait_until(lambda: _gone(redis_client, k.stream, [hint2, hint3]), what="job done")
        epoch_after = await pg.fetchval(
            "SELECT lease_epoch FROM executions WHERE execution_id = $1", eid)

    assert epoch_after == epoch, "a worker without the lock took the lease"


async def _idle_ms(redis_client: Any, stream: str, mid: str, at_least: int) -> bool:
    p = await redis_client.xpending_range(stream, GROUP, mid, mid, 1)
    return bool(p) and p[0]["time_since_delivered"] >= at_least


async def _delivered_to(redis_client: Any, stream: str, mid: str, consumer: str) -> bool:
    p = await redis_client.xpending_range(stream, GROUP, mid, mid, 1)
    return bool(p) and p[0]["consumer"] == consumer


async def _gone(redis_client: Any, stream: str, ids: list[str]) -> bool:
    for mid in ids:
        if await redis_client.xrange(stream, mid, mid):
            return False
    return True
