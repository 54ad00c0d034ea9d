"""The HTTP API against real PostgreSQL and Redis: starting, appending, reading back.

Each test gets its own database and Redis key prefix (tests/conftest.py); the app
runs in-process with its lifespan (tests/support/api.py). No worker runs here, so
every event stays pending and executions stay running unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from flowrt.definition import load_definition, parse_definition
from flowrt.settings import Settings
from flowrt.store import Database
from flowrt.store.definitions import DefinitionStore
from tests.conftest import free_port, with_database
from tests.support.api import api_client, register_demo
from tests.support.keys import issue_key

ORDER_YAML = Path(__file__).resolve().parents[2] / "workers" / "demo" / "order.yaml"
PROBLEM = "application/problem+json"


# --------------------------------------------------------------------------- helpers


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://flowrt.dev/problems/")
    if slug is not None:
        assert body["type"] == f"https://flowrt.dev/problems/{slug}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def count_events(pg: Any, execution_id: str | None = None) -> int:
    if execution_id is None:
        return int(await pg.fetchval("SELECT count(*) FROM events"))
    return int(await pg.fetchval("SELECT count(*) FROM events WHERE execution_id = $1",
                                 execution_id))


def stream_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}:hints"


async def register(settings: Settings, *workflows: Any) -> None:
    async with Database(settings.database_url) as db:
        store = DefinitionStore(db)
        for wf in workflows:
            assert await store.register(wf) is True


def order_v2() -> Any:
    v1 = load_definition(ORDER_YAML)
    assert v1.version == 1
    return parse_definition(msgspec.structs.replace(v1.definition, version=2,
                                                    description="order, second version"))


def invoice_v1() -> Any:
    return parse_definition({
        "name": "invoice", "version": 1, "initial": "open",
        "states": {"open": {"on": {"pay": {"target": "paid"}}}, "paid": {"final": True}},
    })


async def start(client: httpx.AsyncClient, workflow: str = "order", **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/executions", json={"workflow": workflow, **body})
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


def parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert ts.tzinfo is not None
    return ts


# --------------------------------------------------------------------------- starting


async def test_start_appends_started_event_and_answers_202(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        r = await client.post("/v1/executions",
                              json={"workflow": "order", "input": {"sku": "A-1", "qty": 3}})
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"execution_id", "event_id", "seq", "status"}
    assert body["seq"] == 1
    assert body["status"] == "pending"
    execution_id = body["execution_id"]
    uuid.UUID(execution_id)  # a server-chosen id is a UUID
    uuid.UUID(body["event_id"])
    assert r.headers["location"] == f"/v1/executions/{execution_id}"

    rows = await pg.fetch("SELECT seq, event_id::text AS event_id, name, payload, idempotency_key"
                          " FROM events WHERE execution_id = $1", execution_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["seq"] == 1
    assert row["event_id"] == body["event_id"]
    assert row["name"] == "flowrt.started"
    assert json.loads(row["payload"]) == {"input": {"sku": "A-1", "qty": 3}}
    assert row["idempotency_key"] is None
    ex = await pg.fetchrow("SELECT workflow, version, status, last_seq, processed_seq"
                           " FROM executions WHERE execution_id = $1", execution_id)
    assert dict(ex) == {"workflow": "order", "version": 1, "status": "running", "last_seq": 1,
                        "processed_seq": 0}
    assert await pg.fetchval("SELECT count(*) FROM event_processing WHERE execution_id = $1"
                             " AND seq = 1 AND status = 'pending'", execution_id) == 1


async def test_start_without_input_records_empty_input(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        body = await start(client)
    payload = await pg.fetchval("SELECT payload FROM events WHERE execution_id = $1",
                                body["execution_id"])
    assert json.loads(payload) == {"input": {}}


async def test_default_version_is_the_latest_registered(settings, pg):
    await register_demo(settings)
    await register(settings, order_v2())
    bodies = {r["version"]: json.loads(r["body"]) for r in await pg.fetch(
        "SELECT version, body FROM workflow_definitions WHERE name = 'order'")}
    assert set(bodies) == {1, 2} and bodies[1] != bodies[2]

    async with api_client(settings) as client:
        latest = await start(client, input={"n": 1})
        pinned = await start(client, version=1, input={"n": 2})
        explicit = await start(client, version=2, input={"n": 3})
        got = {}
        for name, b in (("latest", latest), ("pinned", pinned), ("explicit", explicit)):
            r = await client.get(f"/v1/executions/{b['execution_id']}")
            assert r.status_code == 200
            got[name] = r.json()["version"]
    assert got == {"latest": 2, "pinned": 1, "explicit": 2}


async def test_client_execution_id_is_idempotent(settings, pg, redis_client):
    await register_demo(settings)
    req = {"workflow": "order", "input": {"sku": "B"}, "execution_id": "order-42"}
    async with api_client(settings) as client:
        first = await client.post("/v1/executions", json=req)
        again = await client.post("/v1/executions", json=req)
        other = await client.post("/v1/executions", json={**req, "input": {"sku": "C"}})
        other_version = await client.post("/v1/executions", json={**req, "version": 1})
    assert first.status_code == 202 and again.status_code == 202
    assert first.json()["execution_id"] == "order-42"
    assert again.json() == first.json()
    assert again.headers["location"] == "/v1/executions/order-42"
    assert_problem(other, 409, "conflict")
    assert_problem(other_version, 409, "conflict")
    assert await count_events(pg) == 1
    assert await pg.fetchval("SELECT count(*) FROM executions") == 1
    # the retry is not a new append: one hint only
    assert await redis_client.xlen(stream_key(settings)) == 1


# --------------------------------------------------------------------------- appending


async def test_send_event_appends_at_the_head(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        r = await client.post(f"/v1/executions/{execution_id}/events",
                              json={"name": "approve", "payload": {"amount": 10}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"event_id", "execution_id", "seq", "status"}
    assert body["execution_id"] == execution_id
    assert body["seq"] == 2
    assert body["status"] == "pending"
    row = await pg.fetchrow("SELECT event_id::text AS event_id, name, payload FROM events"
                            " WHERE execution_id = $1 AND seq = 2", execution_id)
    assert row["event_id"] == body["event_id"]
    assert row["name"] == "approve"
    assert json.loads(row["payload"]) == {"amount": 10}
    assert await pg.fetchval("SELECT last_seq FROM executions WHERE execution_id = $1",
                             execution_id) == 2


async def test_event_payload_defaults_to_empty_object(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        r = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "reject"})
    assert r.status_code == 202, r.text
    assert json.loads(await pg.fetchval("SELECT payload FROM events WHERE seq = 2")) == {}


async def test_idempotency_key_returns_the_first_append(settings, pg, redis_client):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        url = f"/v1/executions/{execution_id}/events"
        event = {"name": "approve", "payload": {"amount": 5}}
        key = {"Idempotency-Key": "pay-7f3a"}
        first = await client.post(url, json=event, headers=key)
        assert first.status_code == 202, first.text
        count, hints = await count_events(pg), await redis_client.xlen(stream_key(settings))
        again = await client.post(url, json=event, headers=key)
        mismatch = await client.post(url, json={**event, "payload": {"amount": 6}}, headers=key)
        assert await count_events(pg) == count == 2
        assert await redis_client.xlen(stream_key(settings)) == hints == 2
        fresh = await client.post(url, json=event, headers={"Idempotency-Key": "pay-other"})
        unkeyed = await client.post(url, json=event)
    assert again.status_code == 202
    assert again.json()["event_id"] == first.json()["event_id"]
    assert again.json()["seq"] == first.json()["seq"] == 2
    assert_problem(mismatch, 422, "idempotency-key-reused")
    assert fresh.status_code == 202 and fresh.json()["seq"] == 3
    assert unkeyed.status_code == 202 and unkeyed.json()["seq"] == 4
    assert await pg.fetchval("SELECT idempotency_key FROM events WHERE seq = 2") == "pay-7f3a"


async def test_idempotency_key_at_255_characters_is_accepted(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        r = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"},
                              headers={"Idempotency-Key": "k" * 255})
    assert r.status_code == 202, r.text
    assert await pg.fetchval("SELECT length(idempotency_key) FROM events WHERE seq = 2") == 255


async def test_concurrent_retries_with_one_key_append_once(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        url = f"/v1/executions/{execution_id}/events"
        rs = await asyncio.gather(*(client.post(url, json={"name": "approve"},
                                                headers={"Idempotency-Key": "once"})
                                    for _ in range(10)))
    assert [r.status_code for r in rs] == [202] * 10
    assert len({r.json()["event_id"] for r in rs}) == 1
    assert {r.json()["seq"] for r in rs} == {2}
    assert await count_events(pg, execution_id) == 2


async def test_event_for_finished_execution_is_refused(settings, pg, redis_client):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        url = f"/v1/executions/{execution_id}/events"
        keyed = await client.post(url, json={"name": "approve"}, headers={"Idempotency-Key": "k1"})
        assert keyed.status_code == 202
        await pg.execute("UPDATE executions SET status = 'completed' WHERE execution_id = $1",
                         execution_id)
        hints = await redis_client.xlen(stream_key(settings))
        r = await client.post(url, json={"name": "ship"})
        # a retry of an append made before the end still answers with that append
        retry = await client.post(url, json={"name": "approve"}, headers={"Idempotency-Key": "k1"})
    body = assert_problem(r, 409, "execution-finished")
    assert "completed" in body["detail"]
    assert retry.status_code == 202 and retry.json()["event_id"] == keyed.json()["event_id"]
    assert await count_events(pg, execution_id) == 2
    assert await redis_client.xlen(stream_key(settings)) == hints


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_event_for_failed_or_cancelled_execution_is_refused(settings, pg, status):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        await pg.execute("UPDATE executions SET status = $2 WHERE execution_id = $1",
                         execution_id, status)
        r = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"})
    assert_problem(r, 409, "execution-finished")
    assert await count_events(pg, execution_id) == 1


async def test_seq_increases_without_gaps(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        a = (await start(client))["execution_id"]
        b = (await start(client))["execution_id"]
        seqs_a, seqs_b = [], []
        for i in range(4):
            for ex, seqs in ((a, seqs_a), (b, seqs_b)):
                r = await client.post(f"/v1/executions/{ex}/events",
                                      json={"name": "ping", "payload": {"i": i}})
                assert r.status_code == 202, r.text
                seqs.append(r.json()["seq"])
    assert seqs_a == seqs_b == [2, 3, 4, 5]
    for ex in (a, b):
        assert [r["seq"] for r in await pg.fetch(
            "SELECT seq FROM events WHERE execution_id = $1 ORDER BY seq", ex)] == [1, 2, 3, 4, 5]


async def test_fifty_concurrent_appends_get_distinct_gapless_seqs(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        url = f"/v1/executions/{execution_id}/events"
        rs = await asyncio.gather(*(client.post(url, json={"name": "tick", "payload": {"i": i}})
                                    for i in range(50)))
    assert [r.status_code for r in rs] == [202] * 50, [r.text for r in rs if r.status_code != 202]
    assert sorted(r.json()["seq"] for r in rs) == list(range(2, 52))
    assert len({r.json()["event_id"] for r in rs}) == 50
    rows = await pg.fetch("SELECT seq, payload FROM events WHERE execution_id = $1 ORDER BY seq",
                          execution_id)
    assert [r["seq"] for r in rows] == list(range(1, 52))
    assert sorted(json.loads(r["payload"])["i"] for r in rows[1:]) == list(range(50))
    # the answer's seq is the seq the payload was stored under
    by_seq = {r["seq"]: json.loads(r["payload"]) for r in rows[1:]}
    for i, r in enumerate(rs):
        assert by_seq[r.json()["seq"]] == {"i": i}
    assert await pg.fetchval("SELECT last_seq FROM executions WHERE execution_id = $1",
                             execution_id) == 51


# --------------------------------------------------------------------------- hints


async def test_hint_is_published_and_event_marked_published(settings, pg, redis_client):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        r = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"})
        assert r.status_code == 202
    entries = await redis_client.xrange(stream_key(settings))
    assert [fields for _id, fields in entries] == [
        {"t": settings.tenant, "x": execution_id, "s": "1"},
        {"t": settings.tenant, "x": execution_id, "s": "2"},
    ]
    rows = await pg.fetch("SELECT seq, published FROM event_processing WHERE execution_id = $1"
                          " ORDER BY seq", execution_id)
    assert [(r["seq"], r["published"]) for r in rows] == [(1, True), (2, True)]


async def test_redis_down_still_accepts_and_leaves_event_unpublished(settings, pg):
    await register_demo(settings)
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=1.0)
    async with api_client(down) as client:
        r = await client.post("/v1/executions", json={"workflow": "order", "input": {"a": 1}})
        assert r.status_code == 202, r.text
        assert r.json()["seq"] == 1
        execution_id = r.json()["execution_id"]
        ev = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"})
        assert ev.status_code == 202, ev.text
        assert ev.json()["seq"] == 2
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
    rows = await pg.fetch("SELECT seq, published, status FROM event_processing"
                          " WHERE execution_id = $1 ORDER BY seq", execution_id)
    assert [tuple(r) for r in rows] == [(1, False, "pending"), (2, False, "pending")]
    assert await count_events(pg, execution_id) == 2
    # Still accepting: ready, but degraded (hints wait for the relay).
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "degraded",
                            "checks": {"postgres": "ok", "redis": "unreachable"}}
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert "flowrt_publish_failures_total 2.0" in metrics.text


async def test_postgres_down_answers_503_and_publishes_nothing(settings, redis_client):
    down = replace(settings, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nodb",
                   db_timeout=1.0)
    key = await issue_key(settings.database_url)  # a real key: the API cannot check it
    async with api_client(down, key=key) as client:
        started = await client.post("/v1/executions", json={"workflow": "order"})
        event = await client.post("/v1/executions/some-id/events", json={"name": "approve"},
                                  headers={"Idempotency-Key": "k"})
        read = await client.get("/v1/executions/some-id")
        listed = await client.get("/v1/executions")
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    for r in (started, event, read, listed):
        assert_problem(r, 503, "unavailable")
        assert r.headers["retry-after"] == "5"
    body = assert_problem(ready, 503, "not-ready")
    assert ready.headers["retry-after"] == "5"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["postgres"] != "ok"
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert await redis_client.xlen(stream_key(settings)) == 0
    assert await redis_client.exists(stream_key(settings)) == 0


async def test_database_not_migrated_answers_503_not_500(settings, pg_server_url):
    """The API started before (or without) ``flowrt migrate``: a clear, retryable 503."""
    name = f"flowrt_api_empty_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        empty = replace(settings, database_url=with_database(pg_server_url, name))
        async with api_client(empty, key=await issue_key(settings.database_url)) as client:
            started = await client.post("/v1/executions", json={"workflow": "order"})
            event = await client.post("/v1/executions/x/events", json={"name": "approve"})
            read = await client.get("/v1/executions/x")
        for r in (started, event, read):
            body = assert_problem(r, 503, "unavailable")
            assert r.headers["retry-after"]
            assert "PostgreSQL" in body["detail"]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_readyz_when_everything_is_up(settings):
    async with api_client(settings) as client:
        r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


# --------------------------------------------------------------------------- reading


async def test_get_execution_fields(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        before = datetime.now(UTC) - timedelta(seconds=5)
        execution_id = (await start(client, input={"sku": "Z"}, execution_id="read-me"))[
            "execution_id"]
        r = await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"})
        assert r.status_code == 202
        r = await client.get(f"/v1/executions/{execution_id}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    expected = {"execution_id", "workflow", "version", "status", "state", "data", "last_seq",
                "processed_seq", "created_at", "updated_at"}
    assert expected <= set(body), set(body)
    assert body["execution_id"] == "read-me"
    assert body["workflow"] == "order"
    assert body["version"] == 1
    assert body["status"] == "running"
    assert body["state"] is None  # no worker has processed flowrt.started
    assert body["data"] == {}
    assert body["last_seq"] == 2
    assert body["processed_seq"] == 0
    created, updated = parse_ts(body["created_at"]), parse_ts(body["updated_at"])
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=5)
    assert updated >= created


async def test_get_execution_reflects_the_projection(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        await start(client, execution_id="proj")
        await pg.execute("UPDATE executions SET state = 'approved', data = $1::jsonb,"
                         " processed_seq = 1, status = 'completed' WHERE execution_id = 'proj'",
                         json.dumps({"sku": "Q", "n": [1, 2]}))
        r = await client.get("/v1/executions/proj")
    body = r.json()
    assert (body["state"], body["data"], body["processed_seq"], body["status"]) == (
        "approved", {"sku": "Q", "n": [1, 2]}, 1, "completed")


async def test_list_events_fields(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client, input={"sku": "E"}))["execution_id"]
        sent = await client.post(f"/v1/executions/{execution_id}/events",
                                 json={"name": "approve", "payload": {"amount": 3}})
        r = await client.get(f"/v1/executions/{execution_id}/events")
    assert r.status_code == 200
    events = r.json()["events"]
    assert [e["seq"] for e in events] == [1, 2]
    fields = {"seq", "event_id", "name", "payload", "status", "from_state", "to_state", "actions",
              "attempts", "error", "created_at", "processed_at"}
    for e in events:
        assert fields <= set(e), set(e)
        assert e["status"] == "pending"
        assert e["from_state"] is None and e["to_state"] is None
        assert e["actions"] == [] and e["attempts"] == 0 and e["error"] is None
        assert e["processed_at"] is None
        parse_ts(e["created_at"])
    assert events[0]["name"] == "flowrt.started"
    assert events[0]["payload"] == {"input": {"sku": "E"}}
    assert events[1]["name"] == "approve"
    assert events[1]["payload"] == {"amount": 3}
    assert events[1]["event_id"] == sent.json()["event_id"]


async def test_list_events_shows_a_processing_record(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        await pg.execute(
            "UPDATE event_processing SET status = 'completed', from_state = NULL,"
            " to_state = 'pending', attempts = 1, processed_at = now(), actions = $2::jsonb"
            " WHERE execution_id = $1 AND seq = 1", execution_id,
            json.dumps([{"name": "notify", "ok": True, "result": {"x": 1}, "attempts": 1}]))
        r = await client.get(f"/v1/executions/{execution_id}/events")
    (e,) = r.json()["events"]
    assert (e["status"], e["to_state"], e["attempts"]) == ("completed", "pending", 1)
    assert e["actions"] == [{"name": "notify", "ok": True, "result": {"x": 1}}]
    parse_ts(e["processed_at"])


async def test_list_events_pages_with_after_and_limit(settings):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        for _ in range(4):
            await client.post(f"/v1/executions/{execution_id}/events", json={"name": "x"})
        page1 = (await client.get(f"/v1/executions/{execution_id}/events?limit=2")).json()
        page2 = (await client.get(
            f"/v1/executions/{execution_id}/events?limit=2&after={page1['next_after']}")).json()
        page3 = (await client.get(
            f"/v1/executions/{execution_id}/events?limit=2&after={page2['next_after']}")).json()
    assert [e["seq"] for e in page1["events"]] == [1, 2] and page1["next_after"] == 2
    assert [e["seq"] for e in page2["events"]] == [3, 4] and page2["next_after"] == 4
    assert [e["seq"] for e in page3["events"]] == [5] and page3["next_after"] is None


async def _seven_executions(settings, pg, client) -> list[str]:
    """Seven executions: five of order, two of invoice; three share a created_at."""
    await register(settings, invoice_v1())
    ids = [f"ex-{i}" for i in range(7)]
    for i, ex in enumerate(ids):
        await start(client, "invoice" if i in (1, 4) else "order", execution_id=ex)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    # ex-2, ex-3 and ex-5 tie on created_at: the execution id must break the tie
    offsets = {"ex-0": 1, "ex-1": 2, "ex-2": 3, "ex-3": 3, "ex-4": 4, "ex-5": 3, "ex-6": 0}
    for ex, off in offsets.items():
        await pg.execute("UPDATE executions SET created_at = $2 WHERE execution_id = $1",
                         ex, base + timedelta(seconds=off))
    await pg.execute("UPDATE executions SET status = 'completed'"
                     " WHERE execution_id IN ('ex-0', 'ex-5')")
    await pg.execute("UPDATE executions SET status = 'failed' WHERE execution_id = 'ex-4'")
    return ids


async def _all_pages(client, query: str, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = f"/v1/executions?limit={limit}{query}"
        if cursor is not None:
            url += f"&cursor={cursor}"
        r = await client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["executions"]) <= limit
        seen += [e["execution_id"] for e in page["executions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 20


async def test_list_executions_keyset_pagination(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        ids = await _seven_executions(settings, pg, client)
        seen, pages = await _all_pages(client, "", 3)
        r = await client.get("/v1/executions?limit=3")
        first = r.json()
    # created_at desc, ties broken by execution id desc
    assert seen == ["ex-4", "ex-5", "ex-3", "ex-2", "ex-1", "ex-0", "ex-6"]
    assert sorted(seen) == sorted(ids)
    assert pages == 3
    assert [e["execution_id"] for e in first["executions"]] == ["ex-4", "ex-5", "ex-3"]
    assert isinstance(first["next_cursor"], str) and first["next_cursor"]
    stamps = [parse_ts(e["created_at"]) for e in first["executions"]]
    assert stamps == sorted(stamps, reverse=True)


async def test_list_executions_exact_multiple_of_limit_ends(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        for i in range(6):
            await start(client, execution_id=f"m-{i}")
        seen, pages = await _all_pages(client, "", 3)
    assert sorted(seen) == [f"m-{i}" for i in range(6)] and len(seen) == 6
    assert pages == 2  # no empty third page


async def test_list_executions_filters(settings, pg):
    await register_demo(settings)
    async with api_client(settings) as client:
        await _seven_executions(settings, pg, client)
        completed, _ = await _all_pages(client, "&status=completed", 1)
        failed, _ = await _all_pages(client, "&status=failed", 3)
        running, _ = await _all_pages(client, "&status=running", 2)
        invoices, _ = await _all_pages(client, "&workflow=invoice", 1)
        orders, _ = await _all_pages(client, "&workflow=order", 2)
        both, _ = await _all_pages(client, "&workflow=order&status=running", 3)
        nothing = (await client.get("/v1/executions?workflow=nope")).json()
        default = (await client.get("/v1/executions")).json()
    assert completed == ["ex-5", "ex-0"]
    assert failed == ["ex-4"]
    assert running == ["ex-3", "ex-2", "ex-1", "ex-6"]
    assert invoices == ["ex-4", "ex-1"]
    assert orders == ["ex-5", "ex-3", "ex-2", "ex-0", "ex-6"]
    assert both == ["ex-3", "ex-2", "ex-6"]
    assert nothing == {"executions": [], "next_cursor": None}
    assert len(default["executions"]) == 7 and default["next_cursor"] is None
    assert {e["status"] for e in default["executions"]} == {"running", "completed", "failed"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "garbage!!",
    "%C3%A9",
    _b64(b"not json"),
    _b64(b"[1, 2]"),
    _b64(b'["yesterday", "ex-1"]'),
    _b64(b'["2030-01-01T00:00:00+00:00"]'),
    _b64(b'{"a": 1}'),
    _b64(b"\xff\xfe"),
])
async def test_list_executions_garbage_cursor_is_400(settings, cursor):
    async with api_client(settings) as client:
        r = await client.get(f"/v1/executions?limit=3&cursor={cursor}")
    assert_problem(r, 400, "invalid-input")


# --------------------------------------------------------------------------- metrics


async def test_metrics_count_appended_events(settings):
    await register_demo(settings)
    async with api_client(settings) as client:
        execution_id = (await start(client))["execution_id"]
        await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"},
                          headers={"Idempotency-Key": "m"})
        # an idempotent retry appends nothing, so it is not counted
        await client.post(f"/v1/executions/{execution_id}/events", json={"name": "approve"},
                          headers={"Idempotency-Key": "m"})
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE flowrt_events_appended_total counter" in r.text
    assert 'flowrt_events_appended_total{workflow="order"} 2.0' in r.text
    assert "flowrt_publish_failures_total 0.0" in r.text


async def test_healthz(settings):
    async with api_client(settings) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
