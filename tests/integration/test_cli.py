"""The ``flowrt`` and ``flowrt-worker`` commands as subprocesses, against the real services.

Every command runs as a child process with the environment ``settings_env`` builds
(this test's database and Redis prefix), from the repository root, with a timeout.
Error paths check what a person sees: the exit code, one ``flowrt: error:`` line on
stderr, and no traceback unless ``--debug`` asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

import workers.demo as demo
from flowrt.definition import load_definition
from flowrt.settings import Settings
from flowrt.store.migrate import migrations
from tests.conftest import free_port, with_database
from tests.support.api import api_client, register_demo
from tests.support.keys import bearer, issue_key
from tests.support.procs import BIN, ROOT, settings_env
from tests.support.workerkit import processed, running_worker

FLOWRT = str(BIN / "flowrt")
FLOWRT_WORKER = str(BIN / "flowrt-worker")
DEMO_YAML = ROOT / "workers" / "demo" / "order.yaml"
TIMEOUT = 60


# --- helpers -------------------------------------------------------------------------


def run(argv: list[str], env: dict[str, str], timeout: float = TIMEOUT
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def flowrt(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([FLOWRT, *args], env)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline_env(**extra: str) -> dict[str, str]:
    """Settings whose PostgreSQL and Redis are a closed port: proves a command needs neither."""
    port = closed_port()
    s = Settings(database_url=f"postgresql://flowrt@127.0.0.1:{port}/none",
                 redis_url=f"redis://127.0.0.1:{port}/0")
    return settings_env(s, **extra)


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """Assert stderr is exactly one ``flowrt: error:`` line without a traceback; return it."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("flowrt: error: "), lines[0]
    return lines[0]


