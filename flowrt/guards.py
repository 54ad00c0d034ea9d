"""Guard expressions: CEL, compiled once when a definition is loaded.

CEL (the Common Expression Language) is side-effect free, has no access to Python
objects and always terminates, which is what a guard written by a user needs. We
use the maintained ``common-expression-language`` package (Rust core, see
docs/decisions/0002-cel-guards.md) instead of writing a parser; user strings never
reach Python's ``eval``.
"""

from __future__ import annotations

from typing import Any

import cel

__all__ = ["Guard", "GuardSyntaxError"]


class GuardSyntaxError(ValueError):
    """The expression does not parse as CEL."""


class Guard:
    """A compiled guard. ``evaluate`` is pure: same activation, same answer."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except Exception as exc:  # the binding raises ValueError with CEL's own message
            raise GuardSyntaxError(_first_line(str(exc))) from None

    def evaluate(self, data: Any, payload: Any, state: str | None) -> tuple[bool, str | None]:
        """Return ``(passed, error)``. A guard that errors or returns a non-bool fails."""
        try:
            value = self._program.execute({"data": data, "payload": payload, "state": state})
        except KeyError as exc:
            return False, f"no such key: {exc.args[0] if exc.args else exc}"
        except Exception as exc:  # CEL type and evaluation errors
            return False, _first_line(str(exc))
        if not isinstance(value, bool):
            return False, f"guard returned {type(value).__name__}, not bool"
        return value, None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
