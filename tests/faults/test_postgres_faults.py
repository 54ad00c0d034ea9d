"""PostgreSQL faults: stopped and restarted under load; a connection cut during COMMIT.

Scenarios 6 and 7 of the reliability issue (docs/guarantees.md has the table).
"""

from __future__ import annotations

import asyncio
import time

from tests.faults.checks import check
from tests.faults.harness import Client, Stack, eventually
from tests.faults.proxy import CuttingProxy

# 6 ------------------------------------------------------------------------------------


async def test_postgres_stopped_and_restarted_under_load(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, \
            stack.client(give_up=90) as client:
        pids = {p.name: p.pid for p, _ in stack.workers.values()}
        assert stack.api is not None
        pids["api"] = stack.api.pid
        load = asyncio.create_task(client.load([f"x{i}" for i in range(20)], 20, concurrency=8))
        await eventually(lambda: _tries_at_least(client, 100), 30, "load did not start")

        stack.pg_server.stop(mode="immediate")  # pg_ctl stop -m immediate: no checkpoint
        down = time.monotonic()
        await asyncio.sleep(3.0)
        outage = time.monotonic() - down
        stack.pg_server.start()  # crash recovery, then accepting again
        back = time.monotonic()

        await load
        recovery = await stack.wait_drained(60)
        figures = await check(stack, client.ledger)
        statuses = client.ledger.statuses()
        assert statuses[503] >= 1, f"no 503 while PostgreSQL was down: {statuses}"
        assert None not in statuses, "the API stopped answering"
        # every client ended with exactly one event per key (check() holds the ledger
        # to that), and no process was restarted: the pools reconnected by themselves
        now = {p.name: p.pid for p, _ in stack.workers.values()}
        now["api"] = stack.api.pid
        assert now == pids
        assert all(p.alive() for p, _ in stack.workers.values()) and stack.api.alive()
        retried = sum(1 for t in client.ledger.finals().values()
                      if t.headers.get("idempotent-replayed") == "true")
        report(**figures, outage_s=round(outage, 1), answered_503=statuses[503],
               replayed_after_retry=retried,
               recovery_after_restart_s=round(time.monotonic() - back, 1),
               drain_wait_s=round(recovery, 1))


async def _tries_at_least(client: Client, n: int) -> bool:
    return len(client.ledger.tries) >= n


# 7 ------------------------------------------------------------------------------------


async def test_connection_cut_during_commit(tmp_path, report):
    async with Stack(tmp_path, workers=1) as stack, \
            CuttingProxy(stack.pg_server.port) as proxy, \
            stack.client() as client:
        proxied = stack.pg_server.url.replace(f":{stack.pg_server.port}/", f":{proxy.port}/")
        # One pooled connection, so the armed cut falls on the request under test.
        stack.restart_api(FLOWRT_DATABASE_URL=proxied, FLOWRT_DB_POOL_MAX="1")
        await client.start("cut")
        for n in range(3):  # warm the connection: statements prepared, types known
            assert (await client.send("cut", f"warm-{n}", {"name": "item"})).status == 202
        conn = await stack.pg()
        try:
            # (a) cut after the server committed: its reply never arrives. The reply
            # to flowrt_append_event carries its outcome, 'appended', and is flushed
            # with ReadyForQuery, after the implicit transaction committed.
            proxy.cut_reply_containing(b"appended")
            first = await client.send("cut", "committed", {"name": "item"}, retry=False)
            assert first.status == 503, first
            assert first.answer and first.answer["type"].endswith("/unavailable"), first
            assert await conn.fetchval("SELECT count(*) FROM events WHERE idempotency_key ="
                                       " 'committed'") == 1, "the cut came before the commit"
            again = await client.send("cut", "committed", {"name": "item"})
            assert again.status == 202, again
            assert again.headers.get("idempotent-replayed") == "true", again.headers
            assert again.answer is not None
            committed_seq = again.answer["seq"]

            # (b) cut before the statement reached the server: nothing committed
            # (the key travels as a parameter of the append: that request, and no
            # other, such as the batched update of published marks, is cut)
            proxy.cut_request_containing(b"lost-7f3a")
            first = await client.send("cut", "lost-7f3a", {"name": "item"}, retry=False)
            assert first.status == 503, first
            assert await conn.fetchval(
                "SELECT count(*) FROM events WHERE idempotency_key = 'lost-7f3a'") == 0
            again = await client.send("cut", "lost-7f3a", {"name": "item"})
            assert again.status == 202, again
            assert "idempotent-replayed" not in again.headers, again.headers
            assert again.answer is not None and again.answer["seq"] == committed_seq + 1
            assert proxy.cuts == 2
        finally:
            await conn.close()

        await stack.wait_drained(30)
        figures = await check(stack, client.ledger)
        report(**figures, cuts=proxy.cuts)
