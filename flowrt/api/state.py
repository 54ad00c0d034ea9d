"""What the API's lifespan owns: the pool, the Redis client, the metrics."""

from __future__ import annotations

from dataclasses import dataclass

from ..bus import Bus
from ..bus.batcher import HintBatcher
from ..metrics import Metrics
from ..settings import Settings
from ..store import Database, ExecutionStore, PublishedMarks

__all__ = ["ApiState"]


@dataclass
class ApiState:
    settings: Settings
    db: Database
    bus: Bus
    hints: HintBatcher  # publishes the hints of concurrent requests together
    executions: ExecutionStore
    published: PublishedMarks
    metrics: Metrics
