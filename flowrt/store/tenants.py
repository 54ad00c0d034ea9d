"""Tenants and their API keys (sql/0006). Keys are stored only as digests."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from ..apikeys import ROLES, TENANT, Principal, Role, digest, matches, new_key, parse_key
from ..errors import Conflict, InvalidInput, NotFound
from .db import Database

__all__ = ["IssuedKey", "KeyInfo", "TenantInfo", "TenantStore"]


class TenantInfo(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    rate_limit: float | None
    rate_burst: int | None
    keys: int  # active (not revoked) keys
    created_at: datetime


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    tenant: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    tenant: str
    role: str
    key: str  # shown once; never stored


_LOOKUP = (
    "SELECT k.tenant_id, k.role, k.key_hash, t.rate_limit, t.rate_burst"
    " FROM api_keys k JOIN tenants t USING (tenant_id)"
    " WHERE k.key_id = $1 AND k.revoked_at IS NULL")


class TenantStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_tenant(self, tenant: str, *, rate_limit: float | None = None,
                            rate_burst: int | None = None) -> bool:
        """Create a tenant; True if new, False if it existed (its limits are then set)."""
        if not TENANT.fullmatch(tenant):
            raise InvalidInput(f"tenant {tenant!r}: use 1-64 letters, digits, '_', '.' or '-',"
                               " starting with a letter or digit")
        if (rate_limit is not None and not rate_limit > 0) or \
                (rate_burst is not None and rate_burst < 1):
            raise InvalidInput("a rate limit and a burst must be greater than 0")
        async with self._db.connection() as conn:
            created = await conn.fetchval(
                "INSERT INTO tenants AS t (tenant_id, rate_limit, rate_burst) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id) DO UPDATE SET"
                " rate_limit = coalesce($2, t.rate_limit), rate_burst = coalesce($3, t.rate_burst)"
                " RETURNING xmax = 0", tenant, rate_limit, rate_burst)
        return bool(created)

    async def tenants(self) -> list[TenantInfo]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT t.tenant_id, t.rate_limit, t.rate_burst, t.created_at,"
                " count(k.key_id) FILTER (WHERE k.revoked_at IS NULL) AS keys"
                " FROM tenants t LEFT JOIN api_keys k USING (tenant_id)"
                " GROUP BY t.tenant_id ORDER BY t.tenant_id")
        return [TenantInfo(tenant=r["tenant_id"], rate_limit=r["rate_limit"],
                           rate_burst=r["rate_burst"], keys=r["keys"],
                           created_at=r["created_at"]) for r in rows]

    async def create_key(self, tenant: str, role: Role = "writer") -> IssuedKey:
        if role not in ROLES:
            raise InvalidInput(f"role {role!r}: expected one of {', '.join(ROLES)}")
        key_id, key = new_key()
        async with self._db.connection() as conn:
            try:
                await conn.execute(
                    "INSERT INTO api_keys (key_id, tenant_id, role, key_hash)"
                    " VALUES ($1, $2, $3, $4)", key_id, tenant, role, digest(key))
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"tenant {tenant!r} does not exist;"
                               f" create it with `flowrt tenants create {tenant}`") from None
            except asyncpg.UniqueViolationError:  # 48 random bits collided: say so, don't guess
                raise Conflict("key id collision; create the key again") from None
        return IssuedKey(key_id=key_id, tenant=tenant, role=role, key=key)

    async def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT key_id, tenant_id, role, created_at, revoked_at FROM api_keys"
                " WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, created_at",
                tenant)
        return [KeyInfo(key_id=r["key_id"], tenant=r["tenant_id"], role=r["role"],
                        created_at=r["created_at"], revoked_at=r["revoked_at"]) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; True if it was active, False if already revoked."""
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
                " WHERE key_id = $1 RETURNING revoked_at = now() AS now_revoked", key_id)
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return bool(row["now_revoked"])

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of an active key, or None for a malformed, unknown or revoked one."""
        key_id = parse_key(key)
        if key_id is None:
            return None
        async with self._db.connection() as conn:
            row = await conn.fetchrow(_LOOKUP, key_id)
        if not matches(key, row["key_hash"] if row else None) or row is None:
            return None
        return Principal(tenant=row["tenant_id"], role=row["role"],
                         rate_limit=row["rate_limit"], rate_burst=row["rate_burst"])
