"""Loading, decoding and validating workflow definitions (flowrt/definition.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowrt import definition as definition_module
from flowrt.definition import (
    Definition,
    State,
    Transition,
    Workflow,
    definition_hash,
    definition_json,
    load_definition,
    parse_definition,
)
from flowrt.errors import DefinitionError, FlowrtError

DEMO = Path(__file__).resolve().parents[2] / "workers" / "demo" / "order.yaml"

# The demo definition written by hand in the other formats (not derived from the loader).
DEMO_JSON = """
{
  "name": "order",
  "version": 1,
  "initial": "pending",
  "states": {
    "pending": {
      "on": {
        "approve": {"target": "approved", "guard": "payload.amount <= 1000",
                    "actions": ["reserve_stock"]},
        "approve_large": {"target": "review"},
        "reject": {"target": "rejected"}
      }
    },
    "review": {
      "on": {
        "approve": {"target": "approved", "actions": ["reserve_stock"]},
        "reject": {"target": "rejected"}
      }
    },
    "approved": {"entry": ["notify"], "on": {"ship": {"target": "shipped"}}},
    "shipped": {"final": true},
    "rejected": {"final": true}
  }
}
"""

DEMO_TOML = """
name = "order"
version = 1
initial = "pending"

[states.pending.on]
approve = { target = "approved", guard = "payload.amount <= 1000", actions = ["reserve_stock"] }
approve_large = { target = "review" }
reject = { target = "rejected" }

[states.review.on]
approve = { target = "approved", actions = ["reserve_stock"] }
reject = { target = "rejected" }

[states.approved]
entry = ["notify"]
on = { ship = { target = "shipped" } }

[states.shipped]
final = true

[states.rejected]
final = true
"""

DEMO_DICT: dict[str, Any] = json.loads(DEMO_JSON)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _yaml12(text: str) -> Any:
    """Decode with the definition loader's YAML flavour (the same one load_definition uses)."""
    return yaml.load(text, Loader=definition_module._Yaml12Loader)


