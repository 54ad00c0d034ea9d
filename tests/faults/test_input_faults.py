"""Faults that come with the input: duplicate hints and requests, poison events.

Scenarios 8 and 9 of the reliability issue (docs/guarantees.md has the table).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.faults.checks import check
from tests.faults.harness import TENANT, Stack, eventually

# 8 ------------------------------------------------------------------------------------


async def test_duplicate_hints_and_concurrent_retries(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, stack.client() as client:
        ids = [f"d{i}" for i in range(10)]
        await client.load(ids, 5, concurrency=8)
        await stack.wait_drained(30)
        conn = await stack.pg()
        try:
            calls_before = await conn.fetchval("SELECT sum(calls) FROM fault_attempts")
            processed_before = dict(await conn.fetch(
                "SELECT execution_id || ':' || seq, processed_at::text FROM event_processing"))
        finally:
            await conn.close()

        # Duplicate hints for events that are already processed: 20 per execution.
        redis = stack.redis()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for x in ids:
                    for seq in range(1, 7):
                        for _ in range(20 // 6 + 1):
                            pipe.xadd(stack.keys.stream, {"t": TENANT, "x": x, "s": seq})
                await pipe.execute()
        finally:
            await redis.aclose()
        injected = len(ids) * 6 * (20 // 6 + 1)

        # The same Idempotency-Key 20 times at once, and the same start 20 times.
        same_key = await asyncio.gather(*(client.send("d0", "twenty", {"name": "item"})
                                          for _ in range(20)))
        same_start = await asyncio.gather(*(client.start("d-new") for _ in range(20)))
        for group in (same_key, same_start):
            assert {t.status for t in group} == {202}, [t.status for t in group]
            assert len({t.answer["event_id"] for t in group if t.answer}) == 1
            created = [t for t in group if t.headers.get("idempotent-replayed") != "true"]
            assert len(created) == 1, len(created)

        await stack.wait_drained(30)

        async def hints_consumed() -> bool:
            redis = stack.redis()
            try:
                return await redis.xlen(stack.keys.stream) == 0
            finally:
                await redis.aclose()

        await eventually(hints_consumed, 20, "duplicate hints not consumed")
        figures = await check(stack, client.ledger)
        conn = await stack.pg()
        try:
            # Nothing ran again and nothing was reprocessed because of the duplicates.
            calls_after = await conn.fetchval("SELECT sum(calls) FROM fault_attempts")
            processed_after = dict(await conn.fetch(
                "SELECT execution_id || ':' || seq, processed_at::text FROM event_processing"))
        finally:
            await conn.close()
        assert calls_after == calls_before + 1  # the one new event, d0/twenty
        assert {k: v for k, v in processed_after.items() if k in processed_before} \
            == processed_before
        report(**figures, duplicate_hints=injected, concurrent_same_key=len(same_key),
               created_of_20=1)


# 9 ------------------------------------------------------------------------------------


async def test_poison_events(tmp_path, report):
    async with Stack(tmp_path, workers=2, max_deliveries=3) as stack, \
            stack.client() as client:
        healthy = [f"ok{i}" for i in range(10)]
        await client.load(["fails", "guard", "pill", *healthy], 0, concurrency=8)
        load = asyncio.create_task(client.load(healthy, 20, concurrency=4, start=False))

        # (a) an action that always raises: bounded retries, then the execution fails
        fails = await client.send("fails", "bad", {"name": "item", "payload": {"fail": True}})
        # (b) a guard that errors on this payload (a string is not > 10)
        guard = await client.send("guard", "bad", {"name": "check",
                                                   "payload": {"amount": "lots"}})
        after_guard = await client.send("guard", "after", {"name": "item"})
        # (c) a poison pill: the action kills the worker that runs it, every time
        pill = await client.send("pill", "bad", {"name": "item", "payload": {"crash": True}})
        behind_pill = await client.send("pill", "behind", {"name": "item"})
        assert all(t.status == 202 for t in (fails, guard, after_guard, pill, behind_pill))

        restarts = 0
        started = time.monotonic()
        conn = await stack.pg()
        try:
            async def pill_dead() -> bool:
                nonlocal restarts
                restarts += stack.replace_dead_workers()
                return bool(await conn.fetchval(
                    "SELECT blocked_seq IS NOT NULL FROM executions WHERE execution_id = 'pill'"))

            await eventually(pill_dead, 120, "the poison pill was never dead-lettered")
            dead_after = time.monotonic() - started
            restarts += stack.replace_dead_workers()
            stack.wait_ready()
            await load
            await stack.wait_drained(60)

            # (a) tried 3 times (the action's RetryPolicy), with back-off, then failed
            row = await conn.fetchrow(
                "SELECT p.status, p.error, p.actions::text AS actions, x.status AS xstatus"
                " FROM event_processing p JOIN executions x USING (tenant_id, execution_id)"
                " WHERE p.execution_id = 'fails' AND p.seq = $1", fails.answer["seq"])
            assert row["status"] == "failed" and row["xstatus"] == "failed", dict(row)
            [record] = json.loads(row["actions"])
            assert record["attempts"] == 3 and "always fails" in record["error"], record
            # more calls than 3 only if a crash of the pill interrupted one of them
            calls = await conn.fetchval("SELECT calls FROM fault_attempts WHERE key = $1",
                                        f"{TENANT}:fails:{fails.answer['seq']}:effect")
            assert calls >= 3, calls
            # (b) the guard's error is recorded; the event was not taken; later ones are
            row = await conn.fetchrow(
                "SELECT status, error FROM event_processing WHERE execution_id = 'guard'"
                " AND seq = $1", guard.answer["seq"])
            assert row["status"] == "ignored", dict(row)
            async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth) as http:
                events = (await http.get("/v1/executions/guard/events")).json()["events"]
                shown = next(e for e in events if e["seq"] == guard.answer["seq"])
                pill_view = (await http.get("/v1/executions/pill")).json()
            assert "lots" in str(shown) or "no such overload" in str(shown).lower() \
                or "error" in str(shown), shown
            assert await conn.fetchval(
                "SELECT status FROM event_processing WHERE execution_id = 'guard' AND seq = $1",
                after_guard.answer["seq"]) == "completed"
            # (c) dead-lettered after max_deliveries attempts; the execution shows it is
            # blocked and the event behind it waits, never processed out of order
            assert pill_view["blocked_seq"] == pill.answer["seq"], pill_view
            assert pill_view["processed_seq"] == pill.answer["seq"] - 1, pill_view
            status = dict(await conn.fetch(
                "SELECT seq, status FROM event_processing WHERE execution_id = 'pill'"))
            assert status[pill.answer["seq"]] == "dead"
            assert status[behind_pill.answer["seq"]] == "pending"
            attempts = await conn.fetchval(
                "SELECT attempts FROM event_processing WHERE execution_id = 'pill' AND seq = $1",
                pill.answer["seq"])
            assert attempts >= stack.settings.max_deliveries
        finally:
            await conn.close()
        redis = stack.redis()
        try:
            dead_letters = await redis.xrange(stack.keys.dead)
        finally:
            await redis.aclose()
        assert [e[1]["x"] for e in dead_letters] == ["pill"], dead_letters
        figures = await check(stack, client.ledger, blocked={"pill"}, failed={"fails"})
        # the operator's view: one dead event, in the pill's execution
        code, out = await stack.doctor("--json")
        assert code == 1, out
        doc = json.loads(out)
        assert doc["problems"] == ["dead_events"], doc
        dead = doc["postgres"]["dead_events"]["examples"]
        assert [d["execution_id"] for d in dead] == ["pill"], doc
        report(**figures, worker_crashes=restarts, pill_attempts=attempts,
               dead_lettered_after_s=round(dead_after, 1), failing_action_calls=calls)
