"""The key format, digests and roles (pure)."""

from __future__ import annotations

import pytest

from flowrt.apikeys import ROLES, TENANT, allows, digest, matches, new_key, parse_key


def test_a_new_key_parses_to_its_id_and_is_random() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key_id, key in keys:
        assert parse_key(key) == key_id
        assert key.startswith(f"frk_{key_id}_") and len(key) == 4 + 12 + 1 + 43


@pytest.mark.parametrize("key", [
    "", "frk_", "frk_0123456789ab_", "frk_0123456789AB_" + "a" * 43,
    "frk_0123456789ab_" + "a" * 42, "frk_0123456789ab_" + "a" * 44,
    "frk_0123456789ab_" + "a" * 42 + "=", "frk_0123456789ab_" + "a" * 42 + "\n",
    " frk_0123456789ab_" + "a" * 43, "FRK_0123456789ab_" + "a" * 43,
])
def test_malformed_keys_have_no_id(key: str) -> None:
    assert parse_key(key) is None


def test_matches_only_the_same_key() -> None:
    _, key = new_key()
    _, other = new_key()
    assert matches(key, digest(key))
    assert not matches(other, digest(key))
    assert not matches(key, None)  # unknown id: compared against a dummy, never true


def test_roles_are_ordered() -> None:
    assert ROLES == ("reader", "writer", "admin")
    assert allows("admin", "writer") and allows("writer", "reader") and allows("reader", "reader")
    assert not allows("reader", "writer") and not allows("writer", "admin")


@pytest.mark.parametrize(("name", "ok"), [
    ("acme", True), ("a", True), ("A.b-c_1", True), ("x" * 64, True),
    ("", False), ("x" * 65, False), ("-x", False), (".x", False), ("a b", False),
    ("a:b", False), ("é", False), ("a\n", False),
])
def test_tenant_names(name: str, ok: bool) -> None:
    assert bool(TENANT.fullmatch(name)) is ok
