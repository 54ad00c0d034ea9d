"""Golden histories: real exported logs, checked in, replayed against definitions.

Like temporalio's Replayer tests: each ``*.jsonl`` here was recorded by the real API
and a real worker and exported with ``flowrt export`` (README.md says how). Each
``*.expected.json`` names the definition the log is replayed against and the
stable parts of the result. Every log is replayed twice: through the pure
``flowrt.machine.replay`` (no services), and through ``flowrt replay --log
--definition --json`` as a subprocess whose database URL points at a closed port
(the replay of a file never needs PostgreSQL).

When a test here fails after a change to the machine or to a definition, the
change breaks replay of executions that already exist: give the definition a new
version instead, or fix the machine. Never "fix" a golden log.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flowrt.definition import definition_hash, load_definition
from flowrt.machine import Replay, replay
from flowrt.replay_report import read_log, write_log
from flowrt.settings import Settings
from tests.support.procs import BIN, ROOT, settings_env

HERE = Path(__file__).resolve().parent
DEMO_ORDER = ROOT / "workers" / "demo" / "order.yaml"

# Listed, not globbed alone: a golden file that disappears must fail, not shrink the suite.
CASES = ["order_happy", "order_guard_ignored", "order_diverged", "payment_on_error",
         "payment_failed"]


def expected(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / f"{case}.expected.json").read_text())
    return data


def summarise_replay(result: Replay) -> dict[str, Any]:
    """The stable parts of a replay, from the ``Replay`` the machine returns."""
    steps = []
    for s in result.steps:
        steps.append({
            "seq": s.event.seq,
            "name": s.event.name,
            "status": s.recorded.status,
            "from_state": s.recorded.from_state,
            "to_state": s.recorded.to_state,
            "actions": [a.name for a in s.recorded.actions],
            "decision": s.decision.kind if s.decision else None,
            "replayed_to_state": s.computed.to_state if s.computed else None,
            "guards": [[g.expression, g.passed] for g in s.decision.guards] if s.decision else [],
            "matches": s.matches,
            "mismatch": s.mismatch,
        })
    return {"matches": result.matches, "blocked_at": result.blocked_at,
            "state": result.snapshot.state, "status": result.snapshot.status,
            "data": result.snapshot.data, "steps": steps}


def summarise_json(doc: dict[str, Any]) -> dict[str, Any]:
    """The same stable parts, from the output of ``flowrt replay --json``."""
    steps = []
    for s in doc["steps"]:
        replayed = s.get("replayed")
        steps.append({
            "seq": s["seq"],
            "name": s["name"],
            "status": s["status"],
            "from_state": s["recorded"]["from_state"],
            "to_state": s["recorded"]["to_state"],
            "actions": [a["name"] for a in s["actions"]],
            "decision": replayed["decision"] if replayed else None,
            "replayed_to_state": replayed["to_state"] if replayed else None,
            "guards": [[g["expression"], g["passed"]] for g in s.get("guards", [])],
            "matches": s["matches"],
            "mismatch": s["mismatch"],
        })
    return {"matches": doc["matches"], "blocked_at": doc["blocked_at"], "state": doc["state"],
            "status": doc["status"], "data": doc["data"], "steps": steps}


def stable(exp: dict[str, Any]) -> dict[str, Any]:
    return {k: exp[k] for k in ("matches", "blocked_at", "state", "status", "data", "steps")}


def closed_port_env() -> dict[str, str]:
    """An environment whose PostgreSQL and Redis URLs point at a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return settings_env(Settings(database_url=f"postgresql://flowrt@127.0.0.1:{port}/none",
                                 redis_url=f"redis://127.0.0.1:{port}/0"))


def cli_replay(log: Path, definition: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flowrt"), "replay", "--log", str(log), "--definition", str(definition),
         *extra],
        env=closed_port_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)


# --- the golden set itself -----------------------------------------------------


def test_every_golden_file_is_used() -> None:
    logs = {p.name.removesuffix(".jsonl") for p in HERE.glob("*.jsonl")}
    expectations = {p.name.removesuffix(".expected.json") for p in HERE.glob("*.expected.json")}
    assert logs == set(CASES)
    assert expectations == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_expectation_is_consistent(case: str) -> None:
    """An expected file agrees with itself: exit code, verdict and per-step verdicts."""
    exp = expected(case)
    assert exp["log"] == f"{case}.jsonl"
    assert (HERE / exp["definition"]).is_file()
    assert exp["matches"] == all(s["matches"] for s in exp["steps"])
    assert exp["exit_code"] == (0 if exp["matches"] else 1)
    assert [s["seq"] for s in exp["steps"]] == list(range(1, len(exp["steps"]) + 1))
    assert len(exp["steps"]) == len(read_log(HERE / exp["log"]))


