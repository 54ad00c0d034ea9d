"""API keys, roles and tenant isolation, against the real API with PostgreSQL and Redis.

The tenant comes only from the key: another tenant's execution answers exactly as
an execution that does not exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from flowrt.settings import Settings
from flowrt.store import Database
from flowrt.store.tenants import TenantStore
from tests.support.api import api_client, register_demo
from tests.support.keys import bearer, issue_key

PROBLEM = "application/problem+json"
START = "/v1/executions"


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == f"https://flowrt.dev/problems/{slug}"
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def _counts(pg: Any) -> tuple[int, int]:
    return (int(await pg.fetchval("SELECT count(*) FROM events")),
            int(await pg.fetchval("SELECT count(*) FROM executions")))


@pytest.fixture
async def demo(settings: Settings) -> Settings:
    await register_demo(settings)
    return settings


# --------------------------------------------------------------------------- 401

async def _revoked_key(settings: Settings) -> str:
    key = await issue_key(settings.database_url, "acme", "writer")
    async with Database(settings.database_url) as db:
        assert await TenantStore(db).revoke(key.split("_")[1]) is True
    return key


UNAUTHORIZED: dict[str, str | bytes | None] = {
    "none": None,
    "empty": "",
    "basic-scheme": "Basic dXNlcjpwYXNz",
    "bearer-nothing": "Bearer ",
    "malformed": "Bearer not-a-key",
    "wrong-prefix": "Bearer xyz_0123456789ab_" + "a" * 43,
    "short-secret": "Bearer frk_0123456789ab_abc",
    "non-ascii": ("Bearer frk_0123456789ab_" + "é" * 43).encode(),
    "unknown": "Bearer frk_0123456789ab_" + "a" * 43,
    "known-id-wrong-secret": "KNOWN_ID",
    "revoked": "REVOKED",
    "key-without-scheme": "BARE",
}


async def test_every_bad_credential_gets_the_same_401(demo, pg):
    good = await issue_key(demo.database_url, "acme", "admin")
    special = {"KNOWN_ID": "Bearer " + good[:-43] + "b" * 43,
               "REVOKED": "Bearer " + await _revoked_key(demo), "BARE": good}
    before = await _counts(pg)
    seen: dict[str, set[bytes]] = {}
    async with api_client(demo, key="") as client:
        for case, auth in UNAUTHORIZED.items():
            if isinstance(auth, str):
                auth = special.get(auth, auth)
            headers = {} if auth is None else {"Authorization": auth}
            for r in (
                await client.post(START, json={"workflow": "order"}, headers=headers),
                await client.post(f"{START}/x1/events", json={"name": "approve"},
                                  headers=headers),
                await client.get(f"{START}/x1", headers=headers),
                await client.get(f"{START}/x1/events", headers=headers),
                await client.get(START, headers=headers),
                await client.get("/metrics", headers=headers),
            ):
                body = _problem(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == 'Bearer realm="flowrt"', case
                body.pop("instance")
                seen.setdefault(case, set()).add(repr(sorted(body.items())).encode())
    # Nothing in the answer tells missing, malformed, unknown and revoked keys apart.
    assert len(set.union(*seen.values())) == 1, seen
    assert await _counts(pg) == before


async def test_an_unauthenticated_body_is_never_read(demo, pg):
    """401 comes first, whatever the body: malformed, oversized or of another type."""
    async with api_client(demo, key="") as client:
        for content, ctype in ((b"{", "application/json"), (b"x" * 2_000_000, "text/plain")):
            r = await client.post(START, content=content, headers={"content-type": ctype})
            _problem(r, 401, "unauthorized")
    assert await _counts(pg) == (0, 0)


# --------------------------------------------------------------------------- roles

async def test_roles(demo, pg):
    keys = {role: await issue_key(demo.database_url, "acme", role)
            for role in ("reader", "writer", "admin")}
    async with api_client(demo, key="") as client:
        def as_(role: str) -> dict[str, str]:
            return bearer(keys[role])

        r = await client.post(START, json={"workflow": "order", "execution_id": "x1"},
                              headers=as_("reader"))
        _problem(r, 403, "forbidden")
        r = await client.post(f"{START}/x1/events", json={"name": "approve"},
                              headers=as_("reader"))
        _problem(r, 403, "forbidden")
        assert await _counts(pg) == (0, 0)

        r = await client.post(START, json={"workflow": "order", "execution_id": "x1"},
                              headers=as_("writer"))
        assert r.status_code == 202, r.text
        for role in ("reader", "writer", "admin"):
            assert (await client.get(f"{START}/x1", headers=as_(role))).status_code == 200
            assert (await client.get(f"{START}/x1/events", headers=as_(role))).status_code == 200
            assert (await client.get(START, headers=as_(role))).status_code == 200
        for role in ("reader", "writer"):
            _problem(await client.get("/metrics", headers=as_(role)), 403, "forbidden")
        metrics = await client.get("/metrics", headers=as_("admin"))
        assert metrics.status_code == 200
        assert 'flowrt_auth_failures_total{reason="forbidden"} 4.0' in metrics.text
        # open to load balancers and tooling, without a key
        for path in ("/healthz", "/readyz"):
            assert (await client.get(path)).status_code == 200


# --------------------------------------------------------------------------- tenants

async def test_another_tenants_execution_is_as_if_it_did_not_exist(demo, pg):
    acme = await issue_key(demo.database_url, "acme", "writer")
    globex = await issue_key(demo.database_url, "globex", "writer")
    async with api_client(demo, key=acme) as client:
        r = await client.post(START, json={"workflow": "order", "execution_id": "x1"})
        assert r.status_code == 202
        r = await client.post(f"{START}/x1/events", json={"name": "approve"},
                              headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202

        theirs = bearer(globex)
        missing = [
            await client.get(f"{START}/x1", headers=theirs),
            await client.get(f"{START}/x1/events", headers=theirs),
            await client.post(f"{START}/x1/events", json={"name": "approve"},
                              headers={**theirs, "Idempotency-Key": "k1"}),
        ]
        nowhere = [
            await client.get(f"{START}/x9", headers=theirs),
            await client.get(f"{START}/x9/events", headers=theirs),
            await client.post(f"{START}/x9/events", json={"name": "approve"},
                              headers={**theirs, "Idempotency-Key": "k1"}),
        ]
        for mine, unknown in zip(missing, nowhere, strict=True):
            a, b = _problem(mine, 404, "not-found"), _problem(unknown, 404, "not-found")
            assert a["detail"].replace("x1", "x9") == b["detail"]
        listed = await client.get(START, headers=theirs)
        assert listed.status_code == 200 and listed.json()["executions"] == []
        assert [x["execution_id"] for x in (await client.get(START)).json()["executions"]] \
            == ["x1"]

        # The same id in the other tenant is another execution; the same key too.
        r = await client.post(START, json={"workflow": "order", "execution_id": "x1"},
                              headers=theirs)
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        r = await client.post(f"{START}/x1/events", json={"name": "cancel"},
                              headers={**theirs, "Idempotency-Key": "k1"})
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers
        ours = (await client.get(f"{START}/x1/events")).json()["events"]
        their = (await client.get(f"{START}/x1/events", headers=theirs)).json()["events"]
    assert [e["name"] for e in ours] == ["flowrt.started", "approve"]
    assert [e["name"] for e in their] == ["flowrt.started", "cancel"]
    rows = await pg.fetch("SELECT tenant_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in rows] == [("acme", 2), ("globex", 2)]


@pytest.mark.parametrize("body", [
    {"workflow": "order", "tenant": "globex"},
    {"workflow": "order", "tenant_id": "globex"},
])
async def test_a_tenant_in_the_body_is_refused(demo, pg, body):
    key = await issue_key(demo.database_url, "acme", "writer")
    async with api_client(demo, key=key) as client:
        _problem(await client.post(START, json=body), 422, "invalid-body")
        r = await client.post(f"{START}", json={"workflow": "order", "execution_id": "x1"})
        assert r.status_code == 202
        r = await client.post(f"{START}/x1/events",
                              json={"name": "approve", "tenant": "globex"})
        _problem(r, 422, "invalid-body")
    assert await _counts(pg) == (1, 1)


async def test_a_tenant_header_changes_nothing(demo, pg):
    key = await issue_key(demo.database_url, "acme", "writer")
    async with api_client(demo, key=key) as client:
        r = await client.post(START, json={"workflow": "order", "execution_id": "x1"},
                              headers={"X-Tenant": "globex", "X-Tenant-Id": "globex",
                                       "Tenant": "globex"})
        assert r.status_code == 202
    assert await pg.fetchval("SELECT tenant_id FROM executions") == "acme"


# --------------------------------------------------------------------------- revocation

async def test_a_revoked_key_stops_working_within_the_cache_ttl(demo):
    s = replace(demo, auth_cache_ttl=0.3)
    key = await issue_key(s.database_url, "acme", "reader")
    async with api_client(s, key=key) as client:
        assert (await client.get(START)).status_code == 200
        async with Database(s.database_url) as db:
            assert await TenantStore(db).revoke(key.split("_")[1]) is True
        await asyncio.sleep(0.4)
        _problem(await client.get(START), 401, "unauthorized")


# --------------------------------------------------------------------------- auth off

async def test_auth_off_is_explicit_and_loud(demo, pg):
    s = replace(demo, auth="off", tenant="local")
    with capture_logs() as logs:
        async with api_client(s, key="") as client:
            r = await client.post(START, json={"workflow": "order", "execution_id": "x1"})
            assert r.status_code == 202
            assert (await client.get("/metrics")).status_code == 200
    assert await pg.fetchval("SELECT tenant_id FROM executions") == "local"
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert any("AUTHENTICATION IS OFF" in e["event"] for e in warnings)


def test_auth_is_on_by_default():
    assert Settings().auth == "on"
