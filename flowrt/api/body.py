"""Reading a JSON request body safely: type, size, syntax, then shape.

The order matters: the size is checked before reading (Content-Length) and while
reading (chunked bodies), so a huge body never sits in memory; values that
PostgreSQL's jsonb or CEL cannot hold faithfully (NUL characters, lone surrogates,
integers beyond 64 bits, absurd nesting) are refused before anything is written.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from ..jsonvalues import Limits, over_limit, problem_in
from ..settings import Settings
from .problems import Problem

__all__ = ["read_json"]

T = TypeVar("T")


def _bad(detail: str) -> Problem:
    return Problem(400, "malformed-body", "Malformed Request Body", detail)


async def read_json(request: Request, kind: type[T], settings: Settings) -> T:
    limit, max_depth = settings.body_limit, settings.max_json_depth
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json_suffix = ctype.startswith("application/") and ctype.endswith("+json")
    if ctype != "application/json" and not is_json_suffix:
        raise Problem(415, "unsupported-media-type", "Unsupported Media Type",
                      "send the body as application/json",
                      headers={"Accept-Post": "application/json"})
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _bad("Content-Length is not a number")
        if int(length) > limit:
            raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise _bad("the body is empty; send a JSON object")
    try:
        value = msgspec.json.decode(raw)
    except UnicodeDecodeError:
        raise _bad("the body is not valid UTF-8") from None
    except RecursionError:
        raise _bad(f"JSON nested deeper than {max_depth} levels") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _bad(f"malformed JSON: {exc}") from None
    bad = problem_in(value, max_depth, Limits(max_object_keys=settings.max_object_keys,
                                              max_string_length=settings.max_string_length))
    if bad is not None:
        if over_limit(bad):
            raise Problem(422, "limit-exceeded", "Limit Exceeded", bad)
        raise _bad(bad)
    _refuse_duplicate_keys(raw)
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid-body", "Invalid Request Body", str(exc)) from None


class _Duplicate(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> None:
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise _Duplicate(k)
        seen.add(k)


def _refuse_duplicate_keys(raw: bytes) -> None:
    """``{"name": "a", "name": "b"}`` means different things to different parsers (msgspec
    keeps the last): refuse it. msgspec has no hook for pairs, so the standard parser
    walks the body once more; it is small (FLOWRT_BODY_LIMIT), and already known to be
    valid, shallow and free of oversized numbers."""
    try:
        json.loads(raw, object_pairs_hook=_unique)
    except _Duplicate as exc:
        raise _bad(f"duplicate key {exc.args[0]!r} in a JSON object") from None


def _too_large(limit: int) -> Problem:
    return Problem(413, "body-too-large", "Content Too Large",
                   f"the body exceeds the limit of {limit} bytes")

