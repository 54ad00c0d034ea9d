"""Bad input never reaches the log: every case answers 4xx problem+json and appends nothing.

Each test starts from one execution ("ex-1", seq 1, one hint published) and checks
afterwards that the events and executions tables and the hint stream are unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from flowrt.settings import Settings
from tests.support.api import api_client, register_demo

PROBLEM = "application/problem+json"
START = "/v1/executions"
EVENT = "/v1/executions/ex-1/events"
JSON = {"content-type": "application/json"}
DEPTH = Settings().max_json_depth  # what the `settings` fixture uses too


@dataclass
class Env:
    client: httpx.AsyncClient
    pg: Any
    redis: Any
    settings: Settings

    async def counts(self) -> tuple[int, int, int, int]:
        return (
            int(await self.pg.fetchval("SELECT count(*) FROM events")),
            int(await self.pg.fetchval("SELECT count(*) FROM event_processing")),
            int(await self.pg.fetchval("SELECT count(*) FROM executions")),
            int(await self.redis.xlen(f"{self.settings.redis_prefix}:hints")),
        )

    async def assert_nothing_appended(self) -> None:
        assert await self.counts() == (1, 1, 1, 1)
        assert await self.pg.fetchval(
            "SELECT last_seq FROM executions WHERE execution_id = 'ex-1'") == 1


async def _env(settings: Settings, pg: Any, redis: Any) -> AsyncIterator[Env]:
    assert settings.max_json_depth == DEPTH
    await register_demo(settings)
    async with api_client(settings) as client:
        r = await client.post(START, json={"workflow": "order", "execution_id": "ex-1"})
        assert r.status_code == 202, r.text
        env = Env(client, pg, redis, settings)
        assert await env.counts() == (1, 1, 1, 1)
        yield env


@pytest.fixture
async def env(settings, pg, redis_client) -> AsyncIterator[Env]:
    async for e in _env(settings, pg, redis_client):
        yield e


@pytest.fixture
async def small_env(settings, pg, redis_client) -> AsyncIterator[Env]:
    """The same, with a 1000-byte body limit."""
    async for e in _env(replace(settings, body_limit=1000), pg, redis_client):
        yield e


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("https://flowrt.dev/problems/")
    if slug is not None:
        assert body["type"] == f"https://flowrt.dev/problems/{slug}", body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["instance"] == r.request.url.raw_path.split(b"?")[0].decode()
    return body


# A raw JSON value placed inside a valid body of either endpoint:
#   start: {"workflow": "order", "input": {"v": VALUE}}
#   event: {"name": "approve", "payload": {"v": VALUE}}
def wrap(url: str, value: bytes) -> bytes:
    if url == START:
        return b'{"workflow": "order", "input": {"v": ' + value + b"}}"
    return b'{"name": "approve", "payload": {"v": ' + value + b"}}"


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


BOTH = pytest.mark.parametrize("url", [START, EVENT], ids=["start", "event"])

BAD_VALUES = {
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus-infinity": b"-Infinity",
    "1e999": b"1e999",
    "minus-1e999": b"-1e999",
    "nul-in-value": b'"a\\u0000b"',
    "nul-in-key": b'{"k\\u0000": 1}',
    "raw-nul-byte": b'"a\x00b"',
    "lone-high-surrogate": b'"\\ud800"',
    "lone-low-surrogate": b'"x\\udc00y"',
    "lone-surrogate-in-key": b'{"\\ud800": 1}',
    "int-2^63": b"9223372036854775808",
    "int-2^64": b"18446744073709551616",
    "int-minus-2^63-1": b"-9223372036854775809",
    "int-huge-positive": b"1" + b"0" * 40,
    "int-huge-negative": b"-1" + b"0" * 40,
    "int-beyond-64-bits-in-list": b"[1, 2, 340282366920938463463374607431768211456]",
    "int-5000-digits": b"9" * 5000,
    "int-minus-5000-digits": b"-" + b"9" * 5000,
    "duplicate-key": b'{"a": 1, "a": 2}',
    "duplicate-key-nested": b'[{"b": {"a": 1, "a": 1}}]',
    "too-deep-lists": nested(DEPTH - 1),
    "too-deep-objects": b'{"a": ' * (DEPTH - 1) + b"1" + b"}" * (DEPTH - 1),
    "recursion-10000": nested(10_000),
    "recursion-100000": nested(100_000),
    "recursion-unclosed": b"[" * 100_000,
    "invalid-utf8-in-string": b'"\xff\xfe"',
    "invalid-utf8-overlong": b'"\xc0\xaf"',
    "invalid-utf8-encoded-surrogate": b'"\xed\xa0\x80"',
    "invalid-utf8-truncated-sequence": b'"\xe2\x82"',
}


@BOTH
@pytest.mark.parametrize("value", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
async def test_bad_json_value_is_400(env, url, value):
    r = await env.client.post(url, content=wrap(url, value), headers=JSON)
    assert_problem(r, 400, "malformed-body")
    await env.assert_nothing_appended()


BAD_SYNTAX = {
    "trailing-comma": b'{"name": "approve",}',
    "single-quotes": b"{'name': 'approve'}",
    "missing-colon": b'{"name" "approve"}',
    "unquoted-key": b'{name: "approve"}',
    "truncated-string": b'{"name": "appr',
    "truncated-object": b'{"name": "approve", "payload": {',
    "truncated-after-key": b'{"name"',
    "trailing-garbage": b'{"name": "approve"} x',
    "two-documents": b'{"name": "approve"}{"name": "approve"}',
    "comment": b'{"name": "approve" /* hi */}',
    "invalid-utf8-start": b"\xff\xfe{}",
    "invalid-utf8-key": b'{"na\xffme": "approve"}',
    "latin1-body": '{"name": "approve", "payload": {"x": "é"}}'.encode("latin-1"),
    "utf16-body": '{"name": "approve"}'.encode("utf-16"),
    "empty": b"",
    "whitespace-only": b"  \n\t ",
    "bare-word": b"approve",
    "duplicate-top-level-key": b'{"name": "approve", "name": "cancel"}',
}


@BOTH
@pytest.mark.parametrize("raw", list(BAD_SYNTAX.values()), ids=list(BAD_SYNTAX))
async def test_malformed_body_is_400(env, url, raw):
    r = await env.client.post(url, content=raw, headers=JSON)
    assert_problem(r, 400, "malformed-body")
    await env.assert_nothing_appended()


NOT_AN_OBJECT = {
    "array": b"[]",
    "array-of-object": b'[{"name": "approve", "workflow": "order"}]',
    "null": b"null",
    "string": b'"approve"',
    "number": b"1",
    "true": b"true",
}


@BOTH
@pytest.mark.parametrize("raw", list(NOT_AN_OBJECT.values()), ids=list(NOT_AN_OBJECT))
async def test_body_not_an_object_is_422(env, url, raw):
    r = await env.client.post(url, content=raw, headers=JSON)
    assert_problem(r, 422, "invalid-body")
    await env.assert_nothing_appended()


# --------------------------------------------------------------------------- media type

@BOTH
@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx",
                                   "text/json", "application/xml"])
async def test_unsupported_media_type_is_415(env, url, ctype):
    body = (b'{"workflow": "order"}' if url == START else b'{"name": "approve"}')
    headers = {} if ctype is None else {"content-type": ctype}
    r = await env.client.post(url, content=body, headers=headers)
    if ctype is None:
        assert "content-type" not in r.request.headers
    assert_problem(r, 415, "unsupported-media-type")
    assert r.headers["accept-post"] == "application/json"
    await env.assert_nothing_appended()


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON",
                                   "application/merge-patch+json"])
async def test_json_media_type_variants_are_accepted(env, ctype):
    r = await env.client.post(EVENT, content=b'{"name": "approve"}',
                              headers={"content-type": ctype})
    assert r.status_code == 202, r.text
    assert r.json()["seq"] == 2


# --------------------------------------------------------------------------- size

def _sized(url: str, size: int) -> bytes:
    head = wrap(url, b'"')
    body = head + b"x" * (size - len(head) - 3) + b'"}}'
    assert len(body) == size
    json.loads(body)
    return body


@BOTH
async def test_body_over_limit_with_content_length_is_413(small_env, url):
    body = _sized(url, 1001)
    r = await small_env.client.post(url, content=body, headers=JSON)
    assert r.request.headers["content-length"] == "1001"
    assert_problem(r, 413, "body-too-large")
    await small_env.assert_nothing_appended()


@BOTH
async def test_huge_body_with_content_length_is_413(small_env, url):
    r = await small_env.client.post(url, content=_sized(url, 5_000_000), headers=JSON)
    assert_problem(r, 413, "body-too-large")
    await small_env.assert_nothing_appended()


@BOTH
@pytest.mark.parametrize("chunk", [1, 100, 4096])
async def test_chunked_body_over_limit_is_413(small_env, url, chunk):
    body = _sized(url, 3000)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i:i + chunk]

    r = await small_env.client.post(url, content=stream(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413, "body-too-large")
    await small_env.assert_nothing_appended()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_exactly_at_limit_is_accepted(small_env, chunked):
    body = _sized(EVENT, 1000)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 64):
            yield body[i:i + 64]

    r = await small_env.client.post(EVENT, content=stream() if chunked else body, headers=JSON)
    assert r.status_code == 202, r.text
    assert r.json()["seq"] == 2


# --------------------------------------------------------------------------- boundaries

@BOTH
async def test_nesting_at_the_limit_and_64_bit_edges_are_accepted(env, url):
    value = (b'{"deep": ' + nested(DEPTH - 3) + b', "max": 9223372036854775807,'
             b' "min": -9223372036854775808, "small": 0.1, "neg": -2.5,'
             b' "text": "caf\xc3\xa9 \\u2603 \\ud83d\\ude00"}')
    r = await env.client.post(url, content=wrap(url, value), headers=JSON)
    assert r.status_code == 202, r.text
    stored = json.loads(await env.pg.fetchval(
        "SELECT payload FROM events WHERE execution_id = $1 AND seq = $2",
        r.json()["execution_id"], r.json()["seq"]))
    v = stored["input"]["v"] if url == START else stored["v"]
    assert v["max"] == 2**63 - 1 and v["min"] == -(2**63)
    assert v["small"] == 0.1
    assert v["neg"] == -2.5
    assert v["text"] == "café \u2603 \U0001f600"
    depth, item = 0, v["deep"]
    while isinstance(item, list):
        depth += 1
        item = item[0] if item else None
    assert depth == DEPTH - 3  # body 1, payload 2, value 3, lists 4..DEPTH


@pytest.mark.parametrize("number", [b"1e20", b"-1e19", b"1.5e300"])
async def test_floats_beyond_64_bit_integers_are_refused(env, number):
    # jsonb would keep 1e20 as the integer 100000000000000000000, which could not be
    # sent back: such numbers are refused at the door instead.
    r = await env.client.post(EVENT, content=wrap(EVENT, number), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "outside the range" in r.json()["detail"]


# --------------------------------------------------------------------------- event body shape

BAD_EVENTS = {
    "missing-name": ({"payload": {}}, 422, "invalid-body"),
    "name-number": ({"name": 1}, 422, "invalid-body"),
    "name-null": ({"name": None}, 422, "invalid-body"),
    "name-object": ({"name": {"x": "approve"}}, 422, "invalid-body"),
    "name-list": ({"name": ["approve"]}, 422, "invalid-body"),
    "name-bool": ({"name": True}, 422, "invalid-body"),
    "name-empty": ({"name": ""}, 422, "invalid-event-name"),
    "name-space": ({"name": "bad name"}, 422, "invalid-event-name"),
    "name-leading-digit": ({"name": "1approve"}, 422, "invalid-event-name"),
    "name-leading-dot": ({"name": ".approve"}, 422, "invalid-event-name"),
    "name-colon": ({"name": "a:b"}, 422, "invalid-event-name"),
    "name-129": ({"name": "a" * 129}, 422, "invalid-event-name"),
    "name-unicode": ({"name": "appröve"}, 422, "invalid-event-name"),
    "name-inner-newline": ({"name": "appr\nove"}, 422, "invalid-event-name"),
    "name-leading-newline": ({"name": "\napprove"}, 422, "invalid-event-name"),
    "reserved-started": ({"name": "flowrt.started"}, 422, "reserved-event-name"),
    "reserved-anything": ({"name": "flowrt.anything"}, 422, "reserved-event-name"),
    "reserved-prefix-only": ({"name": "flowrt."}, 422, "reserved-event-name"),
    "unknown-field": ({"name": "approve", "extra": 1}, 422, "invalid-body"),
    "unknown-field-seq": ({"name": "approve", "seq": 5}, 422, "invalid-body"),
    "payload-list": ({"name": "approve", "payload": [1]}, 422, "invalid-body"),
    "payload-string": ({"name": "approve", "payload": "x"}, 422, "invalid-body"),
    "payload-null": ({"name": "approve", "payload": None}, 422, "invalid-body"),
    "payload-number": ({"name": "approve", "payload": 3}, 422, "invalid-body"),
}


@pytest.mark.parametrize(("body", "status", "slug"), list(BAD_EVENTS.values()),
                         ids=list(BAD_EVENTS))
async def test_bad_event_body(env, body, status, slug):
    r = await env.client.post(EVENT, json=body)
    assert_problem(r, status, slug)
    await env.assert_nothing_appended()


@pytest.mark.parametrize("name", ["approve\n", "flowrt_x\n"])
async def test_event_name_with_trailing_newline_is_refused(env, name):
    r = await env.client.post(EVENT, json={"name": name})
    assert_problem(r, 422, "invalid-event-name")
    await env.assert_nothing_appended()


async def test_event_name_at_128_characters_is_accepted(env):
    r = await env.client.post(EVENT, json={"name": "_" + "a" * 127})
    assert r.status_code == 202, r.text


# --------------------------------------------------------------------------- start body shape

BAD_STARTS = {
    "missing-workflow": ({"input": {}}, 422, "invalid-body"),
    "workflow-number": ({"workflow": 1}, 422, "invalid-body"),
    "workflow-null": ({"workflow": None}, 422, "invalid-body"),
    "input-list": ({"workflow": "order", "input": [1]}, 422, "invalid-body"),
    "input-string": ({"workflow": "order", "input": "x"}, 422, "invalid-body"),
    "input-null": ({"workflow": "order", "input": None}, 422, "invalid-body"),
    "unknown-field": ({"workflow": "order", "inputs": {}}, 422, "invalid-body"),
    "version-zero": ({"workflow": "order", "version": 0}, 422, "invalid-body"),
    "version-negative": ({"workflow": "order", "version": -1}, 422, "invalid-body"),
    "version-string": ({"workflow": "order", "version": "1"}, 422, "invalid-body"),
    "version-float": ({"workflow": "order", "version": 1.5}, 422, "invalid-body"),
    "version-bool": ({"workflow": "order", "version": True}, 422, "invalid-body"),
    "execution-id-number": ({"workflow": "order", "execution_id": 7}, 422, "invalid-body"),
    "unknown-workflow": ({"workflow": "nope"}, 404, "not-found"),
    "unknown-workflow-empty": ({"workflow": ""}, 404, "not-found"),
    "unknown-version": ({"workflow": "order", "version": 7}, 404, "not-found"),
    "unknown-workflow-with-version": ({"workflow": "nope", "version": 1}, 404, "not-found"),
}


@pytest.mark.parametrize(("body", "status", "slug"), list(BAD_STARTS.values()),
                         ids=list(BAD_STARTS))
async def test_bad_start_body(env, body, status, slug):
    r = await env.client.post(START, json=body)
    assert_problem(r, status, slug)
    await env.assert_nothing_appended()


@pytest.mark.parametrize("version", [2**31, 2**62], ids=["2^31", "2^62"])
async def test_version_beyond_int32_is_a_client_error(env, version):
    r = await env.client.post(START, json={"workflow": "order", "version": version})
    assert r.status_code in (404, 422), r.text
    assert_problem(r, r.status_code)
    await env.assert_nothing_appended()


BAD_IDS = {
    "space": "bad id",
    "colon": "a:b",
    "200-chars": "x" * 200,
    "300-chars": "x" * 300,
    "encoded-dot-dot": "%2E%2E",
    "control-char": "a%01b",
    "tab": "a%09b",
    "129-chars": "x" * 129,
    "empty": "",
    "leading-dash": "-x",
    "leading-dot": ".x",
    "slash": "a/b",
    "unicode": "é",
    "newline": "a\nb",
    "nul": "a\u0000b",
}


@pytest.mark.parametrize("execution_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_malformed_execution_id_in_start_body_is_400(env, execution_id):
    r = await env.client.post(START, json={"workflow": "order", "execution_id": execution_id})
    status, slug = (400, "malformed-body") if "\x00" in execution_id else (
        400, "malformed-execution-id")
    assert_problem(r, status, slug)
    await env.assert_nothing_appended()


async def test_execution_id_with_trailing_newline_in_start_body_is_400(env):
    r = await env.client.post(START, json={"workflow": "order", "execution_id": "order-1\n"})
    assert_problem(r, 400, "malformed-execution-id")
    await env.assert_nothing_appended()


async def test_execution_id_of_128_characters_is_accepted(env):
    r = await env.client.post(START, json={"workflow": "order", "execution_id": "A" + "b" * 127})
    assert r.status_code == 202, r.text


# --------------------------------------------------------------------------- path ids

PATH_IDS = {
    "space": "bad%20id",
    "colon": "a:b",
    "200-chars": "x" * 200,
    "300-chars": "x" * 300,
    "encoded-dot-dot": "%2E%2E",
    "control-char": "a%01b",
    "tab": "a%09b",
    "129-chars": "x" * 129,
    "leading-dash": "-x",
    "leading-dot": ".x",
    "unicode": "%C3%A9",
    "nul": "a%00b",
    "percent-encoded-colon": "a%3Ab",
}
PATH_OPS = {
    "get": ("GET", "/v1/executions/{}"),
    "get-events": ("GET", "/v1/executions/{}/events"),
    "post-event": ("POST", "/v1/executions/{}/events"),
}


@pytest.mark.parametrize("op", list(PATH_OPS.values()), ids=list(PATH_OPS))
@pytest.mark.parametrize("execution_id", list(PATH_IDS.values()), ids=list(PATH_IDS))
async def test_malformed_execution_id_in_path_is_400(env, op, execution_id):
    method, template = op
    kwargs = {"json": {"name": "approve"}} if method == "POST" else {}
    r = await env.client.request(method, template.format(execution_id), **kwargs)
    assert_problem(r, 400, "malformed-execution-id")
    await env.assert_nothing_appended()


@pytest.mark.parametrize("op", list(PATH_OPS.values()), ids=list(PATH_OPS))
@pytest.mark.parametrize("execution_id", ["..", "..%2Fx", "..%2F..%2Fmetrics", "ex-1%2F..%2Fex-1"])
async def test_execution_id_with_an_encoded_slash_matches_no_route(env, op, execution_id):
    """A decoded '/' (or a '..' the client resolves) makes it another path, which no
    route serves: 404, nothing read."""
    method, template = op
    kwargs = {"json": {"name": "approve"}} if method == "POST" else {}
    r = await env.client.request(method, template.format(execution_id), **kwargs)
    assert_problem(r, 404, "not-found")
    await env.assert_nothing_appended()


@pytest.mark.parametrize("op", list(PATH_OPS.values()), ids=list(PATH_OPS))
async def test_execution_id_with_trailing_newline_in_path_is_400(env, op):
    method, template = op
    kwargs = {"json": {"name": "approve"}} if method == "POST" else {}
    r = await env.client.request(method, template.format("ex-1%0A"), **kwargs)
    assert_problem(r, 400, "malformed-execution-id")
    await env.assert_nothing_appended()


@pytest.mark.parametrize("op", list(PATH_OPS.values()), ids=list(PATH_OPS))
async def test_unknown_execution_is_404(env, op):
    method, template = op
    kwargs = {"json": {"name": "approve"}, "headers": {"Idempotency-Key": "k"}} \
        if method == "POST" else {}
    r = await env.client.request(method, template.format("no-such-execution"), **kwargs)
    body = assert_problem(r, 404, "not-found")
    assert "no-such-execution" in body["detail"]
    await env.assert_nothing_appended()


# --------------------------------------------------------------------------- Idempotency-Key

@pytest.mark.parametrize("key", ["", "k" * 256, "k" * 1000, "a\tb", "\x7f", "a\x01b"],
                         ids=["empty", "256", "1000", "tab", "del", "control"])
async def test_bad_idempotency_key_is_400(env, key):
    r = await env.client.post(EVENT, json={"name": "approve"}, headers={"Idempotency-Key": key})
    assert_problem(r, 400, "malformed-idempotency-key")
    await env.assert_nothing_appended()


# --------------------------------------------------------------------------- query parameters

BAD_QUERIES = [
    "/v1/executions?limit=0",
    "/v1/executions?limit=abc",
    "/v1/executions?limit=-1",
    "/v1/executions?limit=",
    "/v1/executions?limit=1.5",
    "/v1/executions?limit=501",
    "/v1/executions?limit=%201",
    "/v1/executions?limit=99999999999999999999999",
    "/v1/executions?status=bogus",
    "/v1/executions?status=RUNNING",
    "/v1/executions?status=",
    "/v1/executions?status=running&limit=0",
    "/v1/executions/ex-1/events?limit=0",
    "/v1/executions/ex-1/events?limit=1001",
    "/v1/executions/ex-1/events?limit=x",
    "/v1/executions/ex-1/events?after=-1",
    "/v1/executions/ex-1/events?after=x",
]


@pytest.mark.parametrize("url", BAD_QUERIES)
async def test_bad_query_parameter_is_400(env, url):
    r = await env.client.get(url)
    assert_problem(r, 400, "invalid-query")


def _cursor(created: str, execution_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, execution_id]).encode()).decode()


BUGGY_QUERIES = {
    # str.isdigit() accepts characters int() refuses (superscripts) ...
    "limit-superscript": "/v1/executions?limit=%C2%B2",
    "after-superscript": "/v1/executions/ex-1/events?after=%C2%B2",
    # ... and digit strings longer than Python's int conversion limit (4300 digits)
    "limit-5000-digits": "/v1/executions?limit=" + "1" * 5000,
    # a NUL reaches PostgreSQL, which refuses it (CharacterNotInRepertoireError)
    "workflow-nul": "/v1/executions?workflow=a%00b",
    "cursor-with-nul": "/v1/executions?cursor=" + _cursor("2030-01-01T00:00:00+00:00", "a\x00b"),
}


@pytest.mark.parametrize("url", list(BUGGY_QUERIES.values()), ids=list(BUGGY_QUERIES))
async def test_query_parameter_that_crashes_the_handler_is_400(env, url):
    r = await env.client.get(url)
    assert_problem(r, 400)


# --------------------------------------------------------------------------- routing

@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/nope"),
    ("GET", "/v1/execution"),
    ("GET", "/v2/executions"),
    ("POST", "/v1/executions/ex-1/events/extra"),
    ("GET", "/v1/executions/ex-1/events/2"),
])
async def test_unknown_route_is_404(env, method, url):
    kwargs = {"json": {"name": "approve", "workflow": "order"}} if method == "POST" else {}
    r = await env.client.request(method, url, **kwargs)
    assert_problem(r, 404, "not-found")
    await env.assert_nothing_appended()


@pytest.mark.parametrize(("method", "url", "allowed"), [
    ("DELETE", "/v1/executions", "POST"),
    ("PUT", "/v1/executions/ex-1", "GET"),
    ("DELETE", "/v1/executions/ex-1", "GET"),
    ("PATCH", "/v1/executions/ex-1/events", "POST"),
    ("POST", "/healthz", "GET"),
    ("POST", "/metrics", "GET"),
])
async def test_wrong_method_is_405(env, method, url, allowed):
    r = await env.client.request(method, url, content=b'{"name": "approve"}', headers=JSON)
    assert_problem(r, 405, "method-not-allowed")
    assert allowed in [m.strip() for m in r.headers["allow"].split(",")]
    await env.assert_nothing_appended()


@pytest.mark.parametrize("url", ["/v1/executions", "/v1/executions/ex-1/events"])
async def test_405_allow_header_lists_every_method(env, url):
    r = await env.client.request("DELETE", url)
    assert_problem(r, 405, "method-not-allowed")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


# --------------------------------------------------------------------------- payload limits

LIMITS = Settings()


def _keys(n: int) -> bytes:
    return b"{" + b", ".join(b'"k%d": 1' % i for i in range(n)) + b"}"


OVER_LIMITS = {
    "too-many-keys": _keys(LIMITS.max_object_keys + 1),
    "too-many-keys-nested": b"[" + _keys(LIMITS.max_object_keys + 1) + b"]",
    "string-too-long": b'"' + b"x" * (LIMITS.max_string_length + 1) + b'"',
    "key-too-long": b'{"' + b"k" * (LIMITS.max_string_length + 1) + b'": 1}',
    "multibyte-string-too-long": ('"' + "é" * (LIMITS.max_string_length + 1) + '"').encode(),
}


@BOTH
@pytest.mark.parametrize("value", list(OVER_LIMITS.values()), ids=list(OVER_LIMITS))
async def test_payload_over_a_limit_is_422(env, url, value):
    r = await env.client.post(url, content=wrap(url, value), headers=JSON)
    body = assert_problem(r, 422, "limit-exceeded")
    assert "more than" in body["detail"]
    await env.assert_nothing_appended()


@BOTH
async def test_payload_at_the_limits_is_accepted(env, url):
    at = b"[" + _keys(LIMITS.max_object_keys - 1) + b', "' + \
        b"x" * LIMITS.max_string_length + b'"]'
    r = await env.client.post(url, content=wrap(url, at), headers=JSON)
    assert r.status_code == 202, r.text
