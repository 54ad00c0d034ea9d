"""Per-tenant rate limits (a token bucket in Redis) against the real API and Redis."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from flowrt.bus import Bus, Keys
from flowrt.bus.batcher import TokenBatcher
from flowrt.store import Database
from flowrt.store.tenants import TenantStore
from tests.conftest import free_port
from tests.support.api import api_client, register_demo
from tests.support.keys import bearer, issue_key
from tests.support.observe import metric

START = "/v1/executions"


@pytest.fixture
async def demo(settings):
    await register_demo(settings)
    return settings


async def test_a_tenant_over_its_rate_gets_429_and_others_do_not(demo, pg):
    s = replace(demo, rate_limit=0.5, rate_burst=3)
    acme = await issue_key(s.database_url, "acme", "admin")
    globex = await issue_key(s.database_url, "globex", "writer")
    async with api_client(s, key=acme) as client:
        for i in range(3):
            r = await client.post(START, json={"workflow": "order", "execution_id": f"a{i}"})
            assert r.status_code == 202, r.text
        refused = await client.post(START, json={"workflow": "order", "execution_id": "a3"})
        read = await client.get(START)  # reads count too: a bucket is per tenant
        other = await client.post(START, json={"workflow": "order", "execution_id": "g0"},
                                  headers=bearer(globex))
        scraped = await client.get("/metrics")  # an operator's scrape is never limited
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "https://flowrt.dev/problems/rate-limited"
    assert "'acme'" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # one token at 0.5/s
    assert read.status_code == 429
    assert other.status_code == 202
    assert scraped.status_code == 200
    assert metric(scraped.text, "flowrt_rate_limited_total") == 2
    ids = await pg.fetch("SELECT execution_id FROM executions ORDER BY 1")
    assert [r[0] for r in ids] == ["a0", "a1", "a2", "g0"]  # the refused start wrote nothing


async def test_a_tenants_own_limit_overrides_the_deployments(demo):
    s = replace(demo, rate_limit=1000.0, rate_burst=1000)
    async with Database(s.database_url) as db:
        await TenantStore(db).create_tenant("small", rate_limit=0.1, rate_burst=1)
    key = await issue_key(s.database_url, "small", "reader")
    async with api_client(s, key=key) as client:
        assert (await client.get(START)).status_code == 200
        r = await client.get(START)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) == 10
    assert "limit of 0.1 requests per second (burst 1)" in r.json()["detail"]


async def test_the_bucket_refills_at_the_rate(demo, redis_server_url):
    async with Bus(redis_server_url, Keys(demo.redis_prefix)) as bus:
        [(granted, _)] = await bus.take_tokens([(("t", 10.0, 2), 3)])  # 3 want, 2 there
        assert granted == 2
        [(granted, wait)] = await bus.take_tokens([(("t", 10.0, 2), 1)])
        assert granted == 0 and 0 < wait <= 0.1
        ttl = await bus.client.pttl(bus.keys.rate("t"))
        assert 0 < ttl <= 1200  # an idle bucket expires once it would be full again
        await asyncio.sleep(0.25)
        [(granted, _), (other, _)] = await bus.take_tokens([(("t", 10.0, 2), 5),
                                                            (("u", 1.0, 4), 5)])
        assert (granted, other) == (2, 4)  # refilled to its burst; another tenant's own


async def test_concurrent_requests_share_one_script_run_and_keep_their_order(demo,
                                                                            redis_server_url):
    async with Bus(redis_server_url, Keys(demo.redis_prefix)) as bus:
        tokens = TokenBatcher(bus)
        await tokens.start()
        try:
            waits = await asyncio.gather(*(tokens.take("a" if i % 2 else "b", 0.01, 3)
                                           for i in range(10)))
        finally:
            await tokens.close()
    # each tenant's first three (its burst) go through, in the order they asked
    assert [w == 0 for w in waits] == [True] * 6 + [False] * 4
    assert all(w > 60 for w in waits[6:])  # a token every 100 s


async def test_zero_rate_means_no_limit(demo):
    s = replace(demo, rate_limit=0.0, rate_burst=1)
    async with api_client(s, role="reader") as client:
        assert all([(await client.get(START)).status_code == 200 for _ in range(5)])


async def test_the_limiter_fails_open_when_redis_is_down(demo, pg):
    key = await issue_key(demo.database_url, "acme", "admin")
    down = replace(demo, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit=0.1,
                   rate_burst=1, redis_timeout=0.5)
    async with api_client(down, key=key) as client:
        answers = [await client.post(START, json={"workflow": "order", "execution_id": f"x{i}"})
                   for i in range(3)]
        scraped = await client.get("/metrics")
    assert [r.status_code for r in answers] == [202, 202, 202]  # accepted, hints to the relay
    assert metric(scraped.text, "flowrt_rate_limit_fail_open_total") == 3
    assert await pg.fetchval("SELECT count(*) FROM executions") == 3
