"""PostgreSQL: the log, the projections, the definitions. The only source of truth."""

from .db import Database
from .executions import ExecutionStore
from .migrate import migrate
from .outbox import Outbox, PublishedMarks
from .processing import ProcessingStore

__all__ = ["Database", "ExecutionStore", "Outbox", "ProcessingStore", "PublishedMarks", "migrate"]
