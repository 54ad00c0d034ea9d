"""DefinitionStore: a (name, version) is immutable and shared by every tenant."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from flowrt.definition import definition_hash, parse_definition
from flowrt.errors import DefinitionConflict, NotFound
from flowrt.settings import Settings
from flowrt.store import Database
from flowrt.store.definitions import DefinitionStore
from workers.demo import app

ORDER = next(wf for wf in app.workflows if wf.name == "order")


def _changed(description: str):  # type: ignore[no-untyped-def]
    return parse_definition(msgspec.structs.replace(ORDER.definition, description=description))


async def test_register_new_then_same_body(settings: Settings, db: Database,
                                           pg: asyncpg.Connection) -> None:
    store = DefinitionStore(db)
    assert await store.register(ORDER) is True
    assert await store.register(ORDER) is False
    rows = await pg.fetch("SELECT name, version, body_hash FROM workflow_definitions")
    assert [tuple(r) for r in rows] == [("order", 1, definition_hash(ORDER.definition))]


async def test_same_version_with_other_body_conflicts(settings: Settings, db: Database,
                                                      pg: asyncpg.Connection) -> None:
    store = DefinitionStore(db)
    assert await store.register(ORDER) is True
    with pytest.raises(DefinitionConflict, match="'order' version 1"):
        await store.register(_changed("edited"))
    stored = await pg.fetchval("SELECT body_hash FROM workflow_definitions")
    assert stored == definition_hash(ORDER.definition)


async def test_executions_of_every_tenant_use_the_one_definition(
        settings: Settings, db: Database) -> None:
    from flowrt.store import ExecutionStore

    await DefinitionStore(db).register(ORDER)
    for tenant in ("acme", "globex"):
        started = await ExecutionStore(db).start(
            tenant, workflow="order", version=None, input={}, execution_id="x1",
            request_hash="h")
        assert started.created and started.workflow == "order"


async def test_get_round_trips_an_equal_workflow(settings: Settings, db: Database) -> None:
    await DefinitionStore(db).register(ORDER)
    got = await DefinitionStore(db).get("order", 1)  # fresh cache: from the DB
    assert got.name == "order" and got.version == 1
    assert got.definition == ORDER.definition
    assert definition_hash(got.definition) == definition_hash(ORDER.definition)
    assert got.action_names() == {"reserve_stock", "notify"}


async def test_get_unknown_is_not_found(settings: Settings, db: Database) -> None:
    store = DefinitionStore(db)
    await store.register(ORDER)
    with pytest.raises(NotFound):
        await store.get("order", 2)
    with pytest.raises(NotFound):
        await store.get("nope", 1)


async def test_list(settings: Settings, db: Database) -> None:
    store = DefinitionStore(db)
    assert await store.list() == []
    await store.register(ORDER)
    assert [(n, v) for n, v, _ in await store.list()] == [("order", 1)]
