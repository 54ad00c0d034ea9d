"""Run the API in-process against real services: lifespan started, httpx over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from flowrt.api import create_app
from flowrt.apikeys import Role
from flowrt.settings import Settings

from .keys import bearer, issue_key


@asynccontextmanager
async def api_client(settings: Settings, *, key: str | None = None,
                     role: Role = "admin") -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API that sends ``key``, or a new key of ``role`` for the
    settings' tenant (``key=""`` sends none)."""
    if key is None:
        key = await issue_key(settings.database_url, settings.tenant, role)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flowrt.test",
                                     headers=bearer(key) if key else None) as client:
            yield client


async def register_demo(settings: Settings) -> None:
    """Register the demo definitions, as a worker does at start."""
    from flowrt.store import Database
    from flowrt.store.definitions import DefinitionStore
    from workers.demo import app

    async with Database(settings.database_url) as db:
        store = DefinitionStore(db)
        for wf in app.workflows:
            await store.register(wf)
