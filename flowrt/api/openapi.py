"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

Bodies are msgspec's JSON Schema of the Structs the routes decode and encode
(``msgspec.json.schema_components``), with the few constraints the routes check by
hand added here. Parameters, status codes and problem types are written out beside
``PROBLEM_TYPES``, the list of every problem the API can answer with.

``tests/integration/test_openapi.py`` holds this module to the code: the document is
valid OpenAPI 3.1, names every route, lists every problem type the source raises,
and agrees with docs/api.md. ``tests/integration/test_fuzz.py`` holds the running
API to the document with schemathesis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import version as _pkg_version
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..events import EVENT_STATUSES, EXECUTION_STATUSES
from ..store.executions import EventView, ExecutionPage, ExecutionView
from .problems import PROBLEM_BASE
from .schemas import EVENT_NAME, EXECUTION_ID, Accepted, EventRequest, StartRequest

__all__ = ["PROBLEM_BASE", "PROBLEM_TYPES", "ProblemType", "document", "openapi"]

_MAX_AFTER = 2**62  # routes.list_events: the `after` bound


@dataclass(frozen=True)
class ProblemType:
    """One kind of problem: its status, its title, the headers it carries, when it happens."""

    status: int | None  # None: whatever status the framework raised (``http-error``)
    title: str
    when: str
    headers: tuple[str, ...] = ()


# Every ``type`` the API can answer with is PROBLEM_BASE + one of these slugs.
PROBLEM_TYPES: dict[str, ProblemType] = {
    "malformed-request": ProblemType(
        400, "Bad Request", "the request is not valid HTTP/1.1 (answered by the server"
        " before any route runs)"),
    "malformed-body": ProblemType(
        400, "Malformed Request Body", "the body is empty, not UTF-8, not JSON, nested deeper"
        " than FLOWRT_MAX_JSON_DEPTH, or holds a value the log cannot store faithfully (a NUL"
        " character, a lone surrogate, an integer beyond 64 bits); or Content-Length is not a"
        " number"),
    "malformed-execution-id": ProblemType(
        400, "Malformed Execution Id", "an execution id (in the path or the start body) is not"
        " 1-128 letters, digits, '_', '.' or '-' starting with a letter or digit"),
    "malformed-idempotency-key": ProblemType(
        400, "Malformed Idempotency-Key", "Idempotency-Key is not 1-255 printable characters"),
    "invalid-query": ProblemType(
        400, "Invalid Query Parameter", "a query parameter is out of its range or not one of"
        " its values"),
    "invalid-input": ProblemType(
        400, "Invalid Input", "a `cursor` that is not a `next_cursor` the API returned"),
    "unauthorized": ProblemType(
        401, "Unauthorized", "no API key, or a malformed, unknown or revoked one",
        ("WWW-Authenticate",)),
    "forbidden": ProblemType(
        403, "Forbidden", "the key's role is below what the route needs"),
    "not-found": ProblemType(
        404, "Not Found", "no such execution, workflow or workflow version for this tenant;"
        " or no such path"),
    "method-not-allowed": ProblemType(
        405, "Method Not Allowed", "the path exists but not with this method", ("Allow",)),
    "conflict": ProblemType(
        409, "Conflict", "a start names an execution id that already exists with another"
        " request"),
    "execution-finished": ProblemType(
        409, "Execution Finished", "the execution is completed, failed or cancelled and"
        " accepts no more events"),
    "body-too-large": ProblemType(
        413, "Content Too Large", "the body is larger than FLOWRT_BODY_LIMIT bytes"),
    "unsupported-media-type": ProblemType(
        415, "Unsupported Media Type", "the body is not sent as application/json (or"
        " application/*+json)", ("Accept-Post",)),
    "invalid-body": ProblemType(
        422, "Invalid Request Body", "the JSON does not have the body's shape: a missing or"
        " unknown field, a wrong type, a value out of range"),
    "limit-exceeded": ProblemType(
        422, "Limit Exceeded", "an object has more than FLOWRT_MAX_OBJECT_KEYS keys or a"
        " string more than FLOWRT_MAX_STRING_LENGTH characters"),
    "reserved-event-name": ProblemType(
        422, "Reserved Event Name", "the event name starts with 'flowrt.', which belongs to"
        " the runtime"),
    "invalid-event-name": ProblemType(
        422, "Invalid Event Name", "the event name is not 1-128 letters, digits, '_', '.' or"
        " '-' starting with a letter or '_'"),
    "idempotency-key-reused": ProblemType(
        422, "Idempotency Key Reused", "the Idempotency-Key was used before on this execution"
        " with a different body"),
    "rate-limited": ProblemType(
        429, "Too Many Requests", "the tenant is over its request rate (FLOWRT_RATE_LIMIT,"
        " FLOWRT_RATE_BURST, or the tenant's own)", ("Retry-After",)),
    "headers-too-large": ProblemType(
        431, "Request Header Fields Too Large", "the request line and headers are larger"
        " than FLOWRT_HEADER_LIMIT bytes (answered by the server before any route runs)"),
    "internal": ProblemType(
        500, "Internal Server Error", "a bug in flowrt; it is logged with its traceback"),
    "not-ready": ProblemType(
        503, "Not Ready", "PostgreSQL is unreachable (`checks` says which dependency)",
        ("Retry-After",)),
    "unavailable": ProblemType(
        503, "Service Unavailable", "PostgreSQL is unreachable or not migrated; retry with"
        " the same Idempotency-Key or execution_id", ("Retry-After",)),
    "http-error": ProblemType(
        None, "HTTP Error", "any other HTTP error the framework raises (none is known with"
        " the current routes)"),
}

