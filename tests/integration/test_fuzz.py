"""schemathesis against the live API: ``flowrt api`` as a subprocess on real PostgreSQL
and Redis, fuzzed from the ``/openapi.json`` it serves.

With an admin key, every operation gets the document's examples, schemathesis's
coverage cases (the boundaries and violations of every constraint, missing and bad
credentials, unsupported methods) and a few random cases, valid and invalid. No
response may be a 5xx; each must have a status, content type, headers and body the
document declares for it; each error must be problem+json. Without a key, every /v1
operation must answer 401 problem+json.

Bounded: a few random cases per operation, a fixed seed (CI sends the same requests
on every run, so a failure reproduces), a deadline per case and a timeout per test.
A failure names the operation and prints a curl command that reproduces it.
(schemathesis leaves out ``GET /openapi.json``, the operation that served the document;
tests/integration/test_openapi.py covers it.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings as hypothesis_settings

from flowrt.settings import Settings
from tests.conftest import free_port
from tests.support.api import register_demo
from tests.support.keys import bearer, issue_key
from tests.support.procs import settings_env, start_api, wait_http

pytestmark = pytest.mark.timeout(120)

PROBLEM = "application/problem+json"
SEED = 20251122
EXAMPLE_ID = "order-1001"  # the execution the document's examples name
# A case that takes seconds against a local API is a finding, not noise to wait out.
BOUNDS = hypothesis_settings(deadline=timedelta(seconds=5))


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    key: str


@pytest.fixture(autouse=True)
def _lazy_schema_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's from_fixture() reads (and rewrites, to name the operation)
    # Node._nodeid, which pytest 9.2 no longer has. Give it one; each operation is
    # still reported under its own name as a subtest.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def live_api(settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    """The API as a real process, the demo workflows registered, an admin key, and the
    execution the document's examples name (so that they reach the 200s and 202s)."""
    # No rate limit: the fuzzer sends hundreds of requests a second, and 429s would
    # only keep it from the code behind the limiter (tests/integration/test_limits.py
    # covers the limit itself).
    s = replace(settings, port=free_port(), rate_limit=0.0)
    asyncio.run(register_demo(s))
    key = asyncio.run(issue_key(s.database_url, s.tenant, "admin"))
    api = start_api(settings_env(s), tmp_path)
    base_url = f"http://127.0.0.1:{s.port}"
    try:
        wait_http(f"{base_url}/readyz", api)
        r = httpx.post(f"{base_url}/v1/executions", headers=bearer(key),
                       json={"workflow": "order", "execution_id": EXAMPLE_ID})
        assert r.status_code == 202, r.text
        yield LiveApi(base_url, key)
    finally:
        assert api.terminate() == 0, api.output()[-3000:]
    # A 500 is also logged, with its traceback: show it.
    assert "unexpected error" not in api.output(), api.output()[-5000:]


def _config(key: str | None, **generation: Any) -> schemathesis.Config:
    data: dict[str, Any] = {
        "seed": SEED,
        "request-timeout": 10,
        # `database = "none"`: no Hypothesis example database, so no run replays
        # another's cases and nothing is written under .hypothesis/.
        "generation": {"database": "none", **generation},
        # What this suite asserts, and no more: the document is the contract
        # (problem+json errors are checked by `problem_details` below).
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
        },
    }
    if key is not None:
        data["auth"] = {"openapi": {"bearer": {"bearer": key}}}
    return schemathesis.Config.from_dict(data)


@pytest.fixture
def api_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json",
                                         config=_config(live_api.key, **{"max-examples": 25}))


@pytest.fixture
def anonymous_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    # Valid requests only, and no Authorization header at all (not even a generated one).
    return schemathesis.openapi.from_url(
        f"{live_api.base_url}/openapi.json",
        config=_config(None, mode="positive",
                       **{"max-examples": 5, "with-security-parameters": False}))


def problem_details(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                    case: schemathesis.Case) -> bool:
    """Every 4xx and 5xx is an RFC 9457 document: problem+json with type, title, status."""
    if response.status_code < 400:
        return True
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype == PROBLEM, f"a {response.status_code} sent as {ctype!r}"
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert body.get("status") == response.status_code, body
    return True


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@BOUNDS
def test_live_api_conforms_to_its_document(case: schemathesis.Case) -> None:
    case.call_and_validate(additional_checks=[problem_details])


anonymous = schemathesis.pytest.from_fixture("anonymous_schema").include(path_regex="^/v1/")


@anonymous.parametrize()
@BOUNDS
def test_every_v1_operation_needs_a_key(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == [PROBLEM]
    assert response.headers["www-authenticate"] == ['Bearer realm="flowrt"']
    body = response.json()
    assert body["type"] == "https://flowrt.dev/problems/unauthorized"
    assert body["status"] == 401
