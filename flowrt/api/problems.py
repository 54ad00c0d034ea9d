"""RFC 9457 problem+json responses, and the one place the error tree maps to HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    Conflict,
    ExecutionFinished,
    FlowrtError,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    Unavailable,
)

__all__ = ["PROBLEM_BASE", "Problem", "problem", "problem_from_error"]

_log = structlog.get_logger("flowrt.api")

PROBLEM_BASE = "https://flowrt.dev/problems/"  # + a slug: every problem's `type`
_encoder = msgspec.json.Encoder()


class Problem(Exception):
    """Raise in a handler to answer with a problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem(p: Problem, instance: str | None = None) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + p.slug, "title": p.title, "status": p.status,
                            "detail": p.detail}
    if instance:
        body["instance"] = instance
    body.update(p.extra)
    return Response(_encoder.encode(body), status_code=p.status, headers=p.headers,
                    media_type="application/problem+json")


def problem_from_error(exc: FlowrtError) -> Problem:
    if isinstance(exc, Unavailable):
        # The driver's message (hosts, ports) goes to the logs, not to clients.
        what = "PostgreSQL" if isinstance(exc, StoreUnavailable) else "Redis"
        return Problem(503, "unavailable", "Service Unavailable",
                       f"{what} is unreachable; retry later (send the same Idempotency-Key"
                       " or execution_id, so a retry cannot apply twice)",
                       headers={"Retry-After": "5"})
    if isinstance(exc, NotFound):
        return Problem(404, "not-found", "Not Found", str(exc))
    if isinstance(exc, ExecutionFinished):
        return Problem(409, "execution-finished", "Execution Finished", str(exc))
    if isinstance(exc, IdempotencyMismatch):
        return Problem(422, "idempotency-key-reused", "Idempotency Key Reused", str(exc))
    if isinstance(exc, Conflict):
        return Problem(409, "conflict", "Conflict", str(exc))
    if isinstance(exc, InvalidInput):
        return Problem(400, "invalid-input", "Invalid Input", str(exc))
    return Problem(500, "internal", "Internal Server Error", "unexpected error")


def _instance(request: Request) -> str:
    """The request path as sent (still percent-encoded), a valid URI reference."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.split(b"?", 1)[0].decode("ascii", "replace")
    return request.url.path


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem(exc, _instance(request))


async def handle_flowrt_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowrtError)
    return problem(problem_from_error(exc), _instance(request))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug, not a client or dependency problem: log it, answer 500 problem+json."""
    _log.exception("unexpected error", path=request.url.path)
    return problem(Problem(500, "internal", "Internal Server Error",
                           "an unexpected error occurred; it has been logged"), _instance(request))


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: ("not-found", "Not Found"), 405: ("method-not-allowed", "Method Not Allowed")}
    slug, title = titles.get(exc.status_code, ("http-error", "HTTP Error"))
    return problem(Problem(exc.status_code, slug, title, str(exc.detail), headers=exc.headers),
                   _instance(request))
