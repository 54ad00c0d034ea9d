"""API keys: their format, their digest, and what each role may do.

A key reads ``frk_<key_id>_<secret>``: the key id (12 hex digits) finds the stored
record without scanning, the secret is 256 random bits. Only the SHA-256 of the
whole key is stored; verifying compares digests in constant time. Generation is
the caller's (``new_key``), so this module stays free of I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

__all__ = ["ROLES", "TENANT", "Principal", "Role", "allows", "digest", "matches", "new_key",
           "parse_key"]

Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "admin")  # each may do what the previous may

# Tenant names: what the tenants table's CHECK allows (sql/0006).
TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_KEY = re.compile(r"^frk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and role of their key (or of the auth-off setting)."""

    tenant: str
    role: Role
    rate_limit: float | None = None  # the tenant's own limit; None: the deployment's
    rate_burst: int | None = None


def allows(role: Role, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def new_key() -> tuple[str, str]:
    """A fresh key: ``(key_id, key)``. Show the key once; store only ``digest(key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"frk_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None (nothing to look up)."""
    m = _KEY.fullmatch(key)
    return m.group(1) if m else None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


_NOTHING = digest("frk_000000000000_" + "0" * 43)


def matches(key: str, stored: bytes | None) -> bool:
    """Whether ``key`` is the one ``stored`` was made from, in constant time (an unknown
    key id compares against a dummy, so both paths do the same work)."""
    return hmac.compare_digest(digest(key), stored if stored is not None else _NOTHING) \
        and stored is not None
