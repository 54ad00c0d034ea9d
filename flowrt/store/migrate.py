"""Apply ``sql/NNNN_name.sql`` in order, once each, under an advisory lock."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import asyncpg

from ..errors import FlowrtError
from .db import unavailable

__all__ = ["SQL_DIR", "find_sql_dir", "migrate", "migrations"]

# sql/ sits beside the package in a checkout (and an editable install); an image or
# a plain install runs from a directory that holds sql/ (the Containerfile's /app).
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def find_sql_dir() -> Path:
    for candidate in (SQL_DIR, Path.cwd() / "sql"):
        if any(candidate.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            return candidate
    raise FlowrtError(f"no migrations found in {SQL_DIR} or ./sql; run from the directory"
                      " holding sql/ or pass --sql-dir")
_LOCK_KEY = 0x666C6F77  # "flow": one migrator at a time across processes
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations(directory: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return found


# ``timeout`` bounds the connect (asyncpg's own parameter), not the whole migration.
async def migrate(url: str, *, directory: Path | None = None,
                  timeout: float = 10.0,  # noqa: ASYNC109
                  progress: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    directory = directory or find_sql_dir()
    if not migrations(directory):
        raise FlowrtError(f"no migrations found in {directory}")
    applied: list[str] = []
    async with unavailable():
        conn = await asyncpg.connect(url, timeout=timeout)
    try:
        async with unavailable():
            await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS flowrt_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                rows = await conn.fetch("SELECT version FROM flowrt_migrations")
                done = {r["version"] for r in rows}
                for version, name, path in migrations(directory):
                    if version in done:
                        continue
                    if progress:
                        progress(f"applying {path.name}")
                    async with conn.transaction():
                        await conn.execute(path.read_text(encoding="utf-8"))
                        await conn.execute(
                            "INSERT INTO flowrt_migrations (version, name) VALUES ($1, $2)",
                            version, name)
                    applied.append(path.name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied
