"""``flowrt tenants`` and ``flowrt keys`` as subprocesses; the keys they print work on
the API, and revoked ones stop working."""

from __future__ import annotations

import re

import asyncpg
import pytest

from flowrt.settings import Settings
from tests.integration.test_cli import flowrt, offline_env, one_error_line
from tests.support.api import api_client, register_demo
from tests.support.procs import settings_env

KEY = re.compile(r"^frk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def _table(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.strip().splitlines()[1:]]


async def test_tenants_and_keys_lifecycle(settings: Settings) -> None:
    env = settings_env(settings)
    r = flowrt("tenants", "create", "acme", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "tenant acme: created"), r.stderr
    r = flowrt("tenants", "create", "acme", "--rate", "50", "--burst", "100", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "tenant acme: exists (limits updated)")

    r = flowrt("keys", "create", "--tenant", "acme", "--role", "reader", env=env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert KEY.fullmatch(key), r.stdout  # stdout is the key alone: `KEY=$(flowrt keys ...)`
    key_id = key.split("_")[1]
    assert f"created key {key_id} (reader) for tenant acme" in r.stderr

    listed = flowrt("keys", "list", env=env)
    assert listed.returncode == 0
    [row] = _table(listed.stdout)
    assert row[:3] == [key_id, "acme", "reader"] and row[4] == "-"
    assert key[17:] not in listed.stdout  # the secret is never shown again
    conn = await asyncpg.connect(settings.database_url)
    try:  # and never stored: the row holds a digest only
        stored = await conn.fetchval("SELECT row_to_json(k)::text FROM api_keys k")
    finally:
        await conn.close()
    assert key_id in stored and key not in stored and key[17:] not in stored
    tenants = flowrt("tenants", "list", env=env)
    assert [t[:4] for t in _table(tenants.stdout)] == [["acme", "50", "100", "1"]]

    await register_demo(settings)
    async with api_client(settings, key=key) as client:
        assert (await client.get("/v1/executions")).status_code == 200
        assert (await client.post("/v1/executions",
                                  json={"workflow": "order"})).status_code == 403

    r = flowrt("keys", "revoke", key_id, env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"key {key_id}: revoked")
    r = flowrt("keys", "revoke", key_id, env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"key {key_id}: was already revoked")
    [row] = _table(flowrt("keys", "list", "--tenant", "acme", env=env).stdout)
    assert row[4] != "-"
    assert _table(flowrt("keys", "list", "--tenant", "globex", env=env).stdout) == []
    async with api_client(settings, key=key) as client:
        assert (await client.get("/v1/executions")).status_code == 401


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["keys", "create", "--tenant", "nosuch"], 2, "tenant 'nosuch' does not exist"),
    (["keys", "revoke", "0123456789ab"], 2, "no key with id '0123456789ab'"),
    (["tenants", "create", "bad name"], 1, "tenant 'bad name': use 1-64 letters"),
    (["tenants", "create", "-x"], 2, None),  # argparse: an option, not a name
])
def test_bad_tenant_and_key_commands_say_so_in_one_line(settings: Settings, argv: list[str],
                                                        code: int, message: str | None) -> None:
    r = flowrt(*argv, env=settings_env(settings))
    assert r.returncode == code, r.stderr
    if message is not None:
        assert message in one_error_line(r)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("argv", "usage"), [
    (["keys", "create"], "the following arguments are required: --tenant"),
    (["keys", "create", "--tenant", "acme", "--role", "boss"], "invalid choice: 'boss'"),
    (["keys", "revoke"], "the following arguments are required: KEY_ID"),
    (["tenants", "create", "acme", "--rate", "0"], "must be greater than 0"),
    (["tenants", "create", "acme", "--burst", "1.5"], "expected a whole number above 0"),
    (["tenants"], "the following arguments are required: ACTION"),
    (["keys", "rotate"], "invalid choice: 'rotate'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2(argv: list[str], usage: str) -> None:
    r = flowrt(*argv, env=offline_env())
    assert r.returncode == 2
    assert usage in r.stderr and "Traceback" not in r.stderr


def test_keys_commands_with_postgres_unreachable_are_one_line() -> None:
    env = offline_env()
    # a password in the URL is never printed
    env["FLOWRT_DATABASE_URL"] = env["FLOWRT_DATABASE_URL"].replace(
        "flowrt@", "flowrt:s3cret-pw@")
    for argv in (["tenants", "list"], ["keys", "list"],
                 ["keys", "create", "--tenant", "acme"], ["keys", "revoke", "abc"],
                 ["tenants", "create", "acme"]):
        r = flowrt(*argv, env=env)
        assert r.returncode == 1, argv
        assert "PostgreSQL unavailable" in one_error_line(r)
        assert r.stdout == "", argv  # no table header before the failure
        assert "s3cret-pw" not in r.stderr + r.stdout


async def test_replay_of_another_tenants_execution_is_not_found(settings: Settings) -> None:
    await register_demo(settings)
    async with api_client(settings) as client:  # tenant "default"
        r = await client.post("/v1/executions", json={"workflow": "order",
                                                      "execution_id": "x1"})
        assert r.status_code == 202
    env = settings_env(settings)
    assert flowrt("export", "x1", env=env).returncode == 0
    for argv in (["replay", "x1", "--tenant", "globex"], ["export", "x1", "--tenant", "globex"]):
        r = flowrt(*argv, env=env)
        assert r.returncode == 2
        assert "'x1' does not exist" in one_error_line(r)
