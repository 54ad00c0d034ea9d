"""Workflow definitions: the typed model, loading from YAML/JSON/TOML, validation.

A definition is data. ``load_definition`` reads a file, ``parse_definition`` takes
the same structure as Python objects; both return a validated ``Workflow`` (the
definition plus its compiled guards) or raise ``DefinitionError`` listing every
problem with its location.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import yaml

from .errors import DefinitionError
from .events import is_reserved
from .guards import Guard, GuardNotAllowed, GuardSyntaxError

__all__ = [
    "Definition",
    "State",
    "Transition",
    "Workflow",
    "definition_hash",
    "load_definition",
    "parse_definition",
]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class Transition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 omit_defaults=True):
    """Where an event leads. No ``target`` means an internal transition (actions only)."""

    target: str | None = None
    guard: str | None = None
    actions: tuple[str, ...] = ()
    on_error: str | None = None


class State(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            omit_defaults=True):
    """A state: its transitions by event name, entry and exit actions, finality.

    An event may map to one transition or a list of guarded candidates, tried in
    order; the first whose guard passes (or that has no guard) is taken.
    """

    on: dict[str, Transition | list[Transition]] = msgspec.field(default_factory=dict)
    entry: tuple[str, ...] = ()
    exit: tuple[str, ...] = ()
    final: bool = False


class Definition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 omit_defaults=True):
    """A workflow definition. ``(name, version)`` is immutable once registered."""

    name: str
    version: int
    initial: str = ""
    states: dict[str, State] = msgspec.field(default_factory=dict)
    description: str = ""


class Workflow:
    """A validated definition with its guards compiled; what the machine runs."""

    __slots__ = ("_guards", "definition")

    def __init__(self, definition: Definition, guards: dict[str, Guard]) -> None:
        self.definition = definition
        self._guards = guards

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def version(self) -> int:
        return self.definition.version

    def candidates(self, state: str, event: str) -> list[Transition]:
        spec = self.definition.states[state].on.get(event)
        if spec is None:
            return []
        return spec if isinstance(spec, list) else [spec]

    def guard(self, source: str) -> Guard:
        return self._guards[source]

    def action_names(self) -> set[str]:
        names: set[str] = set()
        for state in self.definition.states.values():
            names.update(state.entry, state.exit)
            for spec in state.on.values():
                for t in spec if isinstance(spec, list) else [spec]:
                    names.update(t.actions)
        return names

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version})"


_encoder = msgspec.json.Encoder(order="sorted")


def definition_json(definition: Definition) -> bytes:
    """The canonical body: sorted keys, defaults omitted, so equal definitions are equal bytes."""
    return _encoder.encode(definition)


def definition_hash(definition: Definition) -> str:
    """A stable digest of the body, to refuse a changed body under the same version."""
    return hashlib.sha256(definition_json(definition)).hexdigest()


# --- loading -----------------------------------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and duplicate-key detection.

    PyYAML follows YAML 1.1, where a bare ``on`` (also yes/no/off) is a boolean;
    definitions use ``on:`` for transitions, so only true/false are booleans here.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _Yaml12Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain scalar", mark)
        if key in seen:
            mark = key_node.start_mark
            raise _Duplicate(f"line {mark.line + 1}, column {mark.column + 1}", str(key))
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_Yaml12Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


class _Duplicate(Exception):
    def __init__(self, where: str, key: str) -> None:
        self.where = where
        self.key = key


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate("JSON object", key)
        out[key] = value
    return out


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return yaml.load(text, Loader=_Yaml12Loader)  # safe: a SafeLoader subclass
    if suffix == ".json":
        return json.loads(text, object_pairs_hook=_json_pairs)
    if suffix == ".toml":
        return tomllib.loads(text)
    raise DefinitionError(
        [("file", f"unsupported extension {suffix!r}; use .yaml, .json or .toml")], str(path))


def _syntax(exc: Exception) -> str:
    """A parser's error as "line L, column C: what" (TOML's message already says where)."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return " ".join(str(exc).split())