# --------------------------------------------------------------------- shapes
# Bodies the routes build as dicts, described here; their docstrings are the
# schemas' descriptions (so Markdown, not reST).


class EventPage(msgspec.Struct, kw_only=True):
    """One page of an execution's log: pass `next_after` back as `after` for the next
    page; it is null when this page is not full (so the last)."""

    execution_id: str
    events: list[EventView]
    next_after: int | None


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, kw_only=True):
    """`degraded`: Redis is unreachable; events are still accepted, and published later."""

    status: Literal["ready", "degraded"]
    checks: dict[str, Literal["ok", "unreachable"]]


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document; other members may follow (`checks` on not-ready)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    checks: dict[str, Literal["ok", "unreachable"]] | None = None


_STRUCTS = (StartRequest, EventRequest, Accepted, ExecutionView, ExecutionPage, EventPage,
            Health, Readiness, Problem)


def _components() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(_STRUCTS,
                                                ref_template="#/components/schemas/{name}")
    # What the routes check by hand, and what the store's rows hold, spelled out.
    start = schemas["StartRequest"]["properties"]
    start["execution_id"]["anyOf"][0].update(_execution_id_schema())
    start["workflow"]["description"] = "a registered workflow's name"
    start["version"]["description"] = "the workflow version; null: the latest registered"
    start["execution_id"]["description"] = (
        "your id for the execution (a retry with the same id and body returns the first"
        " start); null: a new UUID")
    schemas["EventRequest"]["properties"]["name"].update(
        pattern=EVENT_NAME.pattern, maxLength=128,
        description="the event's name; names starting with 'flowrt.' are the runtime's")
    for name, statuses in (("ExecutionView", EXECUTION_STATUSES), ("EventView", EVENT_STATUSES)):
        props = schemas[name]["properties"]
        props["status"]["enum"] = list(statuses)
        for field, prop in props.items():
            if field.endswith("_at"):
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "string":
                        option["format"] = "date-time"
    problem = schemas["Problem"]["properties"]
    problem["type"].update(format="uri", description=f"{PROBLEM_BASE}<slug>; see docs/api.md")
    problem["instance"] = {"type": "string", "format": "uri-reference",
                           "description": "the request's path"}
    problem["checks"] = {**problem["checks"]["anyOf"][0],
                         "description": "not-ready only: each dependency's state"}
    return schemas


def _execution_id_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": EXECUTION_ID.pattern, "minLength": 1, "maxLength": 128}


# --------------------------------------------------------------------- operations

# Any request may meet these: the server's own answers before routing, and a bug.
_ANY = ("malformed-request", "headers-too-large", "internal")
# Every guarded route: the key is checked (in PostgreSQL, then cached).
_KEYED = ("unauthorized", "unavailable")
_BODY = ("unsupported-media-type", "malformed-body", "body-too-large", "invalid-body",
         "limit-exceeded")
_HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {"description": "the scheme to use: Bearer", "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait before retrying",
                    "schema": {"type": "integer", "minimum": 0}},
    "Accept-Post": {"description": "the media type to send", "schema": {"type": "string"}},
    "Allow": {"description": "the methods the path accepts", "schema": {"type": "string"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _problems(slugs: tuple[str, ...]) -> dict[str, Any]:
    """The error responses of an operation, one per status, each naming its types."""
    by_status: dict[int, list[str]] = {}
    for slug in dict.fromkeys(slugs + _ANY):
        status = PROBLEM_TYPES[slug].status
        assert status is not None, slug
        by_status.setdefault(status, []).append(slug)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        kinds = by_status[status]
        schema = {"allOf": [_ref("Problem"), {
            "type": "object",
            "properties": {"type": {"enum": [PROBLEM_BASE + s for s in kinds]},
                           "status": {"const": status}}}]}
        response: dict[str, Any] = {
            "description": "; ".join(f"`{s}`: {PROBLEM_TYPES[s].when}" for s in kinds),
            "content": _json(schema, "application/problem+json"),
        }
        # A header every type of this status carries is required; one only some carry is not.
        headers = {h: all(h in PROBLEM_TYPES[s].headers for s in kinds)
                   for s in kinds for h in PROBLEM_TYPES[s].headers}
        if headers:
            response["headers"] = {h: {**_HEADER_SCHEMAS[h], "required": required}
                                   for h, required in headers.items()}
        responses[str(status)] = response
    return responses


def _operation(op_id: str, summary: str, description: str, *, tag: str, role: str | None,
               ok: dict[str, Any], errors: tuple[str, ...] = (),
               parameters: list[dict[str, Any]] | None = None,
               body: str | None = None, example: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    if role is not None:
        description += f"\n\nNeeds a key of role `{role}` or above."
    op: dict[str, Any] = {
        "operationId": op_id, "summary": summary, "description": description, "tags": [tag],
        "security": [{"bearer": []}] if role is not None else [],
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        media: dict[str, Any] = {"schema": _ref(body)}
        if example is not None:
            media["example"] = example
        op["requestBody"] = {
            "required": True,
            "description": "JSON, at most FLOWRT_BODY_LIMIT bytes (any application/*+json"
                           " media type is read as JSON too)",
            "content": {"application/json": media},
        }
    op["responses"] = {**ok, **_problems(errors)}
    return op


_EXAMPLE_ID = "order-1001"
_PATH_ID = {"name": "execution_id", "in": "path", "required": True,
            "description": "the execution's id", "schema": _execution_id_schema(),
            "example": _EXAMPLE_ID}

_ACCEPTED = {"202": {
    "description": "accepted: the event is durable in the log and will be processed",
    "headers": {
        "Location": {"description": "the execution's URL", "required": True,
                     "schema": {"type": "string", "format": "uri-reference"}},
        "Idempotent-Replayed": {
            "description": "present on a retry: the event the first request appended",
            "schema": {"type": "string", "enum": ["true"]}},
    },
    "content": _json(_ref("Accepted")),
}}


def _int_query(name: str, low: int, high: int, default: int, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default}}


def _paths() -> dict[str, Any]:
    return {
        "/v1/executions": {
            "get": _operation(
                "listExecutions", "List executions",
                "The tenant's executions, newest first, a page at a time.",
                tag="executions", role="reader",
                parameters=[
                    {"name": "status", "in": "query", "required": False,
                     "description": "only executions in this status",
                     "schema": {"type": "string", "enum": list(EXECUTION_STATUSES)}},
                    {"name": "workflow", "in": "query", "required": False,
                     "description": "only executions of this workflow",
                     "schema": {"type": "string", "pattern": EVENT_NAME.pattern,
                                "maxLength": 128}},
                    _int_query("limit", 1, 500, 50, "executions per page"),
                    {"name": "cursor", "in": "query", "required": False,
                     "description": "the `next_cursor` of the previous page, unchanged",
                     "schema": {"type": "string"}},
                ],
                ok={"200": {"description": "a page of executions",
                            "content": _json(_ref("ExecutionPage"))}},
                errors=(*_KEYED, "rate-limited", "invalid-query", "invalid-input")),
            "post": _operation(
                "startExecution", "Start an execution",
                "Appends the execution's `flowrt.started` event (seq 1) with `input`. The same"
                " `execution_id` with the same body returns the first start"
                " (`Idempotent-Replayed: true`); with another body, 409.",
                tag="executions", role="writer", body="StartRequest", ok=_ACCEPTED,
                example={"workflow": "order", "execution_id": _EXAMPLE_ID,
                         "input": {"sku": "A-1"}},
                errors=(*_KEYED, "forbidden", "rate-limited", *_BODY, "malformed-execution-id",
                        "not-found", "conflict")),
        },
        "/v1/executions/{execution_id}": {
            "get": _operation(
                "getExecution", "Get an execution",
                "The execution's current state, data and progress through its log.",
                tag="executions", role="reader", parameters=[_PATH_ID],
                ok={"200": {"description": "the execution",
                            "content": _json(_ref("ExecutionView"))}},
                errors=(*_KEYED, "rate-limited", "malformed-execution-id", "not-found")),
        },
        "/v1/executions/{execution_id}/events": {
            "get": _operation(
                "listEvents", "Read an execution's log",
                "The execution's events in seq order, each with the outcome of processing it.",
                tag="events", role="reader",
                parameters=[
                    _PATH_ID,
                    _int_query("after", 0, _MAX_AFTER, 0, "only events with a greater seq"),
                    _int_query("limit", 1, 1000, 1000, "events per page"),
                ],
                ok={"200": {"description": "a page of the log",
                            "content": _json(_ref("EventPage"))}},
                errors=(*_KEYED, "rate-limited", "malformed-execution-id", "invalid-query",
                        "not-found")),
            "post": _operation(
                "sendEvent", "Send an event",
                "Appends an event at the head of the execution's log. With an"
                " Idempotency-Key, a retry with the same key and body returns the first"
                " append (`Idempotent-Replayed: true`); with another body, 422.",
                tag="events", role="writer", body="EventRequest", ok=_ACCEPTED,
                example={"name": "approve", "payload": {"amount": 50}},
                parameters=[
                    _PATH_ID,
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "description": "1-255 printable characters that name this event for"
                                    " retries (the schema shows the ASCII subset)",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                "pattern": "^[!-~]([ -~]*[!-~])?$"},
                     "example": f"approve-{_EXAMPLE_ID}"},
                ],
                errors=(*_KEYED, "forbidden", "rate-limited", "malformed-execution-id",
                        "malformed-idempotency-key", *_BODY, "reserved-event-name",
                        "invalid-event-name", "not-found", "execution-finished",
                        "idempotency-key-reused")),
        },
        "/healthz": {
            "get": _operation(
                "healthz", "Liveness", "The process answers; nothing else is checked.",
                tag="operations", role=None,
                ok={"200": {"description": "alive", "content": _json(_ref("Health"))}}),
        },
        "/readyz": {
            "get": _operation(
                "readyz", "Readiness",
                "Pings PostgreSQL and Redis. Without Redis the API still accepts events"
                " (`degraded`); without PostgreSQL it does not (503).",
                tag="operations", role=None,
                ok={"200": {"description": "ready or degraded",
                            "content": _json(_ref("Readiness"))}},
                errors=("not-ready",)),
        },
        "/metrics": {
            "get": _operation(
                "metrics", "Prometheus metrics",
                "Deployment-wide figures (every tenant's workflows) in the Prometheus text"
                " format. Not rate-limited.",
                tag="operations", role="admin",
                ok={"200": {"description": "the metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}}}},
                errors=(*_KEYED, "forbidden")),
        },
        "/openapi.json": {
            "get": _operation(
                "openapi", "This document", "The OpenAPI 3.1 description of this API.",
                tag="operations", role=None,
                ok={"200": {"description": "the document",
                            "content": _json({"type": "object"})}}),
        },
    }


def _build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowrt",
            "version": _pkg_version("flowrt"),
            "summary": "An event-sourced state-machine runtime: start executions, send"
                       " events, read them back.",
            "description": "Every error is `application/problem+json` (RFC 9457) with a"
                           f" `type` of `{PROBLEM_BASE}<slug>`. docs/api.md is the"
                           " reference for people.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "executions", "description": "start, read and list executions"},
            {"name": "events", "description": "send events and read an execution's log"},
            {"name": "operations", "description": "health, readiness, metrics, this document"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API key from `flowrt keys create`: it names"
                                          " the tenant and the role (reader, writer, admin)"},
            },
        },
    }


@functools.cache
def _encoded() -> bytes:
    return msgspec.json.encode(_build())


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; each call returns a fresh copy)."""
    value: dict[str, Any] = msgspec.json.decode(_encoded())
    return value


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the document, open to anyone (it holds no tenant's data)."""
    return Response(_encoded(), media_type="application/json")
