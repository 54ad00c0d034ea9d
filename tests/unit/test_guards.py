"""CEL guards (flowrt/guards.py): compiled once, evaluated purely, never raising."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from flowrt.guards import Guard, GuardError, GuardNotAllowed, GuardSyntaxError


def test_guard_compiles_and_keeps_its_source() -> None:
    g = Guard("payload.amount <= 1000")
    assert g.source == "payload.amount <= 1000"


@pytest.mark.parametrize(("source", "data", "payload", "state", "expected"), [
    ("payload.amount <= 1000", {}, {"amount": 500}, "pending", True),
    ("payload.amount <= 1000", {}, {"amount": 1000}, "pending", True),
    ("payload.amount <= 1000", {}, {"amount": 1001}, "pending", False),
    ("payload.amount <= 1000", {}, {"amount": 12.5}, "pending", True),
    ("data.count > 2", {"count": 3}, {}, None, True),
    ("data.count > 2", {"count": 2}, {}, None, False),
    ("state == 'pending'", {}, {}, "pending", True),
    ("state == 'pending'", {}, {}, "review", False),
    ("state == null", {}, {}, None, True),
    ("has(payload.amount)", {}, {}, "s", False),
    ("has(payload.amount)", {}, {"amount": 1}, "s", True),
    ("data.items.size() == 2 && data.items[1] == 'b'", {"items": ["a", "b"]}, {}, "s", True),
    ("data.customer.tier in ['gold', 'silver']", {"customer": {"tier": "gold"}}, {}, "s", True),
    ("payload.amount <= 1000 && state == 'pending'", {}, {"amount": 1}, "pending", True),
    ("true", {}, {}, None, True),
    ("false", {}, {}, None, False),
])
def test_evaluate_returns_a_boolean_and_no_error(source: str, data: Any, payload: Any,
                                                 state: str | None, expected: bool) -> None:
    assert Guard(source).evaluate(data, payload, state) == (expected, None)


def test_evaluate_is_pure() -> None:
    g = Guard("payload.amount <= data.limit")
    data, payload = {"limit": 10}, {"amount": 10}
    first = g.evaluate(data, payload, "s")
    assert first == (True, None)
    assert g.evaluate(data, payload, "s") == first
    assert data == {"limit": 10} and payload == {"amount": 10}


@pytest.mark.parametrize(("source", "data", "payload", "key"), [
    ("payload.amount <= 1000", {}, {}, "amount"),
    ("data.missing == 1", {"other": 1}, {}, "missing"),
    ("payload.customer.tier == 'gold'", {}, {"customer": {}}, "tier"),
    ("payload['amount'] < 10", {}, {}, "amount"),
])
def test_missing_key_fails_with_an_error(source: str, data: Any, payload: Any, key: str) -> None:
    passed, error = Guard(source).evaluate(data, payload, "s")
    assert passed is False
    assert error == f"no such key: {key}"


@pytest.mark.parametrize(("source", "type_name"), [
    ("payload.amount", "int"),
    ("payload.amount + 1", "int"),
    ("'yes'", "str"),
    ("null", "NoneType"),
    ("[true]", "list"),
    ("{'a': true}", "dict"),
    ("1.5", "float"),
])
def test_non_bool_result_fails_with_an_error(source: str, type_name: str) -> None:
    assert Guard(source).evaluate({}, {"amount": 3}, "s") == (
        False, f"guard returned {type_name}, not bool")


@pytest.mark.parametrize(("source", "payload"), [
    ("payload.amount <= 1000", {"amount": None}),
    ("payload.amount <= 1000", {"amount": "12"}),
    ("payload.amount + 1 > 0", {"amount": 1.5}),
    ("1 / payload.n == 1", {"n": 0}),
    ("payload.items[5] == 1", {"items": [1]}),
    ("9223372036854775807 + payload.n > 0", {"n": 1}),
])
def test_evaluation_errors_fail_with_a_one_line_error(source: str, payload: Any) -> None:
    passed, error = Guard(source).evaluate({}, payload, "s")
    assert passed is False
    assert error
    assert "\n" not in error


def test_unconvertible_activation_fails_instead_of_raising() -> None:
    passed, error = Guard("true").evaluate({"x": {1, 2}}, {}, "s")
    assert passed is False
    assert error


@pytest.mark.parametrize("source", [
    "payload.amount <=",
    "",
    "   ",
    "(",
    "1 if True else 0",
    "lambda: 1",
    "import os",
    "payload.amount <= 1000)",
    "a ==== b",
])
def test_syntax_errors_raise_guard_syntax_error(source: str) -> None:
    with pytest.raises(GuardSyntaxError) as info:
        Guard(source)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message
    assert "\n" not in message


@pytest.mark.parametrize("template", [
    '__import__("os").system("touch {marker}")',
    '__import__("os")',
    'exec("open(\'{marker}\', \'w\')")',
    'eval("open(\'{marker}\', \'w\')") == 1',
    'open("{marker}", "w") == null',
    'os.system("touch {marker}") == 0',
    "data.__class__.__init__.__globals__['os'].system('touch {marker}') == 0",
    "payload.__dict__ == {{}}",
])
def test_python_injection_is_refused_at_load(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(GuardError):
        Guard(template.format(marker=marker))
    assert not marker.exists()


@pytest.mark.parametrize(("source", "why"), [
    ('__import__("os")', "'__import__': names starting with '__'"),
    ("payload.__class__.__mro__", "'__class__': names starting with '__'"),
    ("data.x.__globals__ == null", "'__globals__'"),
    ('payload.s.split(",") == []', "unknown function 'split'"),
    ('getattr(payload, "x")', "unknown function 'getattr'"),
    # nested comprehensions cost the product of the lists' sizes
    ("payload.x.all(a, payload.x.all(b, payload.x.exists(c, true)))",
     "'all' inside another macro's arguments"),
    ("payload.x.exists(a, (payload.y.map(b, b + a)).size() > 0)",
     "'map' inside another macro's arguments"),
    ("os.environ == null", "unknown name 'os'"),
    ("self.x", "unknown name 'self'"),
    ("x > 1", "unknown name 'x'"),
    ("1 + " * 300 + "1 > 0", "characters; a guard has at most 1000"),
    ("payload.s == '" + "a" * 1000 + "'", "characters; a guard has at most 1000"),
])
def test_escapes_and_huge_expressions_are_not_allowed(source: str, why: str) -> None:
    with pytest.raises(GuardNotAllowed, match=re.escape(why)):
        Guard(source)


@pytest.mark.parametrize("source", [
    "payload.amount <= 1000 && state == 'pending'",
    "data.limit >= payload.n",
    "payload.items.all(i, i.n > 0) && payload.tags.exists(t, t == 'vip')",
    "payload.items.map(i, i.n).filter(n, n > 1).size() > 0 || size(payload.items) == 0",
    "payload.a.all(i, i > 0) && (payload.b.exists(j, j == ')')) && payload.c.all(k, k)",
    'has(payload.x) && payload.s.startsWith("a") && payload.s.matches("^a[0-9]+$")',
    'payload.s == "__import__(os) is only text here"',
    "payload['key'] in [1, 2] && type(payload.n) == int && payload.n != null",
    "int(payload.s) > 1 && double(payload.n) < 2.5 && string(payload.n) != ''",
])
def test_ordinary_guards_are_allowed(source: str) -> None:
    Guard(source)


def test_guards_with_the_same_source_are_independent() -> None:
    a, b = Guard("payload.n > 0"), Guard("payload.n > 0")
    assert a.evaluate({}, {"n": 1}, None) == (True, None)
    assert b.evaluate({}, {"n": -1}, None) == (False, None)
    assert a.evaluate({}, {"n": 1}, None) == (True, None)


def test_importing_flowrt_leaves_cels_command_line_out() -> None:
    """cel's own REPL (typer, prompt_toolkit) cost every flowrt process 0.2 s and 12 MB
    at start-up; the guards need only the compiler. (rich may load anyway: structlog
    imports it when it is installed.)"""
    import subprocess
    import sys

    code = ("import sys, flowrt.cli, flowrt.worker\n"
            "from flowrt.guards import Guard\n"
            "assert Guard('payload.n > 1').evaluate({}, {'n': 2}, None) == (True, None)\n"
            "print(sorted(m for m in ('typer', 'prompt_toolkit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
