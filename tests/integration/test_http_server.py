"""The API's HTTP server (`flowrt api`, a real subprocess): limits that hold before a
request reaches the application, answered as problem+json."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.conftest import free_port
from tests.support.procs import settings_env, start_api, wait_http

LIMIT = 2048


@pytest.fixture
async def api(settings, tmp_path) -> AsyncIterator[int]:
    port = free_port()
    s = replace(settings, port=port, header_limit=LIMIT)
    proc = start_api(settings_env(s), tmp_path)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", proc)
        yield port
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes or we read one reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return status, headers, body
    finally:
        writer.close()


def _request(path: str = "/v1/executions", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _assert_problem(status: int, headers: dict[str, str], body: bytes, expected: int,
                    slug: str) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["type"] == f"https://flowrt.dev/problems/{slug}"
    assert problem["status"] == expected and problem["title"] and problem["detail"]


async def test_headers_under_the_limit_reach_the_app(api):
    status, headers, body = await _exchange(api, _request(headers={"X-Pad": "a" * 1500}))
    _assert_problem(status, headers, body, 401, "unauthorized")  # the app answered


@pytest.mark.parametrize("shape", ["one-big-header", "many-headers", "long-url"])
async def test_headers_over_the_limit_get_431_before_the_app(api, shape):
    if shape == "one-big-header":
        raw = _request(headers={"X-Pad": "a" * 3000})
    elif shape == "many-headers":
        raw = _request(headers={f"X-Pad-{i}": "a" * 50 for i in range(60)})
    else:
        raw = _request(path="/v1/executions?x=" + "a" * 3000)
    status, headers, body = await _exchange(api, raw)
    _assert_problem(status, headers, body, 431, "headers-too-large")
    assert headers["connection"] == "close"


async def test_an_unfinished_header_is_refused_once_past_the_limit(api):
    """A header whose line never ends (httptools would hold it whole): the server answers
    431 and closes while the client is still sending it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api)
    try:
        writer.write(b"GET /v1/executions HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        for _ in range(3):
            writer.write(b"a" * 1000)
            await writer.drain()
            await asyncio.sleep(0.05)  # separate reads on the server
        head = await asyncio.wait_for(reader.read(200), 10)
        assert head.startswith(b"HTTP/1.1 431 "), head
        assert await asyncio.wait_for(reader.read(), 10) is not None  # then closed
    finally:
        writer.close()


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /v1/executions HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["garbage", "bad-version", "space-in-name", "negative-length", "bad-chunk"])
async def test_malformed_http_gets_a_problem_400(api, raw):
    status, headers, body = await _exchange(api, raw)
    _assert_problem(status, headers, body, 400, "malformed-request")
