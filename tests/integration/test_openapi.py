"""The OpenAPI document (``GET /openapi.json``): valid OpenAPI 3.1, one operation per
route and method, every problem type the source can answer with, and docs/api.md in
step with it. tests/integration/test_fuzz.py holds the running API to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from openapi_spec_validator import validate

from flowrt.api.openapi import PROBLEM_BASE, PROBLEM_TYPES, document
from flowrt.api.routes import ROUTES
from flowrt.settings import SETTINGS, Settings
from tests.support.api import api_client, register_demo

ROOT = Path(__file__).resolve().parents[2]
API_DOC = (ROOT / "docs" / "api.md").read_text()
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPEN = {"/healthz", "/readyz", "/openapi.json"}  # everything else needs a key


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS}


async def test_served_document_is_valid_openapi_3_1(settings: Settings) -> None:
    async with api_client(settings, key="") as client:  # open: no key
        r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    served = r.json()
    assert served == document()
    assert served["openapi"].startswith("3.1.")
    validate(served)  # the 3.1 meta-schema, and that every $ref and path parameter resolves
    schemathesis.openapi.from_dict(served).validate()  # what the fuzzer loads it with


def test_every_route_and_method_is_an_operation() -> None:
    routed = {(method, route.path) for route in ROUTES
              for method in (route.methods or ()) if method != "HEAD"}  # HEAD comes with GET
    assert set(_operations(document())) == routed


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for op in _operations(document()).values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("method", "path"), sorted(_operations(document())))
def test_security_and_error_responses(method: str, path: str) -> None:
    op = _operations(document())[(method, path)]
    responses = op["responses"]
    if path in OPEN:
        assert op["security"] == []
        assert "401" not in responses
    else:
        assert op["security"] == [{"bearer": []}]
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        assert "503" in responses  # the key is looked up in PostgreSQL
    assert any(code.startswith("2") for code in responses)
    for code, response in responses.items():
        if int(code) < 400:
            continue
        (media_type, content), = response["content"].items()
        assert media_type == "application/problem+json", (code, media_type)
        assert content["schema"]["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
        kinds = content["schema"]["allOf"][1]["properties"]["type"]["enum"]
        for kind in kinds:
            slug = kind.removeprefix(PROBLEM_BASE)
            assert PROBLEM_TYPES[slug].status == int(code), (code, slug)
            for header in PROBLEM_TYPES[slug].headers:
                assert header in response["headers"], (code, slug, header)
    for code in ("429", "503"):
        if code in responses:
            assert "Retry-After" in responses[code]["headers"]


async def test_query_ranges_are_the_ones_the_routes_check(settings: Settings) -> None:
    # The fuzzer sends the bounds the document gives; here a bound the document got
    # wrong (one a route would refuse, or one it would take past) shows as such.
    await register_demo(settings)
    async with api_client(settings) as client:
        r = await client.post("/v1/executions", json={"workflow": "order", "execution_id": "q"})
        assert r.status_code == 202, r.text
        for (method, path), op in _operations(document()).items():
            if method != "GET":
                continue
            url = path.replace("{execution_id}", "q")
            for param in op.get("parameters", []):
                schema = param["schema"]
                if param["in"] != "query" or schema.get("type") != "integer":
                    continue
                name, low, high = param["name"], schema["minimum"], schema["maximum"]
                for value, ok in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
                    r = await client.get(url, params={name: str(value)})
                    assert (r.status_code == 200) is ok, (path, name, value, r.text)
                    if not ok:
                        assert r.json()["type"] == PROBLEM_BASE + "invalid-query"
            for param in op.get("parameters", []):
                for value in param["schema"].get("enum", []):
                    r = await client.get(url, params={param["name"]: value})
                    assert r.status_code == 200, (path, param["name"], value, r.text)


# ------------------------------------------------------------ problem types in the code

_PROBLEM_CALL = re.compile(r'Problem\(\s*(\d{3}),\s*"([a-z-]+)",\s*"([^"]+)"')
_RAW_PROBLEM = re.compile(r'_raw_problem\(\s*(\d{3}),\s*"([^"]+)",\s*"([a-z-]+)"')
_SLUG_TITLE = re.compile(r'\("([a-z]+(?:-[a-z]+)*)",\s*"([A-Z][^"]*)"\)')  # handle_http's


def _problems_in_source() -> dict[str, tuple[int | None, str]]:
    found: dict[str, tuple[int | None, str]] = {}
    for path in sorted((ROOT / "flowrt" / "api").glob("*.py")):
        if path.name == "openapi.py":
            continue
        text = path.read_text()
        for status, slug, title in _PROBLEM_CALL.findall(text):
            found[slug] = (int(status), title)
        for status, title, slug in _RAW_PROBLEM.findall(text):
            found[slug] = (int(status), title)
        for slug, title in _SLUG_TITLE.findall(text):
            found.setdefault(slug, (None, title))
    return found


def test_problem_types_are_the_ones_the_source_raises() -> None:
    in_source = _problems_in_source()
    assert set(in_source) == set(PROBLEM_TYPES)
    for slug, (status, title) in in_source.items():
        assert PROBLEM_TYPES[slug].title == title, slug
        if status is not None:
            assert PROBLEM_TYPES[slug].status == status, slug


# ------------------------------------------------------------ docs/api.md


def test_docs_have_a_section_per_operation_and_no_other() -> None:
    headings = set(re.findall(r"^### ([A-Z]+) (/\S*)$", API_DOC, re.M))
    assert headings == set(_operations(document()))


def test_docs_list_every_problem_type_with_its_status_and_title() -> None:
    rows = {slug: (status, title) for slug, status, title in re.findall(
        r"^\| `([a-z-]+)` \| (\d{3}|any) \| ([^|]+) \|", API_DOC, re.M)}
    assert set(rows) == set(PROBLEM_TYPES)
    for slug, kind in PROBLEM_TYPES.items():
        assert rows[slug] == (str(kind.status) if kind.status else "any", kind.title), slug


def test_docs_list_the_request_limits_with_their_defaults() -> None:
    rows = dict(re.findall(r"^\| `(FLOWRT_[A-Z_]+)` \| `([^`]*)` \|", API_DOC, re.M))
    limits = ("body_limit", "header_limit", "max_json_depth", "max_object_keys",
              "max_string_length", "rate_limit", "rate_burst")
    defaults = Settings()
    assert rows == {SETTINGS[name][0]: str(getattr(defaults, name)) for name in limits}
