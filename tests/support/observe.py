"""Watching real processes from a test: their metrics pages, and waiting for a condition."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually", "metric"]


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in a Prometheus text page."""
    return sum(float(m.group(1)) for m in
               re.finditer(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M))


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll ``check`` every 0.1 s until true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started <= within, f"{what} (after {within:g} s)"
        await asyncio.sleep(0.1)
    return time.monotonic() - started
