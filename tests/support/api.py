"""Run the API in-process against real services: lifespan started, httpx over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from flowrt.api import create_app
from flowrt.settings import Settings


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://flowrt.test") as client:
            yield client


async def register_demo(settings: Settings) -> None:
    """Register the demo definitions, as a worker does at start."""
    from flowrt.store import Database
    from flowrt.store.definitions import DefinitionStore
    from workers.demo import app

    async with Database(settings.database_url) as db:
        store = DefinitionStore(db)
        for wf in app.workflows:
            await store.register(settings.tenant, wf)
