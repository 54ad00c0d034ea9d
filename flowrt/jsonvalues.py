"""What a JSON value must be to be stored faithfully in the log (pure).

PostgreSQL's jsonb refuses NUL characters and lone surrogates, keeps a number like
1e20 as an integer no 64-bit reader (CEL included) can hold, and deep nesting is
a denial-of-service vector. Both request bodies and action results pass this check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Limits", "over_limit", "problem_in", "storable_text"]

_OVER = "over the limit"
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLOAT_LIMIT = float(2**63)


@dataclass(frozen=True)
class Limits:
    """Caps on what a client may send (each breach is the client's, a 422)."""

    max_object_keys: int
    max_string_length: int


def problem_in(value: Any, max_depth: int, limits: Limits | None = None) -> str | None:
    """Why ``value`` cannot be stored as is, or None when it can. With ``limits``, a
    breach of them is reported too: ``over_limit`` tells the two kinds apart."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels at {path}"
            if isinstance(item, dict):
                if limits and len(item) > limits.max_object_keys:
                    return f"{_OVER}: object at {path} has {len(item)} keys," \
                        f" more than {limits.max_object_keys}"
                for k, v in item.items():
                    if not isinstance(k, str):
                        return f"non-string key at {path}"
                    bad = _text_problem(k, f"{path} key", limits)
                    if bad:
                        return bad
                    stack.append((v, depth + 1, f"{path}.{k}"))
            else:
                stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str):
            bad = _text_problem(item, path, limits)
            if bad:
                return bad
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                return f"integer at {path} is outside the 64-bit range"
        elif isinstance(item, float):
            if not -_FLOAT_LIMIT < item < _FLOAT_LIMIT:
                return f"number at {path} is outside the range of 64-bit integers"
        else:
            return f"{type(item).__name__} at {path} is not JSON"
    return None


def over_limit(problem: str) -> bool:
    """Whether a ``problem_in`` message is a breach of ``Limits`` (not malformed data)."""
    return problem.startswith(_OVER)


def _text_problem(s: str, path: str, limits: Limits | None) -> str | None:
    if limits and len(s) > limits.max_string_length:
        return f"{_OVER}: string at {path} has {len(s)} characters," \
            f" more than {limits.max_string_length}"
    if "\x00" in s:
        return f"NUL character in string at {path}"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return f"invalid Unicode (lone surrogate) in string at {path}"
    return None


def storable_text(s: str) -> str:
    """``s`` with what PostgreSQL text cannot hold escaped (for error messages)."""
    return s.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
