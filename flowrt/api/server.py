"""``serve``: the API under uvicorn (uvloop + httptools, docs/decisions/0004), with a
bound on request headers that holds before they are buffered.

httptools itself sets no limit on the request line and headers (h11's is 16 KiB),
and it holds a header's value until its line ends. So the protocol counts both the
headers it has parsed and the raw bytes received while they are still incomplete,
and refuses the request with 431 once either passes ``FLOWRT_HEADER_LIMIT``.
Requests the parser rejects get a problem+json 400 instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import Settings
from .app import create_app
from .problems import PROBLEM_BASE

__all__ = ["serve"]

def _raw_problem(status: int, reason: str, slug: str, detail: str) -> bytes:
    body = msgspec.json.encode({"type": PROBLEM_BASE + slug, "title": reason, "status": status,
                                "detail": detail})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _BoundedHttpTools(HttpToolsProtocol):
    header_limit = 16 * 1024  # set per server by ``serve``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0  # parsed: the URL and complete headers
        self._head_bytes = 0  # raw: received while the headers were incomplete
        self._in_head = False
        self._too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.header_limit:
                self._too_large = True
                self.send_400_response("request headers too large")

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.header_limit:
            self._too_large = True
            raise ValueError("request headers too large")  # stops the parser: a 400 path

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            raw = _raw_problem(431, "Request Header Fields Too Large", "headers-too-large",
                               f"the request line and headers exceed {self.header_limit} bytes")
        else:
            raw = _raw_problem(400, "Bad Request", "malformed-request",
                               "the request is not valid HTTP/1.1")
        self.transport.write(raw)
        self.transport.close()


class _Server(uvicorn.Server):
    # uvicorn re-raises SIGTERM after a clean shutdown (exit 143); we handle the
    # signals ourselves so that a drained API exits 0.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(s: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain for at most ``FLOWRT_SHUTDOWN_GRACE``."""
    protocol = type("BoundedHttpTools", (_BoundedHttpTools,), {"header_limit": s.header_limit})
    config = uvicorn.Config(create_app(s), host=s.host, port=s.port, log_level="warning",
                            timeout_graceful_shutdown=int(s.shutdown_grace), access_log=False,
                            lifespan="on", http=protocol)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()
