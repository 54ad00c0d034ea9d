"""The load generator: a separate process that talks HTTP/1.1 to the API.

    python -m bench.load < spec.json > result.json

The runner (``python -m bench``) spawns it with ``run_load(spec)``, so the load
generator's CPU is its own and never the runner's. The spec is one JSON object:

- ``port``, ``concurrency``: the API's port and the number of keep-alive connections;
- ``key``: the API key sent as ``Authorization: Bearer`` (none if absent);
- ``mode``:
  - ``closed``: ``sequences`` is a list of request lists; each connection takes the
    next sequence and sends its requests in order, each after the previous answer
    (a start, then an event for it), until none are left;
  - ``timed``: ``requests`` are sent round and round, as fast as the answers come,
    for ``warmup`` + ``duration`` seconds; only answers in the last ``duration``
    seconds count;
  - ``rate``: open loop: request *i* is due at ``i / rate`` seconds and is sent then
    (or as soon as a connection is free), for ``duration`` seconds; latency is
    measured from when it was due, so a late send is counted, not hidden.

A request is ``[path, body]`` (always a POST of a JSON body). The result, one JSON
object on stdout: answers counted, non-2xx statuses, the rate over the measured
window, latency percentiles in milliseconds, and this process's CPU seconds.

A minimal client on purpose: httpx costs about a millisecond of CPU per request,
which on a small machine would measure the client instead of flowrt. For the same
reason it runs on uvloop, as flowrt's processes do (0.17 -> 0.13-0.14 CPU-ms per
request at 600/s).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from itertools import count
from typing import Any

from .report import latency_summary

Request = tuple[str, str]


class Connection:
    """One keep-alive HTTP/1.1 connection: send a POST, read the whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 key: str = "") -> None:
        self._reader = reader
        self._writer = writer
        self._auth = f"Authorization: Bearer {key}\r\n" if key else ""

    @classmethod
    async def open(cls, port: int, key: str = "", host: str = "127.0.0.1") -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, key)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{self._auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line.split(b":", 1)[1])
        payload = await self._reader.readexactly(length)
        return int(status_line.split(b" ", 2)[1]), payload

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class _Tally:
    """Answers, statuses and latencies, counted inside the measured window only."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.window = (0.0, float("inf"))

    def add(self, status: int, started: float, done: float) -> None:
        if self.window[0] <= done <= self.window[1]:
            self.latencies.append(done - started)
            self.statuses[status] += 1


async def _closed(port: int, key: str, concurrency: int, sequences: list[list[Request]],
                  tally: _Tally) -> None:
    todo = iter(sequences)

    async def client() -> None:
        conn = await Connection.open(port, key)
        try:
            for sequence in todo:  # one shared iterator: each sequence goes to one client
                for path, body in sequence:
                    t = time.perf_counter()
                    status, _ = await conn.request("POST", path, body.encode())
                    tally.add(status, t, time.perf_counter())
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _timed(port: int, key: str, concurrency: int, requests: list[Request],
                 warmup: float, duration: float, tally: _Tally) -> None:
    start = time.perf_counter()
    tally.window = (start + warmup, start + warmup + duration)
    end = tally.window[1]
    turn = count()

    async def client() -> None:
        conn = await Connection.open(port, key)
        try:
            while time.perf_counter() < end:
                path, body = requests[next(turn) % len(requests)]
                t = time.perf_counter()
                status, _ = await conn.request("POST", path, body.encode())
                tally.add(status, t, time.perf_counter())
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _rate(port: int, key: str, concurrency: int, requests: list[Request], rate: float,
                duration: float, tally: _Tally) -> None:
    due: asyncio.Queue[tuple[float, Request] | None] = asyncio.Queue()
    conns = [await Connection.open(port, key) for _ in range(concurrency)]

    async def client(conn: Connection) -> None:
        while (item := await due.get()) is not None:
            scheduled, (path, body) = item
            status, _ = await conn.request("POST", path, body.encode())
            tally.add(status, scheduled, time.perf_counter())

    clients = [asyncio.create_task(client(c)) for c in conns]
    start = time.perf_counter()
    total = int(rate * duration)
    for i in range(total):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait((at, requests[i % len(requests)]))
    for _ in clients:
        due.put_nowait(None)
    await asyncio.gather(*clients)
    for conn in conns:
        await conn.close()


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one load spec (see the module docstring) and return its result."""
    port, concurrency, mode = spec["port"], spec["concurrency"], spec["mode"]
    key = spec.get("key", "")
    tally = _Tally()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "closed":
        sequences = [[(p, b) for p, b in seq] for seq in spec["sequences"]]
        await _closed(port, key, concurrency, sequences, tally)
        window = time.perf_counter() - t0
    elif mode == "timed":
        requests = [(p, b) for p, b in spec["requests"]]
        await _timed(port, key, concurrency, requests, spec.get("warmup", 0.0),
                     spec["duration"], tally)
        window = spec["duration"]
    elif mode == "rate":
        requests = [(p, b) for p, b in spec["requests"]]
        await _rate(port, key, concurrency, requests, spec["rate"], spec["duration"], tally)
        window = time.perf_counter() - t0
    else:
        raise ValueError(f"unknown mode {mode!r}")
    ok = sum(n for status, n in tally.statuses.items() if 200 <= status < 300)
    return {
        "mode": mode,
        "answers": sum(tally.statuses.values()),
        "ok": ok,
        "errors": {str(s): n for s, n in sorted(tally.statuses.items()) if not 200 <= s < 300},
        "seconds": round(window, 3),
        "ok_per_s": round(ok / window, 1) if window > 0 else 0.0,
        "latency_ms": latency_summary(tally.latencies),
        "cpu_s": round(time.process_time() - cpu0, 3),
    }


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator as its own process and return what it measured."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(json.dumps(spec).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):"
                           f" {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    if result["errors"]:
        raise RuntimeError(f"the API answered non-2xx during {spec['mode']} load:"
                           f" {result['errors']}")
    return result


def main() -> None:
    spec = json.load(sys.stdin)
    try:  # on uvloop, as flowrt's own processes: the client's CPU is not flowrt's
        import uvloop
    except ImportError:  # not on Windows
        result = asyncio.run(generate(spec))
    else:
        result = uvloop.run(generate(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
