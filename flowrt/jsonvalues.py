"""What a JSON value must be to be stored faithfully in the log (pure).

PostgreSQL's jsonb refuses NUL characters and lone surrogates, keeps a number like
1e20 as an integer no 64-bit reader (CEL included) can hold, and deep nesting is
a denial-of-service vector. Both request bodies and action results pass this check.
"""

from __future__ import annotations

from typing import Any

__all__ = ["problem_in", "storable_text"]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLOAT_LIMIT = float(2**63)


def problem_in(value: Any, max_depth: int) -> str | None:
    """Why ``value`` cannot be stored as is, or None when it can."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels at {path}"
            if isinstance(item, dict):
                for k, v in item.items():
                    if not isinstance(k, str):
                        return f"non-string key at {path}"
                    bad = _text_problem(k, f"{path} key")
                    if bad:
                        return bad
                    stack.append((v, depth + 1, f"{path}.{k}"))
            else:
                stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str):
            bad = _text_problem(item, path)
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


def _text_problem(s: str, path: str) -> str | None:
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
