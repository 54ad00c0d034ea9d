"""API keys for tests: a tenant and a key made through the library, as `flowrt keys
create` does, for clients of in-process and subprocess APIs alike."""

from __future__ import annotations

from flowrt.apikeys import Role
from flowrt.store import Database
from flowrt.store.tenants import TenantStore


async def issue_key(database_url: str, tenant: str = "default", role: Role = "admin") -> str:
    """Create ``tenant`` if needed and a key of ``role`` for it; return the key."""
    async with Database(database_url) as db:
        store = TenantStore(db)
        await store.create_tenant(tenant)
        return (await store.create_key(tenant, role)).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
