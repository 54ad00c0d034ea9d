"""Reading a JSON request body safely: type, size, syntax, then shape.

The order matters: the size is checked before reading (Content-Length) and while
reading (chunked bodies), so a huge body never sits in memory; values that
PostgreSQL's jsonb or CEL cannot hold faithfully (NUL characters, lone surrogates,
integers beyond 64 bits, absurd nesting) are refused before anything is written.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from .problems import Problem

__all__ = ["read_json"]

T = TypeVar("T")
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLOAT_LIMIT = float(2**63)


def _bad(detail: str) -> Problem:
    return Problem(400, "malformed-body", "Malformed Request Body", detail)


async def read_json(request: Request, kind: type[T], *, limit: int, max_depth: int) -> T:
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
    _check(value, max_depth)
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise Problem(422, "invalid-body", "Invalid Request Body", str(exc)) from None


def _too_large(limit: int) -> Problem:
    return Problem(413, "body-too-large", "Content Too Large",
                   f"the body exceeds the limit of {limit} bytes")


def _check(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise _bad(f"JSON nested deeper than {max_depth} levels at {path}")
            if isinstance(item, dict):
                for k, v in item.items():
                    _check_str(k, f"{path} key")
                    stack.append((v, depth + 1, f"{path}.{k}"))
            else:
                stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str):
            _check_str(item, path)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not _INT_MIN <= item <= _INT_MAX:
                raise _bad(f"integer at {path} is outside the 64-bit range")
        elif isinstance(item, float) and not -_FLOAT_LIMIT < item < _FLOAT_LIMIT:
            # jsonb keeps 1e20 as the integer 100000000000000000000, which would come
            # back as an integer no API accepts: refuse it at the door instead.
            raise _bad(f"number at {path} is outside the range of 64-bit integers")


def _check_str(s: str, path: str) -> None:
    if "\x00" in s:
        raise _bad(f"NUL character in string at {path}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"invalid Unicode (lone surrogate) in string at {path}") from None