@pytest.mark.parametrize("case", CASES)
def test_log_file_round_trips(case: str) -> None:
    """``flowrt export`` wrote these bytes; reading and writing them again changes nothing."""
    raw = (HERE / f"{case}.jsonl").read_bytes()
    assert write_log(read_log(HERE / f"{case}.jsonl")) == raw


def test_golden_order_definition_is_the_demo_definition() -> None:
    """order version 1 is immutable: the demo may not change under the same version."""
    assert (definition_hash(load_definition(HERE / "order.yaml").definition)
            == definition_hash(load_definition(DEMO_ORDER).definition)), (
        "workers/demo/order.yaml changed but kept version 1; give it a new version")


# --- pure replay -----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_pure_replay_matches_expected(case: str) -> None:
    exp = expected(case)
    result = replay(load_definition(HERE / exp["definition"]), read_log(HERE / exp["log"]))
    assert summarise_replay(result) == stable(exp)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("order_")])
def test_order_histories_replay_against_the_live_demo_definition(case: str) -> None:
    """The recorded order histories still replay the same against what workers run today."""
    exp = expected(case)
    result = replay(load_definition(DEMO_ORDER), read_log(HERE / exp["log"]))
    assert summarise_replay(result) == stable(exp)


def test_diverged_log_replays_against_the_definition_it_was_recorded_with() -> None:
    """The divergence is the definition's doing, not a broken log."""
    result = replay(load_definition(HERE / "order_approve_to_review.yaml"),
                    read_log(HERE / "order_diverged.jsonl"))
    assert result.matches
    assert [s.after.state for s in result.steps if s.after] == [
        "pending", "review", "approved", "shipped"]


def test_diverged_log_fails_against_order_and_names_the_seq() -> None:
    result = replay(load_definition(HERE / "order.yaml"), read_log(HERE / "order_diverged.jsonl"))
    assert not result.matches
    first = next(s for s in result.steps if not s.matches)
    assert first.event.seq == 2
    assert first.mismatch == "state: recorded review, replay gives approved"


@pytest.mark.parametrize("case", CASES)
def test_pure_replay_until_each_seq_is_a_prefix(case: str) -> None:
    """``until=n`` replays exactly the first n steps, with the same verdicts."""
    exp = expected(case)
    workflow = load_definition(HERE / exp["definition"])
    log = read_log(HERE / exp["log"])
    for n in range(1, len(log) + 1):
        steps = summarise_replay(replay(workflow, log, until=n))["steps"]
        assert steps == exp["steps"][:n], f"until={n}"


# --- through the CLI, without any service -------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_cli_replay_json_matches_expected(case: str) -> None:
    exp = expected(case)
    r = cli_replay(HERE / exp["log"], HERE / exp["definition"], "--json")
    assert r.returncode == exp["exit_code"], r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert summarise_json(doc) == stable(exp)


@pytest.mark.parametrize("case", CASES)
def test_cli_replay_table_verdict(case: str) -> None:
    exp = expected(case)
    r = cli_replay(HERE / exp["log"], HERE / exp["definition"])
    assert r.returncode == exp["exit_code"], r.stderr
    verdict = ("replay matches the recorded log" if exp["matches"]
               else "replay DIVERGES from the log")
    last = r.stdout.strip().splitlines()[-1]
    assert last.endswith(f"state {exp['state']}, status {exp['status']}; {verdict}"), last
    for step in exp["steps"]:
        if step["mismatch"]:
            assert f"seq {step['seq']}: {step['mismatch']}" in r.stdout


def test_cli_diverged_exits_1_and_names_the_seq() -> None:
    r = cli_replay(HERE / "order_diverged.jsonl", HERE / "order.yaml")
    assert r.returncode == 1, r.stderr
    assert "DIVERGED" in r.stdout
    assert "seq 2: state: recorded review, replay gives approved" in r.stdout


def test_cli_diverged_log_matches_its_recording_definition() -> None:
    r = cli_replay(HERE / "order_diverged.jsonl", HERE / "order_approve_to_review.yaml", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["matches"] is True
