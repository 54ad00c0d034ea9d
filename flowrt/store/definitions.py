"""Registered workflow definitions: immutable per (tenant, name, version)."""

from __future__ import annotations

import msgspec

from ..definition import Definition, Workflow, definition_hash, parse_definition
from ..errors import DefinitionConflict, NotFound
from .db import Database

__all__ = ["DefinitionStore"]


class DefinitionStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Versions are immutable, so a decoded workflow can be cached forever.
        self._cache: dict[tuple[str, str, int], Workflow] = {}

    async def register(self, tenant: str, workflow: Workflow) -> bool:
        """Register a definition; True if new, False if already there with the same body."""
        d = workflow.definition
        digest = definition_hash(d)
        body = msgspec.to_builtins(d)
        async with self._db.connection() as conn:
            created = await conn.fetchval(
                "INSERT INTO workflow_definitions (tenant_id, name, version, body, body_hash)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
                tenant, d.name, d.version, body, digest)
            if created:
                return True
            existing = await conn.fetchval(
                "SELECT body_hash FROM workflow_definitions"
                " WHERE tenant_id = $1 AND name = $2 AND version = $3", tenant, d.name, d.version)
        if existing != digest:
            raise DefinitionConflict(
                f"workflow {d.name!r} version {d.version} is already registered with a different"
                " body; a version is immutable, so give the changed definition a new version")
        return False

    async def get(self, tenant: str, name: str, version: int) -> Workflow:
        key = (tenant, name, version)
        if key not in self._cache:
            async with self._db.connection() as conn:
                body = await conn.fetchval(
                    "SELECT body FROM workflow_definitions"
                    " WHERE tenant_id = $1 AND name = $2 AND version = $3", tenant, name, version)
            if body is None:
                raise NotFound(f"workflow {name!r} version {version} is not registered")
            self._cache[key] = parse_definition(msgspec.convert(body, Definition))
        return self._cache[key]

    async def list(self, tenant: str) -> list[tuple[str, int, str]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT name, version, created_at FROM workflow_definitions WHERE tenant_id = $1"
                " ORDER BY name, version", tenant)
        return [(r["name"], r["version"], r["created_at"].isoformat()) for r in rows]
