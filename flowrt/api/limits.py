"""A tenant's request rate: a token bucket in Redis, shared by every API process
(the tokens of concurrent requests are taken together, ``TokenBatcher``).

When Redis cannot answer within ``FLOWRT_PUBLISH_TIMEOUT`` the limiter fails open:
the request goes through unchecked, ``flowrt_rate_limit_fail_open_total`` counts it,
and Redis is not asked again for a second (a stalled Redis must not add its timeout
to every request). Refusing all traffic because the hint store is down would turn a
Redis outage, which flowrt otherwise survives, into a full one.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from ..apikeys import Principal
from ..bus.batcher import TokenBatcher
from ..metrics import Metrics
from ..settings import Settings
from .problems import Problem

__all__ = ["RateLimiter"]

_log = structlog.get_logger("flowrt.api")
_BACK_OFF = 1.0  # seconds without asking Redis after it failed to answer


class RateLimiter:
    def __init__(self, settings: Settings, tokens: TokenBatcher, metrics: Metrics) -> None:
        self._tokens = tokens
        self._metrics = metrics
        self._rate = settings.rate_limit
        self._burst = settings.rate_burst
        self._timeout = settings.publish_timeout
        self._skip_until = 0.0

    async def check(self, who: Principal) -> None:
        """Take one request from ``who``'s tenant; a 429 problem when its bucket is empty."""
        rate = who.rate_limit if who.rate_limit is not None else self._rate
        if rate <= 0:
            return
        burst = who.rate_burst if who.rate_burst is not None else self._burst
        if time.monotonic() < self._skip_until:
            self._metrics.rate_limit_open.inc()
            return
        try:
            async with asyncio.timeout(self._timeout):
                wait = await self._tokens.take(who.tenant, rate, burst)
        except Exception as exc:  # down, slow, OOM, READONLY: fail open, loudly
            self._skip_until = time.monotonic() + _BACK_OFF
            self._metrics.rate_limit_open.inc()
            _log.warning("rate limiter failed open: Redis did not answer", error=str(exc))
            return
        if wait > 0:
            self._metrics.rate_limited.inc()
            raise Problem(429, "rate-limited", "Too Many Requests",
                          f"tenant {who.tenant!r} is over its limit of {rate:g} requests"
                          f" per second (burst {burst}); retry later",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
