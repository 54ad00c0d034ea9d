"""``make bench``: flowrt's throughput and latency on this machine, printed, never asserted.

    python -m bench [--quick] [--clients N] [--out PATH] [--keep] [--only SECTIONS]

Everything runs here as a user would run it: a private PostgreSQL (durable settings)
and Redis on free loopback ports, ``flowrt api``, ``flowrt-worker --app
bench.app:app`` processes, and a separate load-generator process (``bench.load``)
talking HTTP. It prints a table and writes the same figures to
``bench/results/latest.json``. See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from flowrt.settings import Settings

from .core import bench_core
from .floors import bench_floors
from .flows import bench_completions, bench_e2e, bench_ingest
from .history import bench_history
from .procinfo import machine
from .profile import FULL, QUICK, Profile
from .report import TARGETS, render, write_json
from .servers import DurablePostgres, PrivateRedis
from .stack import Servers

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
SECTIONS = ("core", "floors", "ingest", "e2e", "completions", "history")
_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


async def _servers_info(servers: Servers) -> tuple[dict[str, Any], dict[str, Any]]:
    conn = await asyncpg.connect(servers.pg.url)
    try:
        pg = {name: await conn.fetchval(f"SHOW {name}") for name in (
            "server_version", "fsync", "synchronous_commit", "full_page_writes",
            "wal_sync_method", "shared_buffers", "max_connections")}
    finally:
        await conn.close()
    client = aioredis.from_url(servers.redis.url, decode_responses=True)
    try:
        info = await client.info("server")
        config = {k: (await client.config_get(k)).get(k) for k in (
            "save", "appendonly", "maxmemory-policy")}
    finally:
        await client.aclose()
    versions = {"python": platform.python_version(), "flowrt": version("flowrt"),
                "postgresql": pg.pop("server_version"),
                "redis": info.get("redis_version"), "valkey": info.get("valkey_version"),
                "asyncpg": version("asyncpg"), "redis-py": version("redis"),
                "uvicorn": version("uvicorn"), "starlette": version("starlette")}
    return versions, {"postgresql": pg, "redis": config,
                      "postgresql_binaries": servers.pg.cluster.source,
                      "redis_binary": servers.redis.source}


def _header(doc: dict[str, Any]) -> list[str]:
    m, v, s = doc["machine"], doc["versions"], doc["settings"]
    pg, rd, fl = s.get("postgresql", {}), s.get("redis", {}), s["flowrt"]
    redis = f"Redis {v.get('redis')}" + (f" / valkey {v['valkey']}" if v.get("valkey") else "")
    return [
        f"flowrt bench, {doc['profile']} profile, {doc['started_at'][:16]} UTC,"
        f" {doc['duration_s']:.0f} s",
        f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_mib'] / 1024:.0f} GiB;"
        f" load average {m['loadavg'][0]} at start, {doc['loadavg_end'][0]} at end"
        " (other work shares these cores: figures are noisy)",
        f"versions: Python {v['python']}, flowrt {v['flowrt']},"
        f" PostgreSQL {v.get('postgresql')} (fsync={pg.get('fsync')},"
        f" synchronous_commit={pg.get('synchronous_commit')},"
        f" full_page_writes={pg.get('full_page_writes')}),"
        f" {redis} (no persistence: save {rd.get('save')!r}, appendonly {rd.get('appendonly')})",
        f"flowrt settings: defaults but FLOWRT_LOG_LEVEL=warning (FLOWRT_CONCURRENCY="
        f"{fl['concurrency']}, FLOWRT_DB_POOL_MAX={fl['db_pool_max']});"
        f" {doc['settings']['profile']['clients']} HTTP clients in a separate process",
        "",
    ]


async def run(p: Profile, out: Path, keep: bool, only: set[str] | None = None,
              overrides: dict[str, Any] | None = None) -> int:
    started = datetime.now(UTC)
    doc: dict[str, Any] = {"profile": p.name, "started_at": started.isoformat(),
                           "machine": machine(), "targets": TARGETS,
                           "versions": {"python": platform.python_version(),
                                        "flowrt": version("flowrt")}}
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    rundir = Path(tempfile.mkdtemp(prefix="flowrt-bench-"))
    os.chmod(rundir, 0o755)  # PostgreSQL runs as nobody when we are root
    (rundir / "logs").mkdir()
    pg, redis = DurablePostgres(rundir / "pg"), PrivateRedis(rundir / "redis")
    servers = Servers(pg, redis, rundir / "logs", overrides)
    settings = dataclasses.asdict(servers.settings("x"))
    for per_section in ("database_url", "redis_url", "redis_prefix", "host", "port"):
        settings.pop(per_section)  # a database, prefix and free port of each section's own
    doc["settings"] = {"profile": dataclasses.asdict(p), "flowrt": settings}

    async def section(name: str, work: Callable[[], Awaitable[None]]) -> None:
        say(name)
        try:
            await work()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            say(f"{name} failed: {errors[name]}")
            traceback.print_exc()

    try:
        say(f"starting a private PostgreSQL and Redis in {rundir}")
        pg.start()
        redis.start()
        versions, server_settings = await _servers_info(servers)
        doc["versions"].update(versions)
        doc["settings"].update(server_settings)
        await servers.prepare_template()

        async def core() -> None:
            figures["core"] = bench_core(p.core_events)

        async def floors() -> None:
            figures["floors"] = await bench_floors(
                servers, clients=p.clients, warmup=p.floor_warmup, seconds=p.floor_seconds,
                messages=p.xread_messages, count=p.xread_count, round_trips=p.round_trips,
                gap=p.round_trip_gap)

        async def ingest() -> None:
            figures["ingest"] = await bench_ingest(servers, p)

        async def e2e(workers: int) -> None:
            result = await bench_e2e(servers, p, workers)
            figures.setdefault("e2e", {})[f"w{workers}"] = result.pop("run")
            figures.update(result)

        async def completions() -> None:
            figures["completions"] = await bench_completions(servers, p)

        async def history() -> None:
            figures["history"] = await bench_history(servers, p)

        plan: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
            ("core", "core: decide + apply, replay", core),
            ("floors", "floors: INSERT + XADD, XREADGROUP + XACK", floors),
            ("ingest", "ingest: the API alone", ingest),
            *[("e2e", f"end-to-end with {w} worker(s)", lambda w=w: e2e(w))
              for w in p.e2e_workers],
            ("completions", "completions: 2-event, 2-action executions", completions),
            ("history", "long history and replay", history),
        ]
        for key, title, work in plan:
            if only is None or key in only:
                await section(title, work)
    finally:
        redis.stop()
        pg.stop()
        if keep or errors:
            say(f"logs and data kept in {rundir}")
        else:
            pg.remove()
            shutil.rmtree(rundir, ignore_errors=True)
    doc["duration_s"] = round(time.monotonic() - _T0, 1)
    doc["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["figures"] = figures
    doc["errors"] = errors
    print(render(figures, _header(doc)))
    for name, message in errors.items():
        print(f"FAILED {name}: {message}")
    write_json(out, doc)
    print(f"\nfigures written to {out}")
    return 1 if errors else 0


def _setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    defaults = Settings()
    if not sep or not hasattr(defaults, name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a Settings field, got {text!r}")
    kind = type(getattr(defaults, name))
    try:
        return name, kind(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected {kind.__name__}") from None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts: under a minute")
    parser.add_argument("--clients", type=int, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and logs")
    parser.add_argument("--only", type=lambda v: set(v.split(",")), metavar="SECTIONS",
                        help=f"comma-separated, from: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        type=_setting, help="a flowrt setting for every process, by its"
                        " field name (e.g. db_pool_max=32); repeatable")
    args = parser.parse_args()
    if args.only and not args.only <= set(SECTIONS):
        parser.error(f"--only: unknown {', '.join(sorted(args.only - set(SECTIONS)))}")
    profile = (QUICK if args.quick else FULL).with_clients(args.clients)
    sys.exit(asyncio.run(run(profile, args.out, args.keep, args.only, dict(args.set))))


if __name__ == "__main__":
    main()
