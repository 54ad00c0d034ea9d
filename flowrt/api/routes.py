"""Route handlers. Append, then publish: the event is committed before its hint is sent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..apikeys import Principal, Role
from ..errors import Unavailable
from ..events import EXECUTION_STATUSES, Hint, is_reserved
from ..store.executions import Appended, AppendRequest, StartRequest
from .body import read_json
from .openapi import openapi
from .problems import Problem
from .schemas import EVENT_NAME, EXECUTION_ID, Accepted, EventRequest, request_hash
from .schemas import StartRequest as StartBody
from .state import ApiState

__all__ = ["ROUTES"]

_log = structlog.get_logger("flowrt.api")
_encoder = msgspec.json.Encoder()


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(value), status_code=status, headers=headers,
                    media_type="application/json")


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.flowrt
    return state


def _execution_id(value: str) -> str:
    if not EXECUTION_ID.fullmatch(value):
        raise Problem(400, "malformed-execution-id", "Malformed Execution Id",
                      "an execution id is 1-128 letters, digits, '_', '.' or '-',"
                      " starting with a letter or digit")
    return value


async def _accepted(state: ApiState, who: Principal, appended: Appended) -> Response:
    if appended.created:
        state.metrics.events_appended.labels(workflow=appended.workflow).inc()
        # The event is durable now. If the hint cannot be sent, the event stays
        # unpublished and the workers' relay sends it: still accepted, never lost.
        hint = Hint(tenant=who.tenant, execution_id=appended.execution_id, seq=appended.seq)
        try:
            # Bounded: a stalled Redis (CLIENT PAUSE, a failover) must not hold the 202.
            async with asyncio.timeout(state.settings.publish_timeout):
                await state.hints.publish(hint)
            state.published.add(hint)
        except Exception as exc:  # any failure (down, slow, OOM, READONLY): still accepted
            state.metrics.publish_failures.inc()
            _log.warning("hint not published; the relay will send it",
                         execution_id=appended.execution_id, seq=appended.seq, error=str(exc))
    body = Accepted(execution_id=appended.execution_id, event_id=appended.event_id,
                    seq=appended.seq)
    headers = {"Location": f"/v1/executions/{appended.execution_id}"}
    if not appended.created:  # a retry: this is the event the first request appended
        headers["Idempotent-Replayed"] = "true"
    return _json(body, 202, headers)


async def start_execution(request: Request, who: Principal) -> Response:
    state = _state(request)
    body = await read_json(request, StartBody, state.settings)
    if body.execution_id is not None:
        _execution_id(body.execution_id)
    appended = await state.starts.start_execution(StartRequest(
        tenant=who.tenant, execution_id=body.execution_id or str(uuid.uuid4()),
        workflow=body.workflow, version=body.version, input=body.input,
        request_hash=request_hash(body)))
    return await _accepted(state, who, appended)


async def send_event(request: Request, who: Principal) -> Response:
    state = _state(request)
    execution_id = _execution_id(request.path_params["execution_id"])
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise Problem(400, "malformed-idempotency-key", "Malformed Idempotency-Key",
                      "Idempotency-Key must be 1-255 printable characters")
    body = await read_json(request, EventRequest, state.settings)
    if is_reserved(body.name):
        raise Problem(422, "reserved-event-name", "Reserved Event Name",
                      f"event names starting with 'flowrt.' belong to the runtime: {body.name!r}")
    if not EVENT_NAME.fullmatch(body.name):
        raise Problem(422, "invalid-event-name", "Invalid Event Name",
                      "an event name is 1-128 letters, digits, '_', '.' or '-',"
                      " starting with a letter or '_'")
    appended = await state.appends.append(AppendRequest(
        tenant=who.tenant, execution_id=execution_id, name=body.name, payload=body.payload,
        idempotency_key=key, request_hash=request_hash(body)))
    return await _accepted(state, who, appended)


async def get_execution(request: Request, who: Principal) -> Response:
    state = _state(request)
    execution_id = _execution_id(request.path_params["execution_id"])
    return _json(await state.executions.get(who.tenant, execution_id))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        raise Problem(400, "invalid-query", "Invalid Query Parameter",
                      f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def list_events(request: Request, who: Principal) -> Response:
    state = _state(request)
    execution_id = _execution_id(request.path_params["execution_id"])
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 1000, 1, 1000)
    events = await state.executions.events(who.tenant, execution_id, after=after,
                                           limit=limit)
    return _json({"execution_id": execution_id, "events": events,
                  "next_after": events[-1].seq if len(events) == limit else None})


async def list_executions(request: Request, who: Principal) -> Response:
    state = _state(request)
    status = request.query_params.get("status")
    if status is not None and status not in EXECUTION_STATUSES:
        raise Problem(400, "invalid-query", "Invalid Query Parameter",
                      f"status must be one of {', '.join(EXECUTION_STATUSES)}")
    workflow = request.query_params.get("workflow")
    if workflow is not None and not EVENT_NAME.fullmatch(workflow):
        raise Problem(400, "invalid-query", "Invalid Query Parameter",
                      "workflow must be a workflow name")
    limit = _int_param(request, "limit", 50, 1, 500)
    page = await state.executions.list(who.tenant, workflow=workflow, status=status,
                                       limit=limit, cursor=request.query_params.get("cursor"))
    return _json(page)


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    checks: dict[str, str] = {}
    for name, ping in (("postgres", state.db.ping), ("redis", state.bus.ping)):
        try:
            await ping()
            checks[name] = "ok"
        except Unavailable:
            checks[name] = "unreachable"  # the driver's detail (hosts, ports) goes to logs
            _log.warning("readiness check failed", check=name, exc_info=True)
    if all(v == "ok" for v in checks.values()):
        return _json({"status": "ready", "checks": checks})
    if checks["postgres"] == "ok":
        # Events are still accepted (the log is the outbox, the relay publishes them
        # later): stay in the load balancer, and say that hints are delayed.
        return _json({"status": "degraded", "checks": checks})
    raise Problem(503, "not-ready", "Not Ready", "a dependency is unreachable",
                  headers={"Retry-After": "5"}, checks=checks)


async def metrics(request: Request, who: Principal) -> Response:
    return PlainTextResponse(generate_latest(_state(request).metrics.registry),
                             media_type=CONTENT_TYPE_LATEST)


Handler = Callable[[Request], Awaitable[Response]]
Guarded = Callable[[Request, Principal], Awaitable[Response]]


def _guard(role: Role, handler: Guarded, *, limited: bool = True) -> Handler:
    """Authenticate (401/403), then take from the tenant's rate limit (429), before
    anything else: an unauthenticated request never has its body read."""

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        who = await state.auth.principal(request, role)
        if limited:
            await state.limiter.check(who)
        return await handler(request, who)

    return endpoint


def _by_method(**handlers: Handler) -> Handler:
    """One endpoint per path, so a 405 names every allowed method in its Allow header."""

    async def endpoint(request: Request) -> Response:
        method = request.method.lower()
        handler = handlers["get" if method == "head" else method]  # Starlette adds HEAD to GET
        return await handler(request)

    return endpoint


from starlette.routing import Route  # noqa: E402

ROUTES = [
    Route("/v1/executions", _by_method(get=_guard("reader", list_executions),
                                       post=_guard("writer", start_execution)),
          methods=["GET", "POST"]),
    Route("/v1/executions/{execution_id}", _guard("reader", get_execution), methods=["GET"]),
    Route("/v1/executions/{execution_id}/events",
          _by_method(get=_guard("reader", list_events), post=_guard("writer", send_event)),
          methods=["GET", "POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    # deployment-wide figures (every tenant's workflows): an admin key's, not open
    Route("/metrics", _guard("admin", metrics, limited=False), methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
