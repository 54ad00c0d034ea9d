"""A small TCP proxy between the API and PostgreSQL that cuts a connection on demand.

``cut_request_containing(marker)``: the next client bytes that contain ``marker``
(a parameter's value, say) are dropped and both sides are reset: the statement
never reaches the server (nothing committed).
``cut_reply_containing(marker)``: the next server reply that contains ``marker``
(a CommandComplete tag, say) is dropped and both sides are reset: the server
committed, the client never hears of it. Resets are real RSTs (SO_LINGER 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class CuttingProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._cut_request: bytes | None = None
        self._cut_marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut_request_containing(self, marker: bytes) -> None:
        self._cut_request = marker

    def cut_reply_containing(self, marker: bytes) -> None:
        self._cut_marker = marker

    @property
    def armed(self) -> bool:
        return self._cut_request is not None or self._cut_marker is not None

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            _reset(client_w)
            return
        pair = (client_w, server_w)
        up = asyncio.create_task(self._pump(client_r, server_w, pair, upstream=True))
        down = asyncio.create_task(self._pump(server_r, client_w, pair, upstream=False))
        self._tasks |= {up, down}
        up.add_done_callback(self._tasks.discard)
        down.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
                    upstream: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                if upstream and self._cut_request is not None and self._cut_request in chunk:
                    self._cut_request = None
                    self._cut(pair)
                    return
                if not upstream and self._cut_marker is not None and self._cut_marker in chunk:
                    self._cut_marker = None
                    self._cut(pair)
                    return
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    def _cut(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self.cuts += 1
        for w in pair:
            _reset(w)