def _problems(raw: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(raw)
    return info.value.problems


def _load_problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.source == str(path)
    return info.value.problems


def _minimal(**states: Any) -> dict[str, Any]:
    """A definition dict with the given states (first one initial unless overridden)."""
    return {"name": "w", "version": 1, "initial": next(iter(states), ""), "states": states}


# --- loading the demo ---------------------------------------------------------


def test_demo_yaml_loads_with_expected_states() -> None:
    wf = load_definition(DEMO)
    assert isinstance(wf, Workflow)
    d = wf.definition
    assert (wf.name, wf.version) == ("order", 1)
    assert d.initial == "pending"
    assert list(d.states) == ["pending", "review", "approved", "shipped", "rejected"]
    assert set(d.states["pending"].on) == {"approve", "approve_large", "reject"}
    approve = d.states["pending"].on["approve"]
    assert approve == Transition(target="approved", guard="payload.amount <= 1000",
                                 actions=("reserve_stock",))
    assert d.states["review"].on["approve"] == Transition(target="approved",
                                                         actions=("reserve_stock",))
    assert d.states["approved"].entry == ("notify",)
    assert d.states["approved"].on == {"ship": Transition(target="shipped")}
    assert d.states["shipped"] == State(final=True)
    assert d.states["rejected"].final is True
    assert d.states["pending"].final is False
    assert wf.action_names() == {"reserve_stock", "notify"}
    assert wf.candidates("pending", "approve") == [approve]
    assert wf.candidates("pending", "ship") == []
    assert wf.guard("payload.amount <= 1000").source == "payload.amount <= 1000"


def test_demo_yaml_keeps_on_as_a_string_key() -> None:
    # Guard against the YAML 1.1 trap: plain PyYAML reads the bare key `on` as True.
    text = DEMO.read_text(encoding="utf-8")
    assert True in yaml.safe_load(text)["states"]["pending"]
    raw = _yaml12(text)
    for name, state in raw["states"].items():
        assert True not in state, name
    assert set(raw["states"]["pending"]["on"]) == {"approve", "approve_large", "reject"}
    wf = load_definition(DEMO)
    assert wf.definition.states["pending"].on  # the transitions were not lost
    assert wf.definition.states["review"].on


def test_yaml_11_booleans_stay_strings_but_true_false_are_booleans(tmp_path: Path) -> None:
    text = """\
name: w
version: 1
description: yes
initial: "off"
states:
  "off":
    on:
      yes: {target: "no"}
      off: {target: "no"}
      on: {target: "no"}
      y: {target: "no"}
  "no":
    final: true
  spare:
    final: false
"""
    # `spare` is unreachable: decode the raw structure first to check the scalars.
    raw = _yaml12(text)
    assert raw["description"] == "yes"
    assert set(raw["states"]["off"]["on"]) == {"yes", "off", "on", "y"}
    assert "on" in raw["states"]["off"]
    assert raw["states"]["no"]["final"] is True
    assert raw["states"]["spare"]["final"] is False
    for spelled in ("true", "True", "TRUE"):
        assert _yaml12(f"x: {spelled}") == {"x": True}
    for spelled in ("false", "False", "FALSE"):
        assert _yaml12(f"x: {spelled}") == {"x": False}
    for word in ("yes", "no", "on", "off", "y", "n", "Yes", "OFF"):
        assert _yaml12(f"x: {word}") == {"x": word}
    # The loader must not change PyYAML's own SafeLoader for everyone else.
    assert yaml.safe_load("x: yes") == {"x": True}

    text_ok = text.replace("  spare:\n    final: false\n", "")
    wf = load_definition(_write(tmp_path, "w.yaml", text_ok))
    d = wf.definition
    assert d.description == "yes"
    assert d.initial == "off"
    assert set(d.states["off"].on) == {"yes", "off", "on", "y"}
    assert d.states["no"].final is True


def test_final_false_and_true_parse_as_booleans(tmp_path: Path) -> None:
    text = """\
name: w
version: 1
initial: a
states:
  a: {final: false, on: {go: {target: b}}}
  b: {final: true}
"""
    d = load_definition(_write(tmp_path, "w.yaml", text)).definition
    assert d.states["a"].final is False
    assert d.states["b"].final is True


def test_yaml_final_yes_is_not_a_boolean(tmp_path: Path) -> None:
    text = "name: w\nversion: 1\ninitial: a\nstates:\n  a: {final: yes}\n"
    problems = _load_problems(_write(tmp_path, "w.yaml", text))
    assert len(problems) == 1
    loc, msg = problems[0]
    assert loc == "states.a.final"
    assert "Expected `bool`, got `str`" in msg


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_yaml_suffixes(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path, f"order{suffix}", DEMO.read_text(encoding="utf-8"))
    assert load_definition(path).definition == load_definition(DEMO).definition


def test_json_toml_and_dict_load_to_an_equal_definition(tmp_path: Path) -> None:
    from_yaml = load_definition(DEMO).definition
    from_json = load_definition(_write(tmp_path, "order.json", DEMO_JSON)).definition
    from_toml = load_definition(_write(tmp_path, "order.toml", DEMO_TOML)).definition
    from_dict = parse_definition(DEMO_DICT).definition
    assert from_json == from_yaml
    assert from_toml == from_yaml
    assert from_dict == from_yaml
    assert isinstance(from_yaml, Definition)


def test_load_definition_accepts_str_path() -> None:
    assert load_definition(str(DEMO)).definition == load_definition(DEMO).definition


def test_parse_definition_accepts_a_definition_instance() -> None:
    d = load_definition(DEMO).definition
    wf = parse_definition(d)
    assert wf.definition is d
    assert wf.guard("payload.amount <= 1000").evaluate({}, {"amount": 1}, "pending") == (True, None)


def test_parse_definition_validates_a_definition_instance() -> None:
    bad = Definition(name="w", version=1, initial="a",
                     states={"a": State(on={"go": Transition(target="nowhere")})})
    assert _problems(bad) == [("states.a.on.go.target", "unknown target state 'nowhere'")]


def test_list_of_candidates_and_internal_transitions_parse() -> None:
    raw = _minimal(
        a={"on": {
            "go": [{"target": "b", "guard": "payload.n > 1"}, {"target": "c"}],
            "poke": {"actions": ["count"]},
        }},
        b={"final": True},
        c={"final": True},
    )
    wf = parse_definition(raw)
    go = wf.definition.states["a"].on["go"]
    assert go == [Transition(target="b", guard="payload.n > 1"), Transition(target="c")]
    assert wf.candidates("a", "go") == go
    assert wf.definition.states["a"].on["poke"] == Transition(actions=("count",))
    assert wf.action_names() == {"count"}


def test_on_error_target_counts_for_reachability() -> None:
    raw = _minimal(
        a={"on": {"go": {"target": "b", "actions": ["x"], "on_error": "oops"}}},
        b={"final": True},
        oops={"final": True},
    )
    parse_definition(raw)  # no "unreachable" for oops


# --- problems -------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_location() -> None:
    raw = {
        "name": "bad name!",
        "version": 0,
        "initial": "start",
        "states": {
            "start": {
                "entry": ["a", "a"],
                "on": {
                    "go": {"target": "nowhere"},
                    "fail": {"target": "done", "on_error": "limbo"},
                    "flowrt.started": {"target": "done"},
                    "check": {"target": "done", "guard": "payload.amount <="},
                    "many": [{"target": "done"}, {"target": "void"}],
                    "none": [],
                },
            },
            "done": {"final": True, "on": {"again": {"target": "start"}}},
            "orphan": {"final": True},
        },
    }
    problems = _problems(raw)
    locations = [loc for loc, _ in problems]
    by_loc = dict(problems)
    assert by_loc["name"] == "invalid workflow name 'bad name!'"
    assert by_loc["version"] == "version must be a positive integer"
    assert by_loc["states.start.entry"] == "duplicate action 'a'"
    assert by_loc["states.start.on.go.target"] == "unknown target state 'nowhere'"
    assert by_loc["states.start.on.fail.on_error"] == "unknown target state 'limbo'"
    assert by_loc["states.start.on.flowrt.started"] == (
        "event name 'flowrt.started' is reserved for the runtime")
    assert by_loc["states.start.on.check.guard"].startswith("bad guard syntax: ")
    assert by_loc["states.start.on.many[1].target"] == "unknown target state 'void'"
    assert by_loc["states.start.on.none"] == "empty list of transitions"
    assert by_loc["states.done.on"] == "a final state cannot have transitions"
    assert by_loc["states.orphan"] == "state 'orphan' is unreachable from 'start'"
    assert len(problems) == 11
    assert len(set(locations)) == len(locations)


def test_definition_error_message_lists_problems_and_source() -> None:
    err = DefinitionError([("initial", "no initial state"), ("states", "x")], "f.yaml")
    assert isinstance(err, FlowrtError)
    assert err.retryable is False
    assert str(err) == "2 problem(s) in f.yaml:\n  initial: no initial state\n  states: x"
    assert err.source == "f.yaml"
    assert str(DefinitionError([("a", "b")])) == "1 problem(s):\n  a: b"


def test_unknown_target_state() -> None:
    raw = _minimal(a={"on": {"go": {"target": "nowhere"}}})
    assert _problems(raw) == [("states.a.on.go.target", "unknown target state 'nowhere'")]


def test_unknown_on_error_target() -> None:
    raw = _minimal(a={"on": {"go": {"target": "b", "on_error": "nowhere"}}}, b={"final": True})
    assert _problems(raw) == [("states.a.on.go.on_error", "unknown target state 'nowhere'")]


def test_unknown_target_in_a_candidate_list_is_indexed() -> None:
    raw = _minimal(a={"on": {"go": [{"target": "b", "guard": "true"}, {"target": "zz"}]}},
                   b={"final": True})
    assert _problems(raw) == [("states.a.on.go[1].target", "unknown target state 'zz'")]


@pytest.mark.parametrize("initial", ["", None])
def test_no_initial_state(initial: str | None) -> None:
    raw = _minimal(a={"final": True})
    if initial is None:
        del raw["initial"]
    else:
        raw["initial"] = initial
    assert _problems(raw) == [("initial", "no initial state")]


def test_unknown_initial_state() -> None:
    raw = _minimal(a={"final": True})
    raw["initial"] = "zz"
    assert _problems(raw) == [("initial", "unknown initial state 'zz'")]


def test_no_states() -> None:
    raw = {"name": "w", "version": 1, "initial": "a"}
    assert _problems(raw) == [("states", "a workflow needs at least one state")]


def test_unreachable_state() -> None:
    raw = _minimal(a={"on": {"go": {"target": "b"}}}, b={"final": True},
                   island={"on": {"go": {"target": "b"}}}, lost={"final": True})
    assert _problems(raw) == [
        ("states.island", "state 'island' is unreachable from 'a'"),
        ("states.lost", "state 'lost' is unreachable from 'a'"),
    ]


def test_bad_guard_syntax() -> None:
    raw = _minimal(a={"on": {"go": {"target": "b", "guard": "payload.amount <="}}},
                   b={"final": True})
    problems = _problems(raw)
    assert len(problems) == 1
    loc, msg = problems[0]
    assert loc == "states.a.on.go.guard"
    assert msg.startswith("bad guard syntax: ")
    assert "\n" not in msg


@pytest.mark.parametrize(("guard", "why"), [
    ("__import__('os').system('true')", "'__import__'"),
    ("payload.__class__.__bases__ == null", "'__class__'"),
    ("payload.n > 0 && " * 100 + "true", "a guard has at most 1000"),
])
def test_a_guard_that_tries_to_escape_is_refused_at_load(guard: str, why: str) -> None:
    raw = _minimal(a={"on": {"go": {"target": "b", "guard": guard}}}, b={"final": True})
    [(loc, msg)] = _problems(raw)
    assert loc == "states.a.on.go.guard"
    assert msg.startswith("guard not allowed: ") and why in msg


def test_reserved_event_name() -> None:
    raw = _minimal(a={"on": {"flowrt.timer": {"target": "b"}}}, b={"final": True})
    assert _problems(raw) == [
        ("states.a.on.flowrt.timer", "event name 'flowrt.timer' is reserved for the runtime")]


def test_invalid_event_and_state_names() -> None:
    raw = _minimal(a={"on": {"go now": {"target": "b c"}}}, **{"b c": {"final": True}})
    assert _problems(raw) == [
        ("states.a.on.go now", "invalid event name 'go now'"),
        ("states.b c", "invalid state name 'b c'"),
    ]


def test_final_state_with_transitions() -> None:
    raw = _minimal(a={"final": True, "on": {"go": {"target": "a"}}})
    assert _problems(raw) == [("states.a.on", "a final state cannot have transitions")]


def test_duplicate_entry_and_exit_actions() -> None:
    raw = _minimal(a={"entry": ["x", "y", "x"], "exit": ["z", "z"], "final": True})
    assert _problems(raw) == [
        ("states.a.entry", "duplicate action 'x'"),
        ("states.a.exit", "duplicate action 'z'"),
    ]


def test_wrong_type_is_reported_with_its_location() -> None:
    raw = dict(DEMO_DICT, version="x")
    assert _problems(raw) == [("version", "Expected `int`, got `str`")]


def test_wrong_type_in_a_file_is_reported_with_its_location(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("version: 1", 'version: "x"')
    assert _load_problems(_write(tmp_path, "w.yaml", text)) == [
        ("version", "Expected `int`, got `str`")]


def test_unknown_field_is_rejected() -> None:
    raw = _minimal(a={"final": True, "colour": "red"})
    problems = _problems(raw)
    assert len(problems) == 1
    assert problems[0][0] == "states.a"
    assert "unknown field `colour`" in problems[0][1]


def test_type_errors_in_several_states_are_all_reported() -> None:
    raw = dict(DEMO_DICT, version="x", states={
        **DEMO_DICT["states"],
        "pending": {"on": {"approve": {"target": 7}}},
        "shipped": {"final": "yes"},
    })
    assert sorted(_problems(raw)) == [
        ("states.pending.on.approve.target", "Expected `str | null`, got `int`"),
        ("states.shipped.final", "Expected `bool`, got `str`"),
        ("version", "Expected `int`, got `str`"),
    ]


@pytest.mark.parametrize("raw", [[1, 2], "order", None, 3])
def test_a_definition_must_be_a_mapping(raw: Any) -> None:
    assert _problems(raw) == [("$", "a definition must be a mapping")]


def test_empty_yaml_file(tmp_path: Path) -> None:
    assert _load_problems(_write(tmp_path, "w.yaml", "")) == [
        ("$", "a definition must be a mapping")]


def test_duplicate_state_name_in_yaml_names_the_line(tmp_path: Path) -> None:
    text = """\
name: w
version: 1
initial: a
states:
  a: {on: {go: {target: b}}}
  b: {final: true}
  a: {final: true}
"""
    assert _load_problems(_write(tmp_path, "w.yaml", text)) == [
        ("line 7, column 3", "duplicate name 'a'")]


def test_duplicate_key_in_a_yaml_flow_mapping(tmp_path: Path) -> None:
    text = "name: w\nversion: 1\ninitial: a\nstates:\n  a: {on: {go: {target: a}, go: {}}}\n"
    assert _load_problems(_write(tmp_path, "w.yaml", text)) == [
        ("line 5, column 29", "duplicate name 'go'")]


def test_duplicate_key_in_json(tmp_path: Path) -> None:
    text = '{"name": "w", "version": 1, "initial": "a",\n "states": {"a": {"final": true},' \
           ' "a": {"final": false}}}'
    problems = _load_problems(_write(tmp_path, "w.json", text))
    assert problems == [("JSON object", "duplicate name 'a'")]


def test_duplicate_key_in_toml(tmp_path: Path) -> None:
    text = 'name = "w"\nname = "v"\nversion = 1\n'
    problems = _load_problems(_write(tmp_path, "w.toml", text))
    assert len(problems) == 1
    assert problems[0][0] == "syntax"
    assert "line 2" in problems[0][1]


@pytest.mark.parametrize(("name", "text"), [
    ("w.yaml", "name: [unclosed\n"),
    ("w.json", '{"name": '),
    ("w.toml", "name = \n"),
])
def test_syntax_errors_are_definition_errors(tmp_path: Path, name: str, text: str) -> None:
    problems = _load_problems(_write(tmp_path, name, text))
    assert len(problems) == 1
    assert problems[0][0] == "syntax"
    assert "\n" not in problems[0][1]


def test_unsupported_file_extension(tmp_path: Path) -> None:
    path = _write(tmp_path, "order.txt", DEMO.read_text(encoding="utf-8"))
    assert _load_problems(path) == [
        ("file", "unsupported extension '.txt'; use .yaml, .json or .toml")]


def test_missing_file(tmp_path: Path) -> None:
    assert _load_problems(tmp_path / "nope.yaml") == [("file", "No such file or directory")]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.mkdir()
    problems = _load_problems(path)
    assert len(problems) == 1
    assert problems[0][0] == "file"


def test_unhashable_yaml_key_is_a_definition_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.yaml", "name: w\nversion: 1\n? [a, b]\n: 1\n")
    _load_problems(path)


# --- definition_hash --------------------------------------------------------------


def test_definition_hash_is_stable_across_formats(tmp_path: Path) -> None:
    digests = {
        definition_hash(load_definition(DEMO).definition),
        definition_hash(load_definition(_write(tmp_path, "o.json", DEMO_JSON)).definition),
        definition_hash(load_definition(_write(tmp_path, "o.toml", DEMO_TOML)).definition),
        definition_hash(parse_definition(DEMO_DICT).definition),
    }
    assert len(digests) == 1
    digest = digests.pop()
    assert len(digest) == 64
    int(digest, 16)
    assert definition_hash(load_definition(DEMO).definition) == digest  # repeatable


DEMO_CANONICAL = (
    '{"initial":"pending","name":"order","states":{'
    '"approved":{"entry":["notify"],"on":{"ship":{"target":"shipped"}}},'
    '"pending":{"on":{"approve":{"actions":["reserve_stock"],'
    '"guard":"payload.amount <= 1000","target":"approved"},'
    '"approve_large":{"target":"review"},"reject":{"target":"rejected"}}},'
    '"rejected":{"final":true},'
    '"review":{"on":{"approve":{"actions":["reserve_stock"],"target":"approved"},'
    '"reject":{"target":"rejected"}}},'
    '"shipped":{"final":true}},"version":1}'
)


def test_definition_hash_is_pinned() -> None:
    # Hashes are stored to refuse a changed body under the same version: the
    # encoding (sorted keys, defaults omitted) must not drift between releases.
    d = load_definition(DEMO).definition
    assert definition_json(d).decode() == DEMO_CANONICAL
    assert definition_hash(d) == hashlib.sha256(DEMO_CANONICAL.encode()).hexdigest()
    assert definition_hash(d) == (
        "49af8d229e65886992561c25b92e01c5a3ee1b94dd302238fad28bc3d23369ab")


def test_definition_hash_ignores_order_and_spelled_out_defaults() -> None:
    base = definition_hash(parse_definition(DEMO_DICT).definition)
    reordered = dict(reversed(list(DEMO_DICT.items())))
    reordered["states"] = dict(reversed(list(DEMO_DICT["states"].items())))
    assert definition_hash(parse_definition(reordered).definition) == base
    explicit = json.loads(DEMO_JSON)
    explicit["description"] = ""
    explicit["states"]["pending"].update(entry=[], exit=[], final=False)
    explicit["states"]["approved"]["on"]["ship"].update(guard=None, actions=[], on_error=None)
    assert definition_hash(parse_definition(explicit).definition) == base


@pytest.mark.parametrize("change", [
    lambda d: d.update(version=2),
    lambda d: d.update(description="orders"),
    lambda d: d["states"]["pending"]["on"]["approve"].update(guard="payload.amount < 1000"),
    lambda d: d["states"]["pending"]["on"]["approve"].update(actions=["reserve", "more"]),
    lambda d: d["states"]["approved"].update(entry=["notify", "log"]),
    lambda d: d["states"]["review"]["on"].update(
        approve={"target": "approved", "actions": ["reserve_stock"], "on_error": "rejected"}),
    lambda d: d["states"]["pending"]["on"].update(
        approve_large=[{"target": "review", "guard": "true"}]),
])
def test_definition_hash_changes_when_the_body_changes(change: Any) -> None:
    base = definition_hash(parse_definition(DEMO_DICT).definition)
    changed = json.loads(DEMO_JSON)
    change(changed)
    assert definition_hash(parse_definition(changed).definition) != base


def test_problems_in_a_yaml_file_carry_their_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nversion: 1\ninitial: a\nstates:\n"
                    "  a:\n    on:\n      go:\n        - {target: zzz}\n"
                    "        - {target: a, guard: 'os.getcwd() == 1'}\n")
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.problems == [
        ("states.a.on.go[0].target", "unknown target state 'zzz'"),
        ("states.a.on.go[1].guard", "guard not allowed: unknown name 'os'; a guard reads"
                                    " data, payload and state"),
    ]
    lines = str(info.value).splitlines()
    assert lines[1] == "  states.a.on.go[0].target (line 8, column 12): unknown target state 'zzz'"
    assert lines[2].startswith("  states.a.on.go[1].guard (line 9, column 23): guard not allowed")
