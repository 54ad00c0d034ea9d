"""Wire: one Redis connection shared by concurrent callers, replies handed back in order,
errors as redis-py's classes, reconnects, and a bound on every call."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc

from flowrt.bus.wire import Wire
from flowrt.errors import SettingsError
from flowrt.settings import load_settings
from tests.support.servers import private_redis

from .conftest import closed_port


@pytest.fixture
async def wire(redis_server_url: str) -> Wire:
    w = Wire(redis_server_url, timeout=3.0)
    w.start()
    yield w
    w.close()


async def test_concurrent_callers_each_get_their_own_reply(wire: Wire) -> None:
    got = await asyncio.gather(*(wire.call("ECHO", f"m{i}") for i in range(300)))
    assert got == [f"m{i}" for i in range(300)]
    assert await wire.call("ECHO", 7) == "7"  # ints and floats are sent as text
    assert await wire.call("ECHO", 1.5) == "1.5"


async def test_a_pipeline_answers_in_order_with_errors_in_place(wire: Wire,
                                                                redis_prefix: str) -> None:
    key = f"{redis_prefix}:w"
    replies = await wire.pipeline([("SET", key, "a"), ("LPUSH", key, "x"), ("GET", key),
                                   ("PEXPIRE", key, 10_000)])
    assert replies[0] == "OK"
    assert isinstance(replies[1], rexc.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2:] == ["a", 1]
    assert await wire.pipeline([]) == []


async def test_error_replies_raise_redis_py_classes(wire: Wire, redis_prefix: str) -> None:
    await wire.call("SET", f"{redis_prefix}:s", "a", "PX", 10_000)
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        await wire.call("LPUSH", f"{redis_prefix}:s", "x")
    with pytest.raises(rexc.NoScriptError):
        await wire.call("EVALSHA", "0" * 40, 0)
    with pytest.raises(rexc.ResponseError, match="NOGROUP"):
        await wire.call("XREADGROUP", "GROUP", "nogroup", "c", "COUNT", 1, "STREAMS",
                        f"{redis_prefix}:nostream", ">")
    assert await wire.call("PING") == "PONG"  # still in step after errors


async def test_a_caller_that_gives_up_leaves_the_connection_in_step(wire: Wire,
                                                                    redis_prefix: str) -> None:
    # BLPOP holds the connection 0.3 s; its caller is cancelled before the reply
    slow = asyncio.ensure_future(wire.call("BLPOP", f"{redis_prefix}:empty", 0.3))
    await asyncio.sleep(0.05)
    slow.cancel()
    after = await wire.call("ECHO", "mine")  # answered after BLPOP's nil, which is dropped
    assert after == "mine"
    assert slow.cancelled()


async def test_a_connection_the_server_closed_is_made_again(wire: Wire,
                                                            redis_server_url: str) -> None:
    first = await wire.call("CLIENT", "ID")
    admin = aioredis.from_url(redis_server_url)
    try:
        await admin.client_kill_filter(_id=first)
    finally:
        await admin.aclose()
    # whether the loss is seen before this call is written or after (then it is sent
    # once more on a new connection), the call is answered
    assert await wire.call("PING") == "PONG"
    assert await wire.call("CLIENT", "ID") != first


async def test_a_closed_port_fails_fast_with_a_connection_error() -> None:
    w = Wire(f"redis://127.0.0.1:{closed_port()}/0", timeout=3.0)
    w.start()
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await w.call("PING")
    assert time.monotonic() - started < 2


async def test_a_stalled_server_times_out_and_the_wire_recovers(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        w = Wire(server.url, timeout=0.5)
        w.start()
        assert await w.call("PING") == "PONG"
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            calls = [asyncio.ensure_future(w.call("PING")) for _ in range(3)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            waited = time.monotonic() - started
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # the first to time out closes the connection, so the others fail with it
        assert all(isinstance(r, (TimeoutError, ConnectionError)) for r in results), results
        assert any(isinstance(r, TimeoutError) for r in results)
        assert waited < 2.5
        assert await w.call("PING") == "PONG"  # a new connection, in step again
        w.close()


async def test_the_url_password_and_database_are_used(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        admin = aioredis.from_url(server.url)
        try:
            await admin.config_set("requirepass", "s3cret")
            base = f"redis://:s3cret@127.0.0.1:{server.port}"
            w = Wire(f"{base}/3", timeout=3.0)
            w.start()
            assert await w.call("SET", "k", "in-db-3") == "OK"
            w.close()
            db3 = aioredis.from_url(f"{base}/3", decode_responses=True)
            db0 = aioredis.from_url(f"{base}/0", decode_responses=True)
            try:
                assert await db3.get("k") == "in-db-3"
                assert await db0.get("k") is None
            finally:
                await db3.aclose()
                await db0.aclose()
            wrong = Wire(f"redis://:nope@127.0.0.1:{server.port}/0", timeout=3.0)
            wrong.start()
            with pytest.raises(rexc.AuthenticationError):
                await wrong.call("PING")
            anonymous = Wire(f"redis://127.0.0.1:{server.port}/0", timeout=3.0)
            anonymous.start()
            with pytest.raises(rexc.AuthenticationError):  # NOAUTH
                await anonymous.call("PING")
            anonymous.close()
        finally:
            await admin.aclose()


def test_url_options_it_cannot_honour_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not supported: socket_keepalive"):
        Wire("redis://127.0.0.1:6379/0?socket_keepalive=true", timeout=1.0).start()
    with pytest.raises(ValueError, match="socket path"):
        Wire("unix://", timeout=1.0).start()
    Wire("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none", timeout=1.0).start()  # no I/O


async def test_a_call_before_start_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await Wire("redis://127.0.0.1:6379/0", timeout=1.0).call("PING")


def test_settings_refuse_redis_url_options_no_connection_honours() -> None:
    with pytest.raises(SettingsError, match=r"FLOWRT_REDIS_URL: option.* socket_keepalive"):
        load_settings({"FLOWRT_REDIS_URL": "redis://cache:6379/0?socket_keepalive=true"})
    ok = load_settings({"FLOWRT_REDIS_URL": "rediss://cache:6380/?db=2&ssl_cert_reqs=none"})
    Wire(ok.redis_url, timeout=1.0).start()  # what Settings lets through, a Wire takes


async def test_a_closed_wire_fails_its_calls_and_does_not_connect_again(
        redis_server_url: str, redis_prefix: str) -> None:
    w = Wire(redis_server_url, timeout=3.0)
    w.start()
    pending = asyncio.ensure_future(w.call("BLPOP", f"{redis_prefix}:never", 2))
    await asyncio.sleep(0.05)
    w.close()
    with pytest.raises(ConnectionError):
        await pending
    with pytest.raises(ConnectionError, match="closed"):
        await w.call("PING")
