"""Worker behaviour around busy locks, unstorable results, stopping and odd Redis errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from flowrt import ActionContext, App
from tests.support.api import api_client
from tests.support.workerkit import (
    Recorder,
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

FLOW = {
    "name": "flow", "version": 1, "initial": "a",
    "states": {"a": {"on": {"tick": {"actions": ["work"]}, "go": {"target": "b"}}},
               "b": {"final": True}},
}


async def test_busy_lock_is_left_to_its_holder_without_holding_a_slot(settings, redis_client):
    app = App()
    app.add_definition(FLOW)
    rec = Recorder(app)
    rec.action("work")
    s = replace(settings, concurrency=1, reconciler_grace=0.5)
    async with running_worker(s, app, name="w-busy") as w, api_client(s) as client:
        first = await start(client, "flow")
        await processed(client, first, 1)
        other = await start(client, "flow")
        await processed(client, other, 1)
        # someone else (a worker we cannot see) holds the first execution's lock
        lock_key = keys(s).lock(s.tenant, first)
        await redis_client.set(lock_key, "someone-else", px=60_000)
        await send(client, first, "tick")
        # the hint is acked at once: the worker's only slot is not held by the busy lock...
        # (settings.lock_wait is 2 s: this is sooner than any wait for the lock)
        await wait_until(lambda: _no_pending(redis_client, s), within=1.0,
                         what="busy hint acked")
        # ...so other executions keep flowing through it
        await send(client, other, "tick")
        await processed(client, other, 2)
        # and the reconciler leaves a locked execution alone
        await asyncio.sleep(1.5)
        assert (await execution(client, first))["processed_seq"] == 1
        assert rec.count("work") == 1
        # once the holder is gone (its lock expired), the reconciler re-hints it
        await redis_client.delete(lock_key)
        await processed(client, first, 2)
    assert rec.count("work") == 2
    assert w.metrics.hints_republished.labels(source="reconciler")._value.get() >= 1


async def _no_pending(redis_client: Any, s: Any) -> bool:
    return (await stream_state(redis_client, s))[1] == 0


async def test_unstorable_action_result_fails_the_event_not_the_worker(settings):
    app = App()
    app.add_definition(FLOW)
    rec = Recorder(app)

    async def nul(ctx: ActionContext) -> dict[str, Any]:
        return {"text": "a\x00b"}  # PostgreSQL's jsonb cannot hold NUL

    rec.action("work", nul)
    async with running_worker(settings, app, name="w-nul"), api_client(settings) as client:
        eid = await start(client, "flow")
        await send(client, eid, "tick")
        x = await processed(client, eid, 2)
        evs = await events(client, eid)
    assert x["status"] == "failed"
    assert evs[1]["status"] == "failed"
    assert "cannot be stored" in evs[1]["error"] and "NUL" in evs[1]["error"]
    assert rec.count("work") == settings.retry_attempts  # retried, then given up: not dead


async def test_stop_finishes_the_running_event_and_starts_no_more(settings, redis_client):
    app = App()
    app.add_definition(FLOW)
    rec = Recorder(app)
    began = asyncio.Event()

    async def slow(ctx: ActionContext) -> dict[str, Any]:
        began.set()
        await asyncio.sleep(0.5)
        return {"last": ctx.event.seq}

    rec.action("work", slow)
    async with api_client(settings) as client:
        async with running_worker(settings, app, name="w-stop") as w:
            eid = await start(client, "flow")
            await processed(client, eid, 1)
            for _ in range(3):
                await send(client, eid, "tick")
            await wait_until(began.is_set, what="first slow action")
            w.stop()
        # run() has returned: the event in flight was committed, no other was started
        x = await execution(client, eid)
        assert x["processed_seq"] == 2 and rec.count("work") == 1
        assert not await redis_client.exists(keys(settings).lock(settings.tenant, eid))
        # the rest was handed back as a fresh hint, which the next worker picks up
        async with running_worker(settings, app, name="w-next"):
            await processed(client, eid, 4)
    assert [seq for _name, seq in rec.order] == [2, 3, 4]


async def test_publish_error_other_than_a_lost_connection_still_accepts(settings, redis_client,
                                                                         pg):
    app = App()
    app.add_definition(FLOW)
    Recorder(app).action("work")
    async with running_worker(settings, app, name="w-reg"):
        pass  # registers the definition
    # The stream key holds a string: XADD fails with WRONGTYPE, not a connection error.
    await redis_client.set(keys(settings).stream, "not a stream")
    async with api_client(settings) as client:
        r = await client.post("/v1/executions", json={"workflow": "flow"})
    assert r.status_code == 202, r.text
    published = await pg.fetchval("SELECT published FROM event_processing WHERE seq = 1")
    assert published is False  # the relay will send it


async def test_head_requests_answer_like_get(settings):
    async with api_client(settings) as client:
        r = await client.head("/v1/executions")
        assert r.status_code == 200
        r = await client.head("/v1/executions/nope/events")
        assert r.status_code == 404


async def test_crafted_cursors_are_400_not_500(settings):
    import base64

    async with api_client(settings) as client:
        for created in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                        "2030-01-01T00:00:00"):
            raw = f'["{created}", "a"]'.encode()
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            r = await client.get("/v1/executions", params={"cursor": cursor})
            assert r.status_code == 400, (created, r.text)
            assert r.headers["content-type"] == "application/problem+json"


async def test_a_hung_action_times_out_and_the_event_fails(settings):
    from flowrt import RetryPolicy

    app = App()
    app.add_definition(FLOW)
    rec = Recorder(app)

    async def hang(ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    rec.action("work", hang, retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.01,
                                               timeout=0.2))
    async with running_worker(settings, app, name="w-hang"), api_client(settings) as client:
        eid = await start(client, "flow")
        await send(client, eid, "tick")
        x = await processed(client, eid, 2)
        evs = await events(client, eid)
    assert x["status"] == "failed" and rec.count("work") == 2
    assert evs[1]["actions"][0]["attempts"] == 2
    assert "timed out after 0.2 s" in evs[1]["error"]


async def test_an_actions_own_timeout_error_is_recorded_as_it_was_raised(settings):
    """Only the action's deadline reads "timed out after"; a TimeoutError the action
    raises itself (a client's, say) keeps its own message."""
    from flowrt import RetryPolicy

    app = App()
    app.add_definition(FLOW)
    rec = Recorder(app)

    async def upstream(ctx: ActionContext) -> dict[str, Any]:
        raise TimeoutError("the payment service did not answer")

    rec.action("work", upstream, retry=RetryPolicy(attempts=1, timeout=30))
    async with running_worker(settings, app, name="w-own-timeout"), \
            api_client(settings) as client:
        eid = await start(client, "flow")
        await send(client, eid, "tick")
        x = await processed(client, eid, 2)
        evs = await events(client, eid)
    assert x["status"] == "failed"
    assert evs[1]["error"].endswith("TimeoutError: the payment service did not answer")
    assert "timed out after" not in evs[1]["error"]


async def test_worker_without_an_action_leaves_the_event_for_one_that_has_it(settings):
    full = App()
    full.add_definition(FLOW)
    rec = Recorder(full)
    rec.action("work")
    partial = App()  # serves another workflow; knows nothing of "work"
    partial.add_definition({"name": "other", "version": 1, "initial": "x",
                            "states": {"x": {"final": True}}})
    async with api_client(settings) as client:
        async with running_worker(settings, full, name="w-full"):
            eid = await start(client, "flow")
            await processed(client, eid, 1)
        async with running_worker(settings, partial, name="w-partial"):
            await send(client, eid, "tick")
            await asyncio.sleep(1.0)
            x = await execution(client, eid)
            assert (x["status"], x["processed_seq"]) == ("running", 1)  # not failed
        async with running_worker(settings, full, name="w-full-again"):
            x = await processed(client, eid, 2)
    assert x["status"] == "running" and rec.count("work") == 1


async def test_worker_started_before_its_dependencies_waits_and_stops_cleanly(settings):
    """A whole-stack restart may start workers first: they wait instead of exiting."""
    from flowrt.worker import Worker
    from tests.conftest import free_port

    app = App()
    app.add_definition(FLOW)
    Recorder(app).action("work")
    down = replace(settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                   db_timeout=0.5)
    worker = Worker(down, app, name="w-early")

    async def lifecycle() -> None:
        async with worker:
            await worker.run()

    task = asyncio.create_task(lifecycle())
    await asyncio.sleep(1.5)
    assert not task.done(), task  # still waiting for PostgreSQL, not failed
    worker.stop()
    await asyncio.wait_for(task, 5)  # no exception: a clean stop
