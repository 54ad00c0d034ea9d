"""``create_app``: the Starlette application; its lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..bus import Bus, Keys
from ..bus.batcher import HintBatcher, TokenBatcher
from ..errors import FlowrtError
from ..metrics import Metrics
from ..settings import Settings
from ..store import Database, ExecutionStore, Outbox, PublishedMarks
from ..store.appends import AppendBatcher, StartBatcher
from ..store.tenants import TenantStore
from .auth import Authenticator
from .limits import RateLimiter
from .problems import (
    Problem,
    handle_flowrt_error,
    handle_http,
    handle_problem,
    handle_unexpected,
)
from .routes import ROUTES
from .state import ApiState

__all__ = ["create_app"]


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Starlette:
    """Build the API. Nothing connects until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = Database(settings.database_url,
                      max_size=settings.db_pool_max, timeout=settings.db_timeout)
        bus = Bus(settings.redis_url, Keys(settings.redis_prefix), timeout=settings.redis_timeout)
        executions = ExecutionStore(db)
        appends = AppendBatcher(executions)
        starts = StartBatcher(executions)
        published = PublishedMarks(Outbox(db))
        hints = HintBatcher(bus)
        tokens = TokenBatcher(bus)
        await db.start()
        await bus.start()
        await appends.start()
        await starts.start()
        await published.start()
        await hints.start()
        await tokens.start()
        metrics = Metrics(registry or CollectorRegistry())
        app.state.flowrt = ApiState(settings=settings, db=db, bus=bus, hints=hints,
                                    executions=executions, appends=appends, starts=starts,
                                    published=published,
                                    metrics=metrics,
                                    auth=Authenticator(settings, TenantStore(db), metrics),
                                    limiter=RateLimiter(settings, tokens, metrics))
        try:
            yield
        finally:
            await tokens.close()
            await hints.close()
            await published.close()
            await starts.close()
            await appends.close()
            await bus.close()
            await db.close()

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            Problem: handle_problem,
            FlowrtError: handle_flowrt_error,
            HTTPException: handle_http,
            Exception: handle_unexpected,
        },
    )
