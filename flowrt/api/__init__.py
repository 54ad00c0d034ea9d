"""The HTTP API (Starlette): append events, read executions and their logs."""

from .app import create_app

__all__ = ["create_app"]
