"""What the API's lifespan owns: the pool, the Redis client, the metrics, and what
checks callers (keys, rate limits)."""

from __future__ import annotations

from dataclasses import dataclass

from ..bus import Bus
from ..bus.batcher import HintBatcher
from ..metrics import Metrics
from ..settings import Settings
from ..store import Database, ExecutionStore, PublishedMarks
from ..store.appends import AppendBatcher, StartBatcher
from .auth import Authenticator
from .limits import RateLimiter

__all__ = ["ApiState"]


@dataclass
class ApiState:
    settings: Settings
    db: Database
    bus: Bus
    hints: HintBatcher  # publishes the hints of concurrent requests together
    executions: ExecutionStore
    appends: AppendBatcher  # appends the events of concurrent requests together
    starts: StartBatcher  # and starts their executions together
    published: PublishedMarks
    metrics: Metrics
    auth: Authenticator
    limiter: RateLimiter
