"""Guard expressions: CEL, compiled once when a definition is loaded.

CEL (the Common Expression Language) is side-effect free, has no access to Python
objects and always terminates, which is what a guard written by a user needs. We
use the maintained ``common-expression-language`` package (Rust core, see
docs/decisions/0002-cel-guards.md) instead of writing a parser; user strings never
reach Python's ``eval``.
"""

from __future__ import annotations

import re
import sys
import types
from typing import Any

# cel's __init__ also imports its command-line REPL (typer, prompt_toolkit, rich,
# pygments): 0.2 s and 12 MB in every flowrt process, for nothing flowrt uses. An
# empty stand-in for that one module keeps it out (cel is pinned to 0.10.x).
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402

__all__ = ["MAX_GUARD_LENGTH", "Guard", "GuardError", "GuardNotAllowed", "GuardSyntaxError"]

MAX_GUARD_LENGTH = 1000  # characters: a guard is a condition, not a program


class GuardError(ValueError):
    """The expression cannot be a guard."""


class GuardSyntaxError(GuardError):
    """The expression does not parse as CEL."""


class GuardNotAllowed(GuardError):
    """The expression names what a guard may not use. Checked when the definition is
    loaded, so a definition that tries is refused before any event meets it."""


# What a guard may name. CEL cannot reach Python either way; the list makes the
# intent plain and the error early: an unknown function or variable would otherwise
# fail only when an event is evaluated, and that event would be ignored.
_ROOTS = frozenset({"data", "payload", "state"})
_CONSTANTS = frozenset({"true", "false", "null", "in", "int", "uint", "double", "string",
                        "bytes", "bool", "list", "map", "null_type", "type"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FUNCTIONS = _MACROS | frozenset({
    "size", "has", "matches", "startsWith", "endsWith", "contains", "int", "uint", "double",
    "string", "bytes", "bool", "dyn", "type", "timestamp", "duration", "getDate",
    "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours",
    "getMilliseconds", "getMinutes", "getMonth", "getSeconds"})
_TOKEN = re.compile(
    r"""(?P<string>[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''"""
    r"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))"""
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<other>\S)")


def _check_nesting(texts: list[str]) -> None:
    """Refuse a macro inside another macro's arguments: nested comprehensions cost the
    product of their lists' sizes (lists of a payload up to the body limit), and a
    guard runs in the worker's loop. Chained macros (``a.map(..).all(..)``) are fine."""
    depth = 0
    opened: list[int] = []  # the paren depth of each macro whose arguments we are in
    for i, text in enumerate(texts):
        if text == "(":
            depth += 1
            if i >= 2 and texts[i - 1] in _MACROS and texts[i - 2] == ".":
                if opened:
                    raise GuardNotAllowed(f"{texts[i - 1]!r} inside another macro's"
                                          " arguments: nested comprehensions are not allowed")
                opened.append(depth)
        elif text == ")":
            if opened and opened[-1] == depth:
                opened.pop()
            depth -= 1


def _check_names(source: str) -> None:
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(source)]
    texts = [text for _, text in tokens]
    _check_nesting(texts)
    # the variables macros bind: the name right after ".all(", ".map(", ...
    bound = {texts[i + 2] for i in range(1, len(tokens) - 2)
             if texts[i] in _MACROS and texts[i - 1] == "." and texts[i + 1] == "("
             and tokens[i + 2][0] == "name"}
    for i, (kind, text) in enumerate(tokens):
        if kind != "name":
            continue
        if text.startswith("__"):
            raise GuardNotAllowed(f"{text!r}: names starting with '__' are not allowed")
        if i + 1 < len(texts) and texts[i + 1] == "(":
            if text not in _FUNCTIONS:
                raise GuardNotAllowed(f"unknown function {text!r}")
        elif (i == 0 or texts[i - 1] != ".") and text not in _ROOTS | _CONSTANTS | bound:
            raise GuardNotAllowed(f"unknown name {text!r}; a guard reads data, payload"
                                  " and state")


class Guard:
    """A compiled guard. ``evaluate`` is pure: same activation, same answer."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        if len(source) > MAX_GUARD_LENGTH:
            raise GuardNotAllowed(f"{len(source)} characters; a guard has at most"
                                  f" {MAX_GUARD_LENGTH}")
        try:
            self._program = cel.compile(source)
        except Exception as exc:  # the binding raises ValueError with CEL's own message
            raise GuardSyntaxError(_first_line(str(exc))) from None
        _check_names(source)  # valid CEL: its tokens are well formed

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
