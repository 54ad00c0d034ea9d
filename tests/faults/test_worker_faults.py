"""Worker faults: kill -9, SIGSTOP past the lock TTL, a backlog, consumer churn.

Scenarios 1, 2, 10 and 11 of the reliability issue (docs/guarantees.md has the table).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import asyncpg
import httpx

from flowrt.bus.keys import GROUP
from tests.faults.checks import check
from tests.faults.harness import TENANT, Stack, eventually, metric
from tests.support.procs import Proc


def effect_key(x: str, seq: int) -> str:
    return f"{TENANT}:{x}:{seq}:effect"


async def _holder(conn: asyncpg.Connection, stack: Stack, x: str, seq: int,
                  action_started: bool = True) -> Proc:
    """The worker processing ``x``/``seq`` once its action has started."""

    async def seen() -> bool:
        row = await conn.fetchrow("SELECT worker FROM event_processing WHERE execution_id = $1"
                                  " AND seq = $2 AND status = 'processing'", x, seq)
        calls = await conn.fetchval("SELECT calls FROM fault_attempts WHERE key = $1",
                                    effect_key(x, seq))
        return row is not None and (calls is not None or not action_started)

    await eventually(seen, 15, f"{x}/{seq} never seen in an action")
    worker = await conn.fetchval("SELECT worker FROM event_processing WHERE execution_id = $1"
                                 " AND seq = $2", x, seq)
    return stack.worker_by_pid(int(worker.split("-")[-2]))


async def _pending_hint_seqs(stack: Stack, x: str) -> list[int]:
    """Seqs carried by hints for ``x`` that were delivered and not acked."""
    client = stack.redis()
    try:
        rows = await client.xpending_range(stack.keys.stream, GROUP, "-", "+", 1000)
        seqs = []
        for row in rows:
            for _mid, fields in await client.xrange(stack.keys.stream, row["message_id"],
                                                    row["message_id"]):
                if fields.get("x") == x:
                    seqs.append(int(fields["s"]))
        return seqs
    finally:
        await client.aclose()


# 1 ------------------------------------------------------------------------------------


async def test_kill9_mid_action_and_after_commit_before_ack(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, \
            stack.client() as client:
        conn = await stack.pg()
        try:
            background = asyncio.create_task(
                client.load([f"bg-{i}" for i in range(20)], 10, concurrency=8))

            # (a) killed in the middle of an action
            await client.start("mid")
            sent = await client.send("mid", "mid-slow", {"name": "item",
                                                         "payload": {"sleep": 2.0}})
            mid_seq = sent.answer["seq"]
            victim = await _holder(conn, stack, "mid", mid_seq)
            stack.retire(victim)
            killed_at = time.monotonic()
            stack.start_worker()  # the supervisor's replacement, with a new name

            # (b) killed after the commit of one event, before its hint was acked: the
            # hint of "a" is acked only after the pass that also runs the slow "b"
            await client.start("acked-late")
            await client.send("acked-late", "a", {"name": "item"})
            b = await client.send("acked-late", "b", {"name": "item", "payload": {"sleep": 3.0}})
            b_seq = b.answer["seq"]
            a_seq = b_seq - 1
            victim = await _holder(conn, stack, "acked-late", b_seq)
            assert await conn.fetchval("SELECT status FROM event_processing WHERE"
                                       " execution_id = 'acked-late' AND seq = $1",
                                       a_seq) == "completed"
            pending = await _pending_hint_seqs(stack, "acked-late")
            stack.retire(victim)
            assert a_seq in pending or b_seq in pending, pending
            stack.start_worker()
            stack.wait_ready()

            await background
            recovery = await stack.wait_drained(60)
            recovery_total = time.monotonic() - killed_at
            figures = await check(stack, client.ledger)
            code, out = await stack.doctor()
            assert code == 0, out  # recovered: nothing stuck, no idle consumer with work

            calls = dict(await conn.fetch("SELECT key, calls FROM fault_attempts WHERE key"
                                          " = ANY($1::text[])",
                                          [effect_key("mid", mid_seq),
                                           effect_key("acked-late", a_seq),
                                           effect_key("acked-late", b_seq)]))
            # the killed actions ran again (at-least-once); the committed one did not
            assert calls[effect_key("mid", mid_seq)] == 2, calls
            assert calls[effect_key("acked-late", b_seq)] == 2, calls
            assert calls[effect_key("acked-late", a_seq)] == 1, calls
            reclaimed = stack.worker_metric("flowrt_messages_reclaimed_total")
            assert reclaimed >= 1
        finally:
            await conn.close()
        report(**figures, recovery_after_last_kill_s=round(recovery, 1),
               recovery_after_first_kill_s=round(recovery_total, 1),
               reclaimed=reclaimed)


# 2 ------------------------------------------------------------------------------------


async def test_sigstop_past_lock_ttl_is_fenced(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, \
            stack.client() as client:
        conn = await stack.pg()
        paused: Proc | None = None
        try:
            background = asyncio.create_task(
                client.load([f"bg-{i}" for i in range(10)], 10, concurrency=4))
            await client.start("frozen")
            slow = await client.send("frozen", "slow", {"name": "item",
                                                        "payload": {"sleep": 1.0}})
            seq = slow.answer["seq"]
            paused = await _holder(conn, stack, "frozen", seq)
            paused_port = next(port for p, port in stack.workers.values() if p is paused)
            os.kill(paused.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                await client.send("frozen", "after", {"name": "item"})

                async def taken_over() -> bool:
                    return bool(await conn.fetchval(
                        "SELECT processed_seq > $1 FROM executions"
                        " WHERE execution_id = 'frozen'", seq))

                await eventually(taken_over, 30, "nobody took over")
                took_over = time.monotonic() - stopped_at
                # the lock (TTL 2 s) kept the other worker out while it was valid
                assert took_over >= stack.settings.lock_ttl * 0.9, took_over
            finally:
                os.kill(paused.pid, signal.SIGCONT)

            # Woken up, the paused worker finishes its action and tries to commit.
            def lost() -> float:
                page = httpx.get(f"http://127.0.0.1:{paused_port}/metrics", timeout=5).text
                return metric(page, "flowrt_lease_lost_total")

            async def fenced() -> bool:
                return lost() >= 1

            await eventually(fenced, 20, "the paused worker's commit was not fenced")
            await background
            await stack.wait_drained(60)
            figures = await check(stack, client.ledger)
            calls = await conn.fetchval("SELECT calls FROM fault_attempts WHERE key = $1",
                                        effect_key("frozen", seq))
            assert calls == 2, calls  # run by both; applied once (check() saw one seq)
            assert all(p.alive() for p, _ in stack.workers.values())
        finally:
            if paused is not None and paused.alive():
                os.kill(paused.pid, signal.SIGCONT)
            await conn.close()
        report(**figures, takeover_after_stop_s=round(took_over, 1),
               fenced_commits=lost())


# 10 -----------------------------------------------------------------------------------


async def test_backlog_drains_and_a_second_worker_joins(tmp_path, report):
    async with Stack(tmp_path, workers=1) as stack, \
            stack.client() as client:
        ids = [f"b{i}" for i in range(200)]
        started = time.monotonic()
        # 200 starts + 4,800 items; each action takes 0.1 s, so one worker (16 at a
        # time) falls behind, and one execution's pass outlives the claim timeout
        # and one execution whose single pass (10 x 0.5 s) outlives the claim timeout
        await asyncio.gather(
            client.load(ids, 24, concurrency=15,
                        body=lambda _x, _n: {"name": "item", "payload": {"sleep": 0.1}}),
            client.load(["long"], 10, concurrency=1,
                        body=lambda _x, _n: {"name": "item", "payload": {"sleep": 0.5}}))
        ingested = time.monotonic() - started
        conn = await stack.pg()
        try:
            backlog = await conn.fetchval(
                "SELECT count(*) FROM event_processing WHERE status = 'pending'")
        finally:
            await conn.close()
        stack.start_worker()  # a second worker joins the backlog
        stack.wait_ready()
        drained = await stack.wait_drained(180)
        total = time.monotonic() - started
        # Every worker stayed alive and busy: nothing was reclaimed, no hint was
        # delivered twice (the lock keeper keeps the claims of live work fresh).
        reclaimed = stack.worker_metric("flowrt_messages_reclaimed_total")
        assert reclaimed == 0, reclaimed
        assert stack.sampler.max_deliveries <= 1, stack.sampler.max_deliveries
        figures = await check(stack, client.ledger)
        assert figures["events"] == 5000 + 11
        report(**figures, backlog_when_second_joined=backlog, ingest_s=round(ingested, 1),
               drained_after_join_s=round(drained, 1), total_s=round(total, 1),
               processed_per_s=round(5011 / total), reclaimed=reclaimed,
               max_pending=stack.sampler.max_pending)


# 11 -----------------------------------------------------------------------------------


async def test_consumer_churn(tmp_path, report):
    async with Stack(tmp_path, workers=2) as stack, \
            stack.client() as client:
        load = asyncio.create_task(client.load([f"c{i}" for i in range(40)], 25, concurrency=8))
        names: set[str] = set()
        for n in range(20):
            await asyncio.sleep(0.4)
            victim = next(iter(stack.workers.values()))[0]
            # alternate: a clean stop, then a crash
            stack.retire(victim, how="term" if n % 2 == 0 else "kill9")
            stack.start_worker()
            stack.wait_ready()  # a SIGTERM before its handlers exist would just kill it
        await load
        drained = await stack.wait_drained(90)
        figures = await check(stack, client.ledger)  # no pending hint was lost

        live = set()
        for proc, _port in stack.workers.values():
            for line in proc.output().splitlines():
                if '"worker started"' in line:
                    live.add(json.loads(line)["worker"])
        assert len(live) == len(stack.workers)
        for proc in stack.retired:
            for line in proc.output().splitlines():
                if '"worker started"' in line:
                    names.add(json.loads(line)["worker"])
        assert len(names) == 20

        redis = stack.redis()
        try:
            async def only_live_consumers() -> bool:
                consumers = await redis.xinfo_consumers(stack.keys.stream, GROUP)
                return {c["name"] for c in consumers} <= live

            # the crashed ones are pruned once idle for 3 claim timeouts (9 s here)
            pruned_after = await eventually(only_live_consumers, 30, "dead consumers remain")
            consumers = await redis.xinfo_consumers(stack.keys.stream, GROUP)
        finally:
            await redis.aclose()
        report(**figures, restarts=20, drain_wait_s=round(drained, 1),
               consumers_left=len(consumers), dead_consumers_gone_after_s=round(pruned_after, 1))
