"""Registered workflow definitions: immutable per (name, version), shared by every tenant
(definitions are code, shipped with the workers that run their actions)."""

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
        self._cache: dict[tuple[str, int], Workflow] = {}

    async def register(self, workflow: Workflow) -> bool:
        """Register a definition; True if new, False if already there with the same body."""
        d = workflow.definition
        digest = definition_hash(d)
        body = msgspec.to_builtins(d)
        async with self._db.connection() as conn:
            created = await conn.fetchval(
                "INSERT INTO workflow_definitions (name, version, body, body_hash)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                d.name, d.version, body, digest)
            if created:
                return True
            existing = await conn.fetchval(
                "SELECT body_hash FROM workflow_definitions"
                " WHERE name = $1 AND version = $2", d.name, d.version)
        if existing != digest:
            raise DefinitionConflict(
                f"workflow {d.name!r} version {d.version} is already registered with a different"
                " body; a version is immutable, so give the changed definition a new version")
        return False

    async def get(self, name: str, version: int) -> Workflow:
        key = (name, version)
        if key not in self._cache:
            async with self._db.connection() as conn:
                body = await conn.fetchval(
                    "SELECT body FROM workflow_definitions"
                    " WHERE name = $1 AND version = $2", name, version)
            if body is None:
                raise NotFound(f"workflow {name!r} version {version} is not registered")
            self._cache[key] = parse_definition(msgspec.convert(body, Definition))
        return self._cache[key]

    async def list(self) -> list[tuple[str, int, str]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT name, version, created_at FROM workflow_definitions ORDER BY name, version")
        return [(r["name"], r["version"], r["created_at"].isoformat()) for r in rows]
