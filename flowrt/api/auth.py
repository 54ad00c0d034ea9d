"""Who is calling: ``Authorization: Bearer KEY`` to a tenant and a role.

The tenant comes only from the key, never from the body or a header. A checked key
is trusted for ``FLOWRT_AUTH_CACHE_TTL`` seconds (so a revocation takes that long to
bite) to keep a PostgreSQL round trip off every request; unknown keys are cached too,
so a flood of bad keys costs the database one look-up per key.
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request

from ..apikeys import Principal, Role, allows, digest
from ..metrics import Metrics
from ..settings import Settings
from ..store.tenants import TenantStore
from .problems import Problem

__all__ = ["Authenticator"]

_log = structlog.get_logger("flowrt.api")
_CACHE_MAX = 10_000



def _unauthorized() -> Problem:
    return Problem(401, "unauthorized", "Unauthorized",
                   "send a valid API key as 'Authorization: Bearer KEY' (`flowrt keys create`)",
                   headers={"WWW-Authenticate": 'Bearer realm="flowrt"'})


class Authenticator:
    def __init__(self, settings: Settings, tenants: TenantStore, metrics: Metrics) -> None:
        self._tenants = tenants
        self._metrics = metrics
        self._ttl = settings.auth_cache_ttl
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        # FLOWRT_AUTH=off: every request is the configured tenant's admin.
        self._open = (Principal(tenant=settings.tenant, role="admin")
                      if settings.auth == "off" else None)
        if self._open is not None:
            _log.warning(f"AUTHENTICATION IS OFF (FLOWRT_AUTH=off): anyone who can reach this"
                         f" API acts as an admin of tenant {settings.tenant!r}; never run it"
                         f" so outside a local experiment")

    async def principal(self, request: Request, needed: Role) -> Principal:
        """The caller, allowed to act as ``needed``; else a 401 or 403 problem."""
        if self._open is not None:
            return self._open
        # Missing, malformed, unknown and revoked keys all get the same answer.
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        who = await self._lookup(key.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            self._metrics.auth_failures.labels(reason="unauthenticated").inc()
            raise _unauthorized()
        if not allows(who.role, needed):
            self._metrics.auth_failures.labels(reason="forbidden").inc()
            raise Problem(403, "forbidden", "Forbidden",
                          f"this key's role is {who.role}; this needs {needed} or above")
        return who

    async def _lookup(self, key: str) -> Principal | None:
        if not key.isascii():
            return None
        h = digest(key)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        who = await self._tenants.authenticate(key)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()  # simple and bounded; a refill costs one look-up per key
        self._cache[h] = (now + self._ttl, who)
        return who
