"""``Wire``: one connection to Redis shared by concurrent callers, for the hot path.

redis-py's command path costs 70-80 µs of CPU per command here (its pool, retry and
timeout wrappers and its reply parser): at moderate load that was a quarter of the
API's and the workers' CPU per event. A Wire writes each command, or a pipeline of
them, at once and hands replies back in order (Redis answers a connection's commands
in order), parsed by hiredis: 25-30 µs. Why not another client: docs/decisions/0006.

- It connects on first use, and again on the first call after the connection is lost.
- Every call is bounded by ``timeout``. A call that times out closes the connection
  (a server that stopped answering is out of step with us), so every call on it
  fails and the next one connects afresh.
- A call whose connection drops before its reply is sent once more, on a new
  connection: what goes through here (Bus) is safe to repeat.
- Error replies raise redis-py's exception classes, so callers catch what they always
  caught (``NoScriptError``, ``BusyLoadingError``, ``ResponseError`` with NOGROUP...).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis import exceptions as rexc
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from ..settings import REDIS_URL_OPTIONS

__all__ = ["Wire"]

Arg = str | bytes | memoryview | int | float
Command = tuple[Arg, ...]
# hiredis's stub types the argument as a 1-tuple; it takes any number of them
_pack = cast(Callable[[Command], bytes], hiredis.pack_command)

# Error replies by their first word; any other is a ResponseError. The message keeps
# the word, so checks such as "NOGROUP" in str(exc) work as with redis-py.
_ERRORS: dict[str, type[rexc.RedisError]] = {
    "NOSCRIPT": rexc.NoScriptError,
    "LOADING": rexc.BusyLoadingError,
    "READONLY": rexc.ReadOnlyError,
    "OOM": rexc.OutOfMemoryError,
    "TRYAGAIN": rexc.TryAgainError,
    "NOAUTH": rexc.AuthenticationError,
    "WRONGPASS": rexc.AuthenticationError,
}


def _error(message: str) -> rexc.RedisError:
    return _ERRORS.get(message.split(" ", 1)[0], rexc.ResponseError)(message)


class _Connection(asyncio.Protocol):
    """One socket and the callers waiting on it, oldest first."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._parser = hiredis.Reader(replyError=_error, encoding="utf-8")
        # (future, replies expected or 0 for a single command, replies so far)
        self._waiting: deque[tuple[asyncio.Future[Any], int, list[Any]]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def send(self, data: bytes, replies: int) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, replies, []))
        self.transport.write(data)
        return future

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not False:
                future, expected, got = self._waiting[0]
                if expected:
                    got.append(reply)
                    if len(got) < expected:
                        continue
                    reply = got
                self._waiting.popleft()
                if not future.done():  # a caller that gave up (cancelled) is skipped
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply unasked for
            self.close(ConnectionError(f"Redis connection out of step: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        error = ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}")
        while self._waiting:
            future, _n, _got = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self, why: Exception | None = None) -> None:
        self.lost = True  # no new call is written on it, even before connection_lost
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, and fails the waiting
        elif why is not None:
            self.connection_lost(why)


class Wire:
    """``start`` checks the URL (no I/O); ``close`` closes. Calls connect lazily."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._url = url
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._target: dict[str, Any] = {}
        self._closed = False

    def start(self) -> None:
        kwargs: dict[str, Any] = dict(parse_url(self._url))
        kind = kwargs.pop("connection_class", None)
        target: dict[str, Any] = {k: kwargs.pop(k) for k in
                                  ("host", "port", "path", "db", "username", "password")
                                  if k in kwargs}
        cert_reqs = str(kwargs.pop("ssl_cert_reqs", "required")).lower()
        if kind is SSLConnection:
            context = ssl.create_default_context()
            if cert_reqs in ("none", "0"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            target["ssl"] = context
        elif kind is UnixDomainSocketConnection and "path" not in target:
            raise ValueError("a unix:// Redis URL needs a socket path")
        if kwargs:  # Settings refuses them first; a Wire made elsewhere is told here
            raise ValueError(f"Redis URL option(s) not supported: {', '.join(sorted(kwargs))}"
                             f" (only {', '.join(sorted(REDIS_URL_OPTIONS))})")
        self._target = target
        self._connecting = asyncio.Lock()

    def close(self) -> None:
        self._closed = True  # calls in flight fail, and are not sent again
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def call(self, *args: Arg, within: float | None = None) -> Any:
        """One command's reply (within ``timeout`` unless given); an error reply is raised."""
        reply = await self._send(_pack(args), 0, within)
        if isinstance(reply, rexc.RedisError):
            raise reply
        return reply

    async def pipeline(self, commands: list[Command]) -> list[Any]:
        """Each command's reply, in order, an error reply in its place (not raised)."""
        if not commands:
            return []
        data = b"".join(_pack(c) for c in commands)
        replies: list[Any] = await self._send(data, len(commands), None)
        return replies

    async def _send(self, data: bytes, replies: int, within: float | None) -> Any:
        for attempt in (1, 2):
            conn = await self._connection()
            future = conn.send(data, replies)
            try:
                async with asyncio.timeout(self.timeout if within is None else within):
                    return await future
            except TimeoutError:
                conn.close()
                raise TimeoutError("Redis did not answer within"
                                   f" {self.timeout if within is None else within:g} s") from None
            except ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.lost:
            return conn
        if self._connecting is None:
            raise RuntimeError("Wire is not started")
        if self._closed:
            raise ConnectionError("the Redis connection was closed (the process is stopping)")
        async with self._connecting:  # one connect for all the callers that need it
            if self._conn is None or self._conn.lost:
                self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> _Connection:
        t = self._target
        loop = asyncio.get_running_loop()
        conn: _Connection
        async with asyncio.timeout(self.timeout):
            if "path" in t:
                _tr, conn = await loop.create_unix_connection(_Connection, t["path"])
            else:
                _tr, conn = await loop.create_connection(
                    _Connection, t.get("host", "localhost"), t.get("port", 6379),
                    ssl=t.get("ssl"))
            hello: list[Command] = []
            if t.get("password"):
                hello.append(("AUTH", t["username"], t["password"]) if t.get("username")
                             else ("AUTH", t["password"]))
            if t.get("db"):
                hello.append(("SELECT", t["db"]))
            if hello:
                replies = await conn.send(b"".join(_pack(c) for c in hello),
                                          len(hello))
                for reply in replies:
                    if isinstance(reply, rexc.RedisError):
                        conn.close()
                        raise reply
        return conn
