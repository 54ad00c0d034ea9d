"""Helpers for running ``flowrt.worker.Worker`` in-process against the real services.

- ``Recorder``: registers actions on a test ``App`` and records every call's context;
- ``running_worker``: a worker whose ``run()`` is a task, stopped and awaited on exit;
- ``wait_until``: poll an (async) predicate until it holds or a deadline passes;
- small readers for the API (execution, events) and for the hint stream.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis import exceptions as rexc

from flowrt import ActionContext, App, RetryPolicy
from flowrt.bus.keys import GROUP, Keys
from flowrt.settings import Settings
from flowrt.worker import Worker

__all__ = [
    "GROUP",
    "Recorder",
    "closed_port_url",
    "events",
    "execution",
    "keys",
    "running_worker",
    "stream_state",
    "wait_until",
]

DEADLINE = 20.0


async def wait_until(predicate: Callable[[], Any], *, within: float = DEADLINE,
                     interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Only a deadline for giving up: nothing is asserted about how long it took.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {within}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


class Recorder:
    """Registers actions on an app and records each call's ``ActionContext``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.calls: dict[str, list[ActionContext]] = defaultdict(list)
        self.order: list[tuple[str, int]] = []  # (action, seq) in call order

    def action(self, name: str, fn: Callable[[ActionContext], Awaitable[Any]] | None = None, *,
               retry: RetryPolicy | None = None) -> None:
        async def wrapper(ctx: ActionContext) -> Any:
            self.calls[name].append(ctx)
            self.order.append((name, ctx.event.seq))
            if fn is None:
                return {f"{name}_done": True}
            return await fn(ctx)

        self.app.action(name, retry=retry)(wrapper)

    def count(self, name: str) -> int:
        return len(self.calls[name])

    def total(self) -> int:
        return sum(len(v) for v in self.calls.values())


@asynccontextmanager
async def running_worker(settings: Settings, app: App, *, name: str | None = None
                         ) -> AsyncIterator[Worker]:
    """Enter a worker, run it as a task, stop it and wait for ``run()`` on exit."""
    async with Worker(settings, app, name=name) as worker:
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, timeout=30)


def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


def closed_port_url() -> str:
    """A redis:// URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/executions/{execution_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def events(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/executions/{execution_id}/events")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["events"]
    return items


async def stream_state(redis_client: aioredis.Redis, settings: Settings) -> tuple[int, int]:
    """(length, pending) of the hint stream; pending 0 when the group is missing."""
    k = keys(settings)
    length = await redis_client.xlen(k.stream)
    try:
        pending = (await redis_client.xpending(k.stream, GROUP))["pending"]
    except rexc.ResponseError:  # no group
        pending = 0
    return int(length), int(pending)


async def start(client: httpx.AsyncClient, workflow: str,
                input: dict[str, Any] | None = None) -> str:
    r = await client.post("/v1/executions", json={"workflow": workflow, "input": input or {}})
    assert r.status_code == 202, r.text
    assert r.json()["seq"] == 1
    execution_id: str = r.json()["execution_id"]
    return execution_id


async def send(client: httpx.AsyncClient, execution_id: str, name: str,
               payload: dict[str, Any] | None = None) -> int:
    r = await client.post(f"/v1/executions/{execution_id}/events",
                          json={"name": name, "payload": payload or {}})
    assert r.status_code == 202, r.text
    seq: int = r.json()["seq"]
    return seq


async def processed(client: httpx.AsyncClient, execution_id: str, seq: int) -> dict[str, Any]:
    """Wait until the execution's projection has processed ``seq``; return it."""

    async def check() -> dict[str, Any] | None:
        x = await execution(client, execution_id)
        return x if x["processed_seq"] >= seq else None

    result: dict[str, Any] = await wait_until(check, what=f"{execution_id} processed up to {seq}")
    return result