def rows(table: str) -> list[list[str]]:
    """The data rows of a replay table, split on the two-space column gaps."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()
            if re.match(r"^\d+\s", line)]


def verdict_line(table: str) -> str:
    return table.strip().splitlines()[-1]


# --- version and help ---------------------------------------------------------------


def test_version() -> None:
    r = flowrt("--version", env=offline_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "flowrt 0.1.0\n"


HELP = [
    ([], ["migrate", "api", "worker", "workflows", "replay", "export", "doctor", "dev",
          "--version", "--debug", "FLOWRT_"]),
    (["migrate"], ["--database-url", "--sql-dir"]),
    (["api"], ["--database-url", "--redis-url", "--host", "--port"]),
    (["worker"], ["--app", "--database-url", "--redis-url", "--metrics-port", "--concurrency"]),
    (["workflows"], ["apply", "list"]),
    (["workflows", "apply"], ["FILE", "--database-url"]),
    (["workflows", "list"], ["--database-url"]),
    (["replay"], ["EXECUTION_ID", "--until", "--json", "--definition", "--log",
                  "--database-url", "Exit 0"]),
    (["export"], ["EXECUTION_ID", "--database-url"]),
    (["doctor"], ["--behind", "--unpublished", "--json", "--database-url", "--redis-url",
                  "Exit 0"]),
    (["dev"], ["--app", "--workers", "--port", "--database-url", "--redis-url"]),
]


@pytest.mark.parametrize(("command", "flags"), HELP, ids=lambda v: " ".join(v) or "flowrt")
def test_help(command: list[str], flags: list[str]) -> None:
    r = flowrt(*command, "--help", env=offline_env())
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith(f"usage: {' '.join(['flowrt', *command])}")
    for flag in flags:
        assert flag in r.stdout, f"{flag!r} missing from `flowrt {' '.join(command)} --help`"


def test_worker_command_help() -> None:
    r = run([FLOWRT_WORKER, "--help"], offline_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: flowrt-worker")
    for flag in ("--app", "--debug", "--database-url", "--redis-url", "--metrics-port",
                 "--concurrency"):
        assert flag in r.stdout


def test_no_command_is_a_usage_error() -> None:
    r = flowrt(env=offline_env())
    assert r.returncode == 2
    assert "usage: flowrt" in r.stderr


# --- migrate ---------------------------------------------------------------------------


def test_migrate_up_to_date(settings: Settings) -> None:
    r = flowrt("migrate", env=settings_env(settings))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "database is up to date\n"


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    name = f"flowrt_cli_empty_{os.getpid()}_{os.urandom(3).hex()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(pg_server_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("command", [["workflows", "list"], ["replay", "some-id"], ["doctor"]],
                         ids=" ".join)
def test_a_database_not_migrated_says_so_in_one_line(empty_database: str,
                                                     command: list[str]) -> None:
    r = flowrt(*command, env=settings_env(Settings(database_url=empty_database)))
    assert r.returncode == 1
    assert "not migrated" in one_error_line(r) and "flowrt migrate" in r.stderr


def test_migrate_fresh_database(empty_database: str) -> None:
    env = settings_env(Settings(database_url=empty_database))
    expected = migrations()
    assert expected, "no migrations found in sql/"
    r = flowrt("migrate", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"applied {len(expected)} migration(s)\n"
    assert r.stderr.splitlines() == [f"applying {path.name}" for _v, _n, path in expected]

    async def applied() -> list[int]:
        conn = await asyncpg.connect(empty_database)
        try:
            return [r["version"] for r in await conn.fetch("SELECT version FROM flowrt_migrations")]
        finally:
            await conn.close()

    assert sorted(asyncio.run(applied())) == [version for version, _n, _p in expected]
    again = flowrt("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "database is up to date\n"


# --- workflows apply / list ---------------------------------------------------------------


def changed_body(tmp_path: Path) -> Path:
    """The demo definition with a different body under the same name and version."""
    text = DEMO_YAML.read_text()
    changed = text.replace("approve_large: {target: review}",
                           "approve_large: {target: review, actions: [notify]}")
    assert changed != text
    path = tmp_path / "order.yaml"
    path.write_text(changed)
    return path


def test_workflows_apply_registers_then_unchanged_and_lists(settings: Settings) -> None:
    env = settings_env(settings)
    empty = flowrt("workflows", "list", env=env)
    assert empty.returncode == 0 and empty.stdout == "", empty.stderr
    first = flowrt("workflows", "apply", str(DEMO_YAML), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "order version 1: registered\n"
    again = flowrt("workflows", "apply", str(DEMO_YAML), env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "order version 1: unchanged\n"
    listed = flowrt("workflows", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 1
    name, version, created = lines[0].split("\t")
    assert (name, version) == ("order", "1")
    assert re.match(r"^\d{4}-\d\d-\d\dT", created), created


def test_workflows_apply_same_definition_as_json_is_unchanged(settings: Settings,
                                                              tmp_path: Path) -> None:
    """Identity is the definition, not the file format it came in."""
    env = settings_env(settings)
    assert flowrt("workflows", "apply", str(DEMO_YAML), env=env).returncode == 0
    as_json = tmp_path / "order.json"
    as_json.write_bytes(msgspec.json.encode(load_definition(DEMO_YAML).definition))
    r = flowrt("workflows", "apply", str(as_json), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "order version 1: unchanged\n"


def test_workflows_apply_changed_body_same_version_is_refused(settings: Settings,
                                                              tmp_path: Path) -> None:
    env = settings_env(settings)
    assert flowrt("workflows", "apply", str(DEMO_YAML), env=env).returncode == 0
    r = flowrt("workflows", "apply", str(changed_body(tmp_path)), env=env)
    assert r.returncode == 1
    line = one_error_line(r)
    assert "'order' version 1" in line
    assert "immutable" in line
    assert r.stdout == ""
    # nothing changed: still one registered definition
    listed = flowrt("workflows", "list", env=env)
    assert len(listed.stdout.splitlines()) == 1


def test_workflows_apply_conflict_with_debug_shows_traceback(settings: Settings,
                                                             tmp_path: Path) -> None:
    env = settings_env(settings)
    assert flowrt("workflows", "apply", str(DEMO_YAML), env=env).returncode == 0
    r = flowrt("--debug", "workflows", "apply", str(changed_body(tmp_path)), env=env)
    assert r.returncode != 0
    assert "Traceback" in r.stderr
    assert "DefinitionConflict" in r.stderr
    assert "immutable" in r.stderr


BAD_DEFINITIONS = [
    ("bad.yaml",
     "name: bad\nversion: 0\ninitial: nowhere\nstates:\n"
     "  a: {on: {go: {target: zzz, guard: 'payload.x <'}}}\n",
     ["version (line 2, column 1): version must be a positive integer",
      "initial (line 3, column 1): unknown initial state 'nowhere'",
      "states.a.on.go.target (line 5, column 17): unknown target state 'zzz'",
      "states.a.on.go.guard (line 5, column 30): bad guard syntax"]),
    ("dup.yaml", "name: x\nversion: 1\nname: y\n",
     ["line 3, column 1: duplicate name 'name'"]),
    ("typed.yaml", "name: x\nversion: one\ninitial: a\nstates: {a: {final: true}}\n",
     ["version (line 2, column 1): Expected `int`, got `str`"]),
    ("typed.json", '{"name": "x", "version": "one", "initial": "a", "states": {}}',
     ["version: Expected `int`, got `str`"]),  # JSON has no positions to give
    ("syntax.yaml", "name: x\nversion: [1\n",
     ["syntax: line 3, column 1: expected ',' or ']', but got '<stream end>'"]),
    ("syntax.json", '{"name": "x",\n "version": }', ["syntax: line 2, column 13: Expecting value"]),
    ("syntax.toml", 'name = "x"\nversion = \n', ["syntax: Invalid value (at line 2, column 11)"]),
    ("def.txt", "name: x\n", ["file: unsupported extension '.txt'"]),
]


@pytest.mark.parametrize(("filename", "text", "problems"), BAD_DEFINITIONS,
                         ids=[b[0] for b in BAD_DEFINITIONS])
def test_workflows_apply_invalid_definition_lists_problems(tmp_path: Path, filename: str,
                                                           text: str,
                                                           problems: list[str]) -> None:
    """Validated before connecting: the database is a closed port here."""
    path = tmp_path / filename
    path.write_text(text)
    r = flowrt("workflows", "apply", str(path), env=offline_env())
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    head, *listed = r.stderr.strip().splitlines()
    assert head == f"flowrt: error: {len(problems)} problem(s) in {path}:"
    assert len(listed) == len(problems), r.stderr
    for line, problem in zip(listed, problems, strict=True):
        assert line.startswith(f"  {problem}"), (line, problem)
    assert r.stdout == ""


def test_workflows_apply_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    r = flowrt("workflows", "apply", str(missing), env=offline_env())
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"flowrt: error: 1 problem(s) in {missing}:",
                                     "  file: No such file or directory"]


def test_workflows_apply_registers_nothing_when_one_file_is_invalid(settings: Settings,
                                                                    tmp_path: Path) -> None:
    env = settings_env(settings)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\n")
    r = flowrt("workflows", "apply", str(DEMO_YAML), str(bad), env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"in {bad}" in r.stderr
    assert flowrt("workflows", "list", env=env).stdout == ""


# --- settings and connection errors ----------------------------------------------------


SETTINGS_ERRORS = [
    ("FLOWRT_LOCK_TTL", "abc"),
    ("FLOWRT_DATABASE_URL", "mysql://x"),
    ("FLOWRT_REDIS_URL", "http://x"),
    ("FLOWRT_CONCURRENCY", "0"),
    ("FLOWRT_CONCURRENCY", "1.5"),
    ("FLOWRT_DB_TIMEOUT", "-1"),
    ("FLOWRT_LOG_LEVEL", "loud"),
    ("FLOWRT_PORT", "70000"),
    ("FLOWRT_TENANT", "a b"),
]


@pytest.mark.parametrize(("var", "value"), SETTINGS_ERRORS,
                         ids=[f"{v}={x}" for v, x in SETTINGS_ERRORS])
def test_invalid_setting_names_the_variable(var: str, value: str) -> None:
    r = flowrt("migrate", env=offline_env(**{var: value}))
    assert r.returncode == 1
    assert var in one_error_line(r)
    assert r.stdout == ""


def test_invalid_setting_in_the_worker_command() -> None:
    r = run([FLOWRT_WORKER, "--app", "workers.demo:app"], offline_env(FLOWRT_LOCK_TTL="abc"))
    assert r.returncode == 1
    assert "FLOWRT_LOCK_TTL" in one_error_line(r)


def test_invalid_database_url_does_not_print_the_password() -> None:
    r = flowrt("migrate", env=offline_env(FLOWRT_DATABASE_URL="mysql://flowrt:s3cret@db/x"))
    assert r.returncode == 1
    line = one_error_line(r)
    assert "FLOWRT_DATABASE_URL" in line
    assert "s3cret" not in r.stderr


def test_invalid_flag_names_the_flag() -> None:
    r = flowrt("api", "--port", "0", env=offline_env())
    assert r.returncode == 1
    assert "--port" in one_error_line(r)


@pytest.mark.parametrize("command", [
    ["migrate"], ["workflows", "list"], ["workflows", "apply", str(DEMO_YAML)],
    ["replay", "some-id"], ["export", "some-id"], ["doctor"], ["doctor", "--json"],
], ids=" ".join)
def test_postgres_unreachable_is_one_line(command: list[str]) -> None:
    r = flowrt(*command, env=offline_env())
    assert r.returncode == 1
    assert "PostgreSQL unavailable" in one_error_line(r)
    assert r.stdout == ""


# --- flowrt-worker --app ------------------------------------------------------------------


BAD_APPS = [
    ("nope.module:app", "cannot import 'nope.module'"),
    ("workers.demo", "--app must look like 'package.module:attribute', got 'workers.demo'"),
    ("workers.demo:", "--app must look like 'package.module:attribute'"),
    (":app", "--app must look like 'package.module:attribute'"),
    ("workers.demo:nope", "'workers.demo:nope' is not a flowrt.App"),
    ("workers.demo:reserve_stock", "is not a flowrt.App"),
]


@pytest.mark.parametrize(("target", "message"), BAD_APPS, ids=[b[0] for b in BAD_APPS])
@pytest.mark.parametrize("argv", [[FLOWRT_WORKER], [FLOWRT, "worker"]],
                         ids=["flowrt-worker", "flowrt worker"])
def test_worker_bad_app_exits_2(argv: list[str], target: str, message: str) -> None:
    r = run([*argv, "--app", target], offline_env())
    assert r.returncode == 2
    assert message in one_error_line(r)
    assert r.stdout == ""


# --- replay and export ----------------------------------------------------------------------


@pytest.fixture
async def order_execution(settings: Settings) -> AsyncIterator[str]:
    """An order run by a real worker: start, approve {amount: 50}, ship."""
    async with running_worker(settings, demo.app), api_client(settings) as client:
        r = await client.post("/v1/executions",
                              json={"workflow": "order", "input": {"sku": "A-1"}})
        assert r.status_code == 202, r.text
        execution_id: str = r.json()["execution_id"]
        for name, payload in (("approve", {"amount": 50}), ("ship", {})):
            r = await client.post(f"/v1/executions/{execution_id}/events",
                                  json={"name": name, "payload": payload})
            assert r.status_code == 202, r.text
        final = await processed(client, execution_id, 3)
        assert (final["state"], final["status"]) == ("shipped", "completed")
    yield execution_id


def review_definition(tmp_path: Path) -> Path:
    """The demo definition with approve going to review: same name and version."""
    text = DEMO_YAML.read_text()
    changed = text.replace("approve: {target: approved, guard",
                           "approve: {target: review, guard")
    assert changed != text
    path = tmp_path / "order_review.yaml"
    path.write_text(changed)
    return path


async def test_replay_table(settings: Settings, order_execution: str) -> None:
    r = flowrt("replay", order_execution, env=settings_env(settings))
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # not a TTY: no colour
    assert r.stdout.splitlines()[0].split() == ["SEQ", "EVENT", "STATUS", "STATE", "GUARDS",
                                                "ACTIONS", "REPLAY"]
    table = rows(r.stdout)
    assert [(row[0], row[1]) for row in table] == [
        ("1", "flowrt.started"), ("2", "approve"), ("3", "ship")]
    assert table[0] == ["1", "flowrt.started", "completed", "- -> pending", "-", "-", "match"]
    assert table[1] == ["2", "approve", "completed", "pending -> approved",
                        "payload.amount <= 1000=true", "reserve_stock:ok, notify:ok", "match"]
    assert table[2] == ["3", "ship", "completed", "approved -> shipped", "-", "-", "match"]
    assert verdict_line(r.stdout) == (f"{order_execution}: state shipped, status completed;"
                                      " replay matches the recorded log")


async def test_replay_json(settings: Settings, order_execution: str) -> None:
    r = flowrt("replay", "--json", order_execution, env=settings_env(settings))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["execution_id"] == order_execution
    assert doc["matches"] is True
    assert doc["blocked_at"] is None
    assert (doc["state"], doc["status"]) == ("shipped", "completed")
    assert doc["data"] == {"sku": "A-1", "reserved": True, "notified": True}
    steps = doc["steps"]
    assert [(s["seq"], s["name"], s["status"], s["matches"], s["mismatch"]) for s in steps] == [
        (1, "flowrt.started", "completed", True, None),
        (2, "approve", "completed", True, None),
        (3, "ship", "completed", True, None)]
    assert [(s["recorded"]["from_state"], s["recorded"]["to_state"]) for s in steps] == [
        (None, "pending"), ("pending", "approved"), ("approved", "shipped")]
    assert [(s["replayed"]["from_state"], s["replayed"]["to_state"], s["replayed"]["decision"])
            for s in steps] == [(None, "pending", "transition"),
                                ("pending", "approved", "transition"),
                                ("approved", "shipped", "transition")]
    assert steps[1]["guards"] == [{"expression": "payload.amount <= 1000", "passed": True}]
    assert steps[1]["actions"] == [
        {"name": "reserve_stock", "ok": True, "result": {"reserved": True}},
        {"name": "notify", "ok": True, "result": {"notified": True}}]
    assert all(isinstance(s["event_id"], str) and s["event_id"] for s in steps)


async def test_replay_until(settings: Settings, order_execution: str) -> None:
    env = settings_env(settings)
    r = flowrt("replay", "--until", "2", order_execution, env=env)
    assert r.returncode == 0, r.stderr
    assert [row[0] for row in rows(r.stdout)] == ["1", "2"]
    assert verdict_line(r.stdout) == (f"{order_execution}: state approved, status running;"
                                      " replay matches the recorded log")
    j = flowrt("replay", "--until", "2", "--json", order_execution, env=env)
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert [s["seq"] for s in doc["steps"]] == [1, 2]
    assert (doc["state"], doc["status"]) == ("approved", "running")
    assert doc["data"] == {"sku": "A-1", "reserved": True, "notified": True}


async def test_replay_unknown_execution_exits_2(settings: Settings) -> None:
    env = settings_env(settings)
    r = flowrt("replay", "no-such-id", env=env)
    assert r.returncode == 2
    assert "'no-such-id' does not exist" in one_error_line(r)
    e = flowrt("export", "no-such-id", env=env)
    assert e.returncode == 2
    assert "'no-such-id' does not exist" in one_error_line(e)
    assert e.stdout == ""


async def test_replay_against_a_changed_definition_diverges(settings: Settings,
                                                            order_execution: str,
                                                            tmp_path: Path) -> None:
    r = flowrt("replay", "--definition", str(review_definition(tmp_path)), order_execution,
               env=settings_env(settings))
    assert r.returncode == 1, r.stderr
    table = rows(r.stdout)
    assert [row[-1] for row in table] == ["match", "DIVERGED", "DIVERGED"]
    assert "seq 2: state: recorded approved, replay gives review" in r.stdout.splitlines()
    assert "seq 3: status: recorded completed, replay gives ignored" in r.stdout.splitlines()
    assert verdict_line(r.stdout).endswith("replay DIVERGES from the log")
    j = flowrt("replay", "--json", "--definition", str(review_definition(tmp_path)),
               order_execution, env=settings_env(settings))
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["matches"] is False
    assert doc["steps"][1]["mismatch"] == "state: recorded approved, replay gives review"


async def test_replay_table_state_column_is_consistent_when_diverged(
        settings: Settings, order_execution: str, tmp_path: Path) -> None:
    r = flowrt("replay", "--definition", str(review_definition(tmp_path)), order_execution,
               env=settings_env(settings))
    assert r.returncode == 1
    ship = rows(r.stdout)[2]
    assert ship[1] == "ship"
    # seq 2's row shows what was recorded (pending -> approved); so must seq 3's:
    # recorded approved -> shipped (the replay, review -> review ignored, is in the
    # mismatch line). Today it prints "review -> shipped".
    assert ship[3] == "approved -> shipped", ship


async def test_export_then_replay_log_without_any_database(settings: Settings,
                                                           order_execution: str,
                                                           tmp_path: Path) -> None:
    env = settings_env(settings)
    exported = flowrt("export", order_execution, env=env)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(x["event"]["seq"], x["event"]["name"], x["outcome"]["status"]) for x in records] == [
        (1, "flowrt.started", "completed"), (2, "approve", "completed"),
        (3, "ship", "completed")]
    assert records[1]["event"]["payload"] == {"amount": 50}
    log = tmp_path / "order.jsonl"
    log.write_text(exported.stdout)

    offline = offline_env()
    r = flowrt("replay", "--log", str(log), "--definition", str(DEMO_YAML), env=offline)
    assert r.returncode == 0, r.stderr
    assert verdict_line(r.stdout) == (f"{log}: state shipped, status completed;"
                                      " replay matches the recorded log")
    from_file = flowrt("replay", "--json", "--log", str(log), "--definition", str(DEMO_YAML),
                       env=offline)
    from_db = flowrt("replay", "--json", order_execution, env=env)
    assert from_file.returncode == 0 and from_db.returncode == 0
    a, b = json.loads(from_file.stdout), json.loads(from_db.stdout)
    assert a.pop("execution_id") == str(log)
    assert b.pop("execution_id") == order_execution
    assert a == b
    # and a log that no longer fits the definition diverges offline too
    d = flowrt("replay", "--log", str(log), "--definition", str(review_definition(tmp_path)),
               env=offline)
    assert d.returncode == 1
    assert "seq 2: state: recorded approved, replay gives review" in d.stdout


def test_replay_log_needs_definition(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    log.write_text("")
    r = flowrt("replay", "--log", str(log), env=offline_env())
    assert r.returncode == 2
    assert "--definition" in one_error_line(r)
    assert r.stdout == ""


def test_replay_needs_an_execution_or_a_log() -> None:
    r = flowrt("replay", env=offline_env())
    assert r.returncode == 2
    assert "EXECUTION_ID" in one_error_line(r)


@pytest.mark.parametrize("content", [None, "not json\n", '{"event": {}}\n'],
                         ids=["missing", "garbage", "wrong-shape"])
def test_replay_unreadable_log_is_one_line(tmp_path: Path, content: str | None) -> None:
    log = tmp_path / "log.jsonl"
    if content is not None:
        log.write_text(content)
    r = flowrt("replay", "--log", str(log), "--definition", str(DEMO_YAML), env=offline_env())
    assert r.returncode == 1
    one_error_line(r)
    assert r.stdout == ""


async def test_replay_of_unprocessed_execution_shows_waiting(settings: Settings) -> None:
    """No worker: the started event is pending, replay stops there and says so."""
    await register_demo(settings)
    async with api_client(settings) as client:
        r = await client.post("/v1/executions", json={"workflow": "order", "input": {}})
        assert r.status_code == 202, r.text
        execution_id = r.json()["execution_id"]
    r2 = flowrt("replay", execution_id, env=settings_env(settings))
    assert r2.returncode == 0, r2.stderr
    assert rows(r2.stdout) == [["1", "flowrt.started", "pending", "-", "-", "-", "waiting"]]
    assert verdict_line(r2.stdout).endswith("; blocked at seq 1")


# --- api and dev ------------------------------------------------------------------------------


def test_api_port_taken(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = flowrt("api", "--port", str(port), env=settings_env(settings))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(port) in lines[0]


def test_api_port_taken_uses_the_cli_error(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = flowrt("api", "--port", str(port), env=settings_env(settings))
    assert r.returncode == 1
    line = one_error_line(r)
    assert f"127.0.0.1:{port}" in line
    assert "FLOWRT_PORT" in line


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_dev_with_given_services_runs_the_stack_and_stops_on_sigterm(settings: Settings,
                                                                    tmp_path: Path) -> None:
    """`flowrt dev` with FLOWRT_DATABASE_URL / FLOWRT_REDIS_URL set uses them (no private
    servers): the API answers, the demo workflow is processed, SIGTERM stops it all, exit 0.
    (tests/e2e/test_dev.py covers the private servers.)"""
    port, metrics = free_port(), free_port()
    env = settings_env(replace(settings, port=port, metrics_port=metrics))
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([FLOWRT, "dev", "--workers", "1",
                                 "--data-dir", str(tmp_path / "data")],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while "flowrt is running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        children = _children(proc.pid)
        assert len(children) == 2, children  # the API and one worker
        text = log.read_text(errors="replace")
        assert "(private)" not in text
        assert not (tmp_path / "data").exists()
        api = f"http://127.0.0.1:{port}"
        auth = bearer(asyncio.run(issue_key(settings.database_url)))
        r = httpx.post(f"{api}/v1/executions", json={"workflow": "order", "input": {}},
                       headers=auth, timeout=10)
        assert r.status_code == 202, r.text
        execution_id = r.json()["execution_id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{api}/v1/executions/{execution_id}", headers=auth,
                        timeout=5).json()["state"] is None:
            assert time.monotonic() < deadline, "the dev worker did not process the start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]
        assert log.read_text(errors="replace").rstrip().endswith("flowrt dev: stopped")
        for child in children:
            assert not Path(f"/proc/{child}").exists() or \
                "zombie" in Path(f"/proc/{child}/status").read_text().lower(), child
    finally:
        # Only what this test started: dev itself, then (if it did not stop them) the
        # children it reported, by pid, while they are still flowrt processes.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            for pid in children:
                with contextlib.suppress(OSError):
                    if b"flowrt" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)


# --- doctor -------------------------------------------------------------------------------


def _stuck(settings: Settings) -> None:
    """A lagging execution (its next event appended two minutes ago) and a dead event."""
    from tests.support.stuck import add_execution

    async def write() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await add_execution(conn, "lagging-1", events=3, processed=1, age=125)
            await add_execution(conn, "poisoned-1", events=2, processed=1, dead_seq=2,
                                error="delivered 6 times (max 5) and attempted 5+ times")
        finally:
            await conn.close()

    asyncio.run(write())


def check_rows(text: str) -> dict[str, list[str]]:
    """The summary table of `flowrt doctor`, by check name."""
    lines = text.split("\n\n")[0].splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["CHECK", "COUNT", "STATUS", "RULE"], lines[0]
    return {row[0]: row[1:] for row in (re.split(r"\s{2,}", line) for line in lines[1:])}


def test_doctor_healthy_exits_0(settings: Settings) -> None:
    r = flowrt("doctor", env=settings_env(settings))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    checks = check_rows(r.stdout)
    assert list(checks) == ["stuck executions", "dead events", "unpublished events",
                            "stale pending hints", "idle consumers"]
    assert all(row[:2] == ["0", "ok"] for row in checks.values()), checks
    assert checks["stale pending hints"][2].endswith("idle over 2s")  # FLOWRT_CLAIM_TIMEOUT
    assert r.stdout.splitlines()[-1] == "flowrt doctor: healthy"


def test_doctor_something_stuck_exits_1_with_a_readable_report(settings: Settings) -> None:
    _stuck(settings)
    r = flowrt("doctor", env=settings_env(settings))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == ""
    checks = check_rows(r.stdout)
    assert checks["stuck executions"] == ["1", "STUCK",
                                          "not blocked, next event waiting over 60s"]
    assert checks["dead events"][:2] == ["1", "STUCK"]
    assert checks["unpublished events"][:2] == ["0", "ok"]
    sections = r.stdout.split("\n\n")
    stuck = sections[1].splitlines()
    assert stuck[0] == "stuck executions (oldest first): 1"
    assert re.split(r"\s{2,}", stuck[1].strip()) == [
        "TENANT", "EXECUTION", "WORKFLOW", "PROCESSED", "LAST", "WAITING"]
    *row, waiting = re.split(r"\s{2,}", stuck[2].strip())
    assert row == ["default", "lagging-1", "wf", "1", "3"]
    assert re.fullmatch(r"2m0[5-9]s", waiting), waiting  # appended 125 s before the run
    dead = sections[2].splitlines()
    assert dead[0] == "dead events (oldest first): 1"
    row = re.split(r"\s{2,}", dead[2].strip())
    assert row[:4] == ["default", "poisoned-1", "2", "tick"]
    assert row[-1] == "delivered 6 times (max 5) and attempted 5+ times"
    assert r.stdout.splitlines()[-1] == "flowrt doctor: 2 problem(s): stuck executions, dead events"

    # a longer --behind: the lagging execution is not stuck yet; the dead event still is
    r = flowrt("doctor", "--behind", "600", env=settings_env(settings))
    assert r.returncode == 1
    assert check_rows(r.stdout)["stuck executions"][:2] == ["0", "ok"]
    assert r.stdout.splitlines()[-1] == "flowrt doctor: 1 problem(s): dead events"


def test_doctor_json(settings: Settings) -> None:
    env = settings_env(settings)
    healthy = flowrt("doctor", "--json", env=env)
    assert healthy.returncode == 0, healthy.stderr
    doc = json.loads(healthy.stdout)
    assert (doc["healthy"], doc["problems"]) == (True, [])
    assert doc["thresholds"] == {"behind": 60.0, "unpublished": 60.0, "idle": 2.0}

    _stuck(settings)
    r = flowrt("doctor", "--json", "--unpublished", "30", env=env)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["healthy"], doc["problems"]) == (False, ["stuck_executions", "dead_events"])
    assert doc["thresholds"]["unpublished"] == 30.0
    stuck = doc["postgres"]["stuck_executions"]
    assert stuck["count"] == 1
    assert stuck["examples"][0]["execution_id"] == "lagging-1"
    assert 124 < stuck["examples"][0]["waiting"] < 600
    [dead] = doc["postgres"]["dead_events"]["examples"]
    assert (dead["execution_id"], dead["seq"]) == ("poisoned-1", 2)
    assert doc["redis"]["stale_pending_hints"] == {"count": 0, "examples": []}
    assert doc["redis_error"] is None


def test_doctor_redis_unreachable_reports_postgres_and_exits_1(settings: Settings) -> None:
    env = settings_env(settings, FLOWRT_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    r = flowrt("doctor", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    checks = check_rows(r.stdout)
    assert checks["dead events"][:2] == ["0", "ok"]
    assert checks["stale pending hints"][:2] == ["-", "UNREACHABLE"]
    assert checks["idle consumers"][:2] == ["-", "UNREACHABLE"]
    assert any(line.startswith("redis: unreachable: Redis unavailable")
               for line in r.stdout.splitlines())
    assert r.stdout.splitlines()[-1] == "flowrt doctor: 1 problem(s): redis unreachable"
    j = flowrt("doctor", "--json", env=env)
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["redis"] is None and "Redis unavailable" in doc["redis_error"]
    assert doc["problems"] == ["redis_unreachable"]


def test_doctor_postgres_unreachable_masks_the_password() -> None:
    port = closed_port()
    r = flowrt("doctor", env=offline_env(
        FLOWRT_DATABASE_URL=f"postgresql://flowrt:s3cret@127.0.0.1:{port}/none"))
    assert r.returncode == 1
    assert "PostgreSQL unavailable" in one_error_line(r)
    assert "s3cret" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_doctor_bad_threshold_is_a_usage_error(value: str) -> None:
    r = flowrt("doctor", "--behind", value, env=offline_env())
    assert r.returncode == 2
    assert "--behind" in r.stderr
    assert "Traceback" not in r.stderr
