"""DefinitionStore: a (tenant, name, version) is immutable."""

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
    assert await store.register(settings.tenant, ORDER) is True
    assert await store.register(settings.tenant, ORDER) is False
    rows = await pg.fetch("SELECT tenant_id, name, version, body_hash FROM workflow_definitions")
    assert [tuple(r) for r in rows] == [(settings.tenant, "order", 1,
                                         definition_hash(ORDER.definition))]


async def test_same_version_with_other_body_conflicts(settings: Settings, db: Database,
                                                      pg: asyncpg.Connection) -> None:
    store = DefinitionStore(db)
    assert await store.register(settings.tenant, ORDER) is True
    with pytest.raises(DefinitionConflict, match="'order' version 1"):
        await store.register(settings.tenant, _changed("edited"))
    stored = await pg.fetchval("SELECT body_hash FROM workflow_definitions")
    assert stored == definition_hash(ORDER.definition)


async def test_other_tenant_is_independent(settings: Settings, db: Database) -> None:
    store = DefinitionStore(db)
    assert await store.register(settings.tenant, ORDER) is True
    assert await store.register("other", _changed("other tenant's body")) is True
    got = await DefinitionStore(db).get("other", "order", 1)
    assert got.definition.description == "other tenant's body"


async def test_get_round_trips_an_equal_workflow(settings: Settings, db: Database) -> None:
    await DefinitionStore(db).register(settings.tenant, ORDER)
    got = await DefinitionStore(db).get(settings.tenant, "order", 1)  # fresh cache: from the DB
    assert got.name == "order" and got.version == 1
    assert got.definition == ORDER.definition
    assert definition_hash(got.definition) == definition_hash(ORDER.definition)
    assert got.action_names() == {"reserve_stock", "notify"}


async def test_get_unknown_is_not_found(settings: Settings, db: Database) -> None:
    store = DefinitionStore(db)
    await store.register(settings.tenant, ORDER)
    with pytest.raises(NotFound):
        await store.get(settings.tenant, "order", 2)
    with pytest.raises(NotFound):
        await store.get(settings.tenant, "nope", 1)
    with pytest.raises(NotFound):
        await store.get("other-tenant", "order", 1)


async def test_list(settings: Settings, db: Database) -> None:
    store = DefinitionStore(db)
    assert await store.list(settings.tenant) == []
    await store.register(settings.tenant, ORDER)
    assert [(n, v) for n, v, _ in await store.list(settings.tenant)] == [("order", 1)]