def load_definition(path: str | Path) -> Workflow:
    """Read, decode and validate a definition file (.yaml, .yml, .json or .toml)."""
    path = Path(path)
    try:
        raw = _read(path)
    except DefinitionError:
        raise
    except _Duplicate as dup:
        raise DefinitionError([(dup.where, f"duplicate name {dup.key!r}")], str(path)) from None
    except OSError as exc:
        raise DefinitionError([("file", exc.strerror or str(exc))], str(path)) from None
    except (yaml.YAMLError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError([("syntax", _syntax(exc))], str(path)) from None
    try:
        return parse_definition(raw, source=str(path))
    except DefinitionError as exc:
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise
        where = _positions(path.read_text(encoding="utf-8"))
        raise DefinitionError(exc.problems, str(path),
                              {loc: at for loc, _ in exc.problems
                               if (at := _nearest(loc, where)) is not None}) from None


def _positions(text: str) -> dict[str, tuple[int, int]]:
    """Where each key and item of a YAML document starts: its problem location
    ("states.a.on.go.target", "states.a.on.go[1]") -> (line, column), from 1."""
    found: dict[str, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node | None, str]] = [(yaml.compose(text, Loader=_Yaml12Loader), "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            children = [(f"{path}.{k.value}" if path else str(k.value), k, v)
                        for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", v, v) for i, v in enumerate(node.value)]
        else:
            continue
        for child, mark_node, value in children:
            found[child] = (mark_node.start_mark.line + 1, mark_node.start_mark.column + 1)
            stack.append((value, child))
    return found


_LAST_STEP = re.compile(r"(\.[^.\[]*|\[\d+\])$")


def _nearest(loc: str, where: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """The line and column of ``loc``, or of the nearest key that encloses it."""
    while loc and loc not in where:
        shorter = _LAST_STEP.sub("", loc)
        loc = shorter if shorter != loc else ""
    return where.get(loc) if loc else None


def parse_definition(raw: Any, source: str | None = None) -> Workflow:
    """Validate a definition given as plain objects (or a ``Definition``)."""
    if isinstance(raw, Definition):
        definition = raw
    else:
        if not isinstance(raw, dict):
            raise DefinitionError([("$", "a definition must be a mapping")], source)
        converted, type_problems = _convert(raw)
        if converted is None:
            raise DefinitionError(type_problems, source)
        definition = converted
    problems, guards = _validate(definition)
    if problems:
        raise DefinitionError(problems, source)
    return Workflow(definition, guards)


def _convert(raw: dict[str, Any]) -> tuple[Definition | None, list[tuple[str, str]]]:
    """Decode into typed structs, one state at a time, so every type error is reported
    (msgspec stops at the first) and each names its state."""
    problems: list[tuple[str, str]] = []
    states_raw = raw.get("states", {})
    states: dict[str, State] = {}
    if isinstance(states_raw, dict):
        for name, body in states_raw.items():
            try:
                states[str(name)] = msgspec.convert(body, State)
            except msgspec.ValidationError as exc:
                problems.extend(_state_problems(str(name), body, str(exc)))
    try:
        top = msgspec.convert({**raw, "states": {}} if isinstance(states_raw, dict) else raw,
                              Definition)
    except msgspec.ValidationError as exc:
        problems.append(_locate(str(exc)))
        return None, problems
    if problems:
        return None, problems
    return msgspec.structs.replace(top, states=states), []


def _state_problems(name: str, body: Any, message: str) -> list[tuple[str, str]]:
    """Pinpoint a state's type errors: msgspec hides mapping keys ("on[...]")."""
    found: list[tuple[str, str]] = []
    on = body.get("on") if isinstance(body, dict) else None
    if isinstance(on, dict):
        for event, spec in on.items():
            try:
                msgspec.convert(spec, Transition | list[Transition])
            except msgspec.ValidationError as exc:
                found.append(_locate(str(exc), f"states.{name}.on.{event}"))
        rest = {k: v for k, v in body.items() if k != "on"}
        try:
            msgspec.convert(rest, State)
        except msgspec.ValidationError as exc:
            found.append(_locate(str(exc), f"states.{name}"))
    return found or [_locate(message, f"states.{name}")]


def _locate(message: str, prefix: str = "") -> tuple[str, str]:
    # msgspec says "Expected `int`, got `str` - at `$.version`"; split the location out
    # and write it like the other problems ("version", "states.pending.final").
    text, sep, where = message.rpartition(" - at ")
    if not sep:
        return prefix or "$", message
    path = where.strip("`").removeprefix("$").lstrip(".")
    joined = ".".join(p for p in (prefix, path) if p) if not path.startswith("[") else prefix + path
    return joined or "$", text


def _validate(d: Definition) -> tuple[list[tuple[str, str]], dict[str, Guard]]:
    problems: list[tuple[str, str]] = []
    guards: dict[str, Guard] = {}
    if not NAME_RE.fullmatch(d.name):
        problems.append(("name", f"invalid workflow name {d.name!r}"))
    if d.version < 1:
        problems.append(("version", "version must be a positive integer"))
    if not d.states:
        problems.append(("states", "a workflow needs at least one state"))
    if not d.initial:
        problems.append(("initial", "no initial state"))
    elif d.states and d.initial not in d.states:
        problems.append(("initial", f"unknown initial state {d.initial!r}"))

    edges: dict[str, set[str]] = {name: set() for name in d.states}
    for sname, state in d.states.items():
        if not NAME_RE.fullmatch(sname):
            problems.append((f"states.{sname}", f"invalid state name {sname!r}"))
        if state.final and state.on:
            problems.append((f"states.{sname}.on", "a final state cannot have transitions"))
        for event, spec in state.on.items():
            loc = f"states.{sname}.on.{event}"
            if is_reserved(event):
                problems.append((loc, f"event name {event!r} is reserved for the runtime"))
            elif not NAME_RE.fullmatch(event):
                problems.append((loc, f"invalid event name {event!r}"))
            candidates = spec if isinstance(spec, list) else [spec]
            if not candidates:
                problems.append((loc, "empty list of transitions"))
            for i, t in enumerate(candidates):
                tloc = f"{loc}[{i}]" if isinstance(spec, list) else loc
                for field, target in (("target", t.target), ("on_error", t.on_error)):
                    if target is None:
                        continue
                    if target in d.states:
                        edges[sname].add(target)
                    else:
                        problems.append((f"{tloc}.{field}", f"unknown target state {target!r}"))
                if t.guard is not None and t.guard not in guards:
                    try:
                        guards[t.guard] = Guard(t.guard)
                    except GuardSyntaxError as exc:
                        problems.append((f"{tloc}.guard", f"bad guard syntax: {exc}"))
                    except GuardNotAllowed as exc:
                        problems.append((f"{tloc}.guard", f"guard not allowed: {exc}"))
        for kind in ("entry", "exit"):
            names: tuple[str, ...] = getattr(state, kind)
            dups = {n for n in names if names.count(n) > 1}
            for n in sorted(dups):
                problems.append((f"states.{sname}.{kind}", f"duplicate action {n!r}"))

    if d.initial in d.states:
        seen = {d.initial}
        queue = deque([d.initial])
        while queue:
            for nxt in edges[queue.popleft()]:
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        for sname in d.states:
            if sname not in seen:
                problems.append(
                    (f"states.{sname}", f"state {sname!r} is unreachable from {d.initial!r}"))
    return problems, guards
