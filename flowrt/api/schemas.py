"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

import msgspec

__all__ = ["EXECUTION_ID", "Accepted", "EventRequest", "StartRequest", "request_hash"]

# Colons are kept out so ids compose cleanly into "tenant:execution:seq:action" keys.
EXECUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
EVENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class StartRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflow: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    execution_id: str | None = None


class EventRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class Accepted(msgspec.Struct, kw_only=True):
    execution_id: str
    event_id: str
    seq: int
    status: str = "pending"


_canonical = msgspec.json.Encoder(order="sorted")


def request_hash(body: msgspec.Struct) -> str:
    """A digest of what was asked, to tell a retry from a different request."""
    return hashlib.sha256(_canonical.encode(body)).hexdigest()
