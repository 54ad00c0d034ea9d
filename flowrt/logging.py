"""structlog set-up: JSON when not on a TTY, context bound per unit of work."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", fmt: str = "auto", prefix: str | None = None) -> None:
    """Called by entry points only (never at import)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Processor = (structlog.processors.JSONRenderer() if as_json
                           else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if prefix:
        processors.append(_add("process", prefix))
    processors += [structlog.processors.format_exc_info, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _add(key: str, value: str) -> Processor:
    def processor(_logger: Any, _name: str, event: EventDict) -> EventDict:
        event.setdefault(key, value)
        return event

    return processor
