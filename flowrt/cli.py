"""The ``flowrt`` and ``flowrt-worker`` commands: parse, configure, call the library.

Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .apikeys import ROLES
from .errors import FlowrtError, NotFound, SettingsError
from .settings import SETTINGS, Settings, env_given, load_settings

if TYPE_CHECKING:  # the commands import these lazily, to keep start-up light
    from .app import App
    from .definition import Workflow
    from .events import RecordedEvent
    from .health import Report, Thresholds
    from .store.tenants import TenantStore

__all__ = ["main", "worker_main"]


class _Exit(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        self.message = message


_FLAGS = ("database_url", "redis_url", "host", "port", "metrics_port", "concurrency", "tenant")


def _settings(args: argparse.Namespace) -> Settings:
    s = load_settings(os.environ)
    flags = {name: getattr(args, name, None) for name in _FLAGS}
    try:
        return s.with_overrides(**flags)
    except SettingsError as exc:
        # A bad value that came from a flag is reported under the flag's name.
        message = str(exc)
        for name, value in flags.items():
            var = SETTINGS[name][0]
            if value is not None and message.startswith(var):
                message = "--" + name.replace("_", "-") + message[len(var):]
        raise SettingsError(message) from None


def _configure_logs(s: Settings, prefix: str | None = None) -> None:
    from .logging import configure_logging

    configure_logging(s.log_level, s.log_format, prefix)


def _run(coro: Coroutine[Any, Any, int], gc_threshold: int = 0) -> int:
    """Run a process's main coroutine, on uvloop where it is installed
    (docs/decisions/0004: fewer CPU cycles per socket operation, flowrt's hot path).
    A long-lived one gives ``gc_threshold``: its cycle collector is tuned
    (flowrt/gctune.py) once start-up has imported everything."""
    from .gctune import tune

    tune(gc_threshold)
    try:
        import uvloop
    except ImportError:  # not on Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- commands ----------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store import migrate

    s = _settings(args)
    directory = Path(args.sql_dir) if args.sql_dir else None
    applied = asyncio.run(migrate(s.database_url, directory=directory, timeout=s.db_timeout,
                                  progress=lambda m: print(m, file=sys.stderr)))
    print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    s = _settings(args)
    _configure_logs(s, "api")
    return _run(_api(s), s.gc_threshold)


async def _api(s: Settings) -> int:
    from .api.server import serve
    from .devservers import port_is_free

    if not port_is_free(s.port, s.host):
        # checked here: uvicorn would sys.exit(3) with its own message instead
        raise _Exit(1, f"{s.host}:{s.port} is taken; stop what listens there or set"
                       " FLOWRT_PORT / --port")

    await serve(s)
    return 0


def _load_app(target: str) -> App:
    from .app import App

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise _Exit(2, f"--app must look like 'package.module:attribute', got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Exit(2, f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise _Exit(2, f"{target!r} is not a flowrt.App")
    return app


def cmd_worker(args: argparse.Namespace) -> int:
    s = _settings(args)
    app = _load_app(args.app)
    _configure_logs(s, "worker")
    return _run(_worker(s, app), s.gc_threshold)


async def _worker(s: Settings, app: App) -> int:
    from .worker import Worker

    worker = Worker(s, app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before entering: start-up may wait
        loop.add_signal_handler(sig, worker.stop)
    async with worker:
        await worker.run()
    return 0


def cmd_workflows_apply(args: argparse.Namespace) -> int:
    from .definition import load_definition

    s = _settings(args)
    workflows = [load_definition(path) for path in args.files]
    return _run(_apply(s, workflows))


async def _apply(s: Settings, workflows: list[Workflow]) -> int:
    from .store import Database
    from .store.definitions import DefinitionStore

    async with Database(s.database_url, timeout=s.db_timeout) as db:
        store = DefinitionStore(db)
        for wf in workflows:
            created = await store.register(wf)
            print(f"{wf.name} version {wf.version}: {'registered' if created else 'unchanged'}")
    return 0


def cmd_workflows_list(args: argparse.Namespace) -> int:
    return _run(_list_workflows(_settings(args)))


async def _list_workflows(s: Settings) -> int:
    from .store import Database
    from .store.definitions import DefinitionStore

    async with Database(s.database_url, timeout=s.db_timeout) as db:
        for name, version, created in await DefinitionStore(db).list():
            print(f"{name}\t{version}\t{created}")
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    async def create(store: TenantStore) -> None:
        created = await store.create_tenant(args.name, rate_limit=args.rate,
                                            rate_burst=args.burst)
        print(f"tenant {args.name}: {'created' if created else 'exists (limits updated)'}")
    return _with_tenants(args, create)


def cmd_tenants_list(args: argparse.Namespace) -> int:
    async def show(store: TenantStore) -> None:
        tenants = await store.tenants()  # before any output: a failure prints one line only
        print("TENANT\tRATE\tBURST\tKEYS\tCREATED")
        for t in tenants:
            rate = "default" if t.rate_limit is None else f"{t.rate_limit:g}"
            burst = "default" if t.rate_burst is None else str(t.rate_burst)
            print(f"{t.tenant}\t{rate}\t{burst}\t{t.keys}\t{t.created_at.isoformat()}")
    return _with_tenants(args, show)


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def create(store: TenantStore) -> None:
        issued = await store.create_key(args.tenant, args.role)
        print(f"created key {issued.key_id} ({issued.role}) for tenant {issued.tenant};"
              " it is shown once, store it now:", file=sys.stderr)
        print(issued.key)
    return _with_tenants(args, create)


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def show(store: TenantStore) -> None:
        keys = await store.keys(args.tenant)  # before any output, as above
        print("KEY_ID\tTENANT\tROLE\tCREATED\tREVOKED")
        for k in keys:
            revoked = k.revoked_at.isoformat() if k.revoked_at else "-"
            print(f"{k.key_id}\t{k.tenant}\t{k.role}\t{k.created_at.isoformat()}\t{revoked}")
    return _with_tenants(args, show)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def revoke(store: TenantStore) -> None:
        now = await store.revoke(args.key_id)
        print(f"key {args.key_id}: {'revoked' if now else 'was already revoked'}")
    return _with_tenants(args, revoke)


def _with_tenants(args: argparse.Namespace,
                  use: Callable[[TenantStore], Coroutine[Any, Any, None]]) -> int:
    from .store import Database
    from .store.tenants import TenantStore

    async def run(s: Settings) -> int:
        async with Database(s.database_url, timeout=s.db_timeout) as db:
            await use(TenantStore(db))
        return 0

    return asyncio.run(run(_settings(args)))


def cmd_replay(args: argparse.Namespace) -> int:
    from .definition import load_definition
    from .gctune import tune
    from .machine import replay
    from .replay_report import read_log, render_json, render_table

    s = _settings(args)
    tune(s.gc_threshold)  # a whole log is read, replayed and rendered: flowrt/gctune.py
    override = load_definition(args.definition) if args.definition else None
    if args.log:
        if override is None:
            raise _Exit(2, "--log needs --definition (the log file does not carry it)")
        label, workflow, log = args.log, override, read_log(args.log)
    else:
        if not args.execution_id:
            raise _Exit(2, "give an EXECUTION_ID, or --log FILE with --definition FILE")
        label = args.execution_id
        workflow, log = _run_fetch(s, args.execution_id, override)
    result = replay(workflow, log, until=args.until)
    if args.json:
        sys.stdout.buffer.write(render_json(label, result) + b"\n")
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(render_table(label, result, color=color))
    return 0 if result.matches else 1


def _run_fetch(s: Settings, execution_id: str,
               override: Workflow | None) -> tuple[Workflow, list[RecordedEvent]]:
    return asyncio.run(_fetch_log(s, execution_id, override))


async def _fetch_log(s: Settings, execution_id: str,
                     override: Workflow | None) -> tuple[Workflow, list[RecordedEvent]]:
    from .store import Database, ExecutionStore, ProcessingStore
    from .store.definitions import DefinitionStore

    async with Database(s.database_url, timeout=s.db_timeout) as db:
        execution = await ExecutionStore(db).get(s.tenant, execution_id)
        workflow = override or await DefinitionStore(db).get(
            execution.workflow, execution.version)
        log = await ProcessingStore(db).load(s.tenant, execution_id, 0, execution.last_seq)
    return workflow, log


def cmd_export(args: argparse.Namespace) -> int:
    from .gctune import tune
    from .replay_report import write_log

    s = _settings(args)
    tune(s.gc_threshold)  # a whole log is read and written: flowrt/gctune.py
    _workflow, log = _run_fetch(s, args.execution_id, None)
    sys.stdout.buffer.write(write_log(log))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .health import Thresholds
    from .health_report import render_json, render_text

    s = _settings(args)
    thresholds = Thresholds.for_settings(s, behind=args.behind, unpublished=args.unpublished)
    report = asyncio.run(_diagnose(s, thresholds))
    if args.json:
        sys.stdout.buffer.write(render_json(report) + b"\n")
    else:
        print(render_text(report))
    return 0 if report.healthy else 1


async def _diagnose(s: Settings, thresholds: Thresholds) -> Report:
    from .bus import Bus, Keys
    from .health import diagnose
    from .store import Database
    from .store.health import HealthStore

    async with Database(s.database_url, max_size=2, timeout=s.db_timeout) as db, \
            Bus(s.redis_url, Keys(s.redis_prefix), timeout=s.redis_timeout) as bus:
        return await diagnose(HealthStore(db), bus, thresholds)


def cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    if args.workers < 1:
        raise _Exit(2, "--workers must be at least 1")
    return run_dev(_settings(args), workers=args.workers, app_target=args.app, reset=args.reset,
                   database_given=bool(args.database_url) or env_given(os.environ, "database_url"),
                   redis_given=bool(args.redis_url) or env_given(os.environ, "redis_url"),
                   data_dir=Path(args.data_dir))


# --- parsing -----------------------------------------------------------------


def _connection_flags(p: argparse.ArgumentParser, redis: bool = True) -> None:
    p.add_argument("--database-url", help="PostgreSQL URL (env FLOWRT_DATABASE_URL)")
    if redis:
        p.add_argument("--redis-url", help="Redis URL (env FLOWRT_REDIS_URL)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _tenant_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", metavar="NAME", help="the execution's tenant (env FLOWRT_TENANT)")


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", required=True,
                   help="import string of a flowrt.App, e.g. workers.demo:app")
    _connection_flags(p)
    p.add_argument("--metrics-port", type=int,
                   help="Prometheus port (env FLOWRT_METRICS_PORT, 0 disables)")
    p.add_argument("--concurrency", type=int,
                   help="executions processed at once (env FLOWRT_CONCURRENCY)")


class _Version(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata costs every
    command 16 ms to import."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from importlib.metadata import version

        print(f"flowrt {version('flowrt')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowrt", description="flowrt: an event-sourced state-machine runtime.",
        epilog="Settings come from FLOWRT_* variables; flags override them."
               " See docs/operations.md.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply database migrations (idempotent)")
    _connection_flags(p, redis=False)
    p.add_argument("--sql-dir", metavar="DIR",
                   help="migrations directory (default: sql/ beside the package, else ./sql)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("api", help="serve the HTTP API")
    _connection_flags(p)
    p.add_argument("--host", help="listen host (env FLOWRT_HOST)")
    p.add_argument("--port", type=int, help="listen port (env FLOWRT_PORT)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a worker (same as flowrt-worker)")
    _worker_flags(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("workflows", help="register and list workflow definitions")
    wsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = wsub.add_parser("apply", help="register definition files (a version is immutable)")
    a.add_argument("files", nargs="+", metavar="FILE", help=".yaml, .json or .toml definition")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_workflows_apply)
    a = wsub.add_parser("list", help="list registered definitions")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_workflows_list)

    p = sub.add_parser("tenants", help="create and list tenants")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = tsub.add_parser("create", help="create a tenant (again: update its limits)")
    a.add_argument("name", metavar="NAME",
                   help="1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    a.add_argument("--rate", type=_seconds, metavar="PER_SECOND",
                   help="this tenant's request rate limit (default FLOWRT_RATE_LIMIT)")
    a.add_argument("--burst", type=_count, metavar="REQUESTS",
                   help="this tenant's burst (default FLOWRT_RATE_BURST)")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_tenants_create)
    a = tsub.add_parser("list", help="list tenants, their limits and active keys")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_tenants_list)

    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ksub.add_parser("create", help="create a key; it is printed once, on stdout")
    a.add_argument("--tenant", required=True, metavar="NAME", help="the key's tenant")
    a.add_argument("--role", choices=ROLES, default="writer",
                   help="reader: read; writer: read and send events (default); admin: also"
                        " /metrics")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_keys_create)
    a = ksub.add_parser("list", help="list keys (never their secrets)")
    a.add_argument("--tenant", metavar="NAME", help="only this tenant's keys")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_keys_list)
    a = ksub.add_parser("revoke", help="revoke a key (the API stops accepting it within"
                                       " FLOWRT_AUTH_CACHE_TTL)")
    a.add_argument("key_id", metavar="KEY_ID", help="as `flowrt keys list` shows it")
    _connection_flags(a, redis=False)
    a.set_defaults(func=cmd_keys_revoke)

    p = sub.add_parser("replay", help="replay an execution's log through its definition",
                       description="Exit 0 when the replay matches the recorded log, 1 when it"
                                   " diverges, 2 when the execution does not exist.")
    p.add_argument("execution_id", nargs="?", metavar="EXECUTION_ID")
    p.add_argument("--until", type=int, metavar="SEQ", help="stop after this seq")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--definition", metavar="FILE", help="replay against this definition instead")
    p.add_argument("--log", metavar="FILE",
                   help="replay an exported JSONL log (needs --definition)")
    _tenant_flag(p)
    _connection_flags(p, redis=False)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="print an execution's log as JSONL (input of replay --log)")
    p.add_argument("execution_id", metavar="EXECUTION_ID")
    _tenant_flag(p)
    _connection_flags(p, redis=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "doctor", help="check for stuck executions, dead events and stale hints",
        description="Exit 0 when healthy, 1 when something is stuck or Redis does not"
                    " answer. Checks executions behind, dead events, unpublished events,"
                    " hints pending past FLOWRT_CLAIM_TIMEOUT and idle consumers holding"
                    " them.")
    p.add_argument("--behind", type=_seconds, metavar="SECONDS",
                   help="an execution whose next event waited longer is stuck (default 60)")
    p.add_argument("--unpublished", type=_seconds, metavar="SECONDS",
                   help="an event whose hint is unpublished longer is stuck (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _connection_flags(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("dev", help="run the whole stack locally with the demo workflow")
    _connection_flags(p)
    p.add_argument("--app", default="workers.demo:app",
                   help="worker app (default workers.demo:app)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--port", type=int, help="API port (env FLOWRT_PORT)")
    p.add_argument("--reset", action="store_true", help="wipe the private servers' data first")
    p.add_argument("--data-dir", default=".flowrt/dev",
                   help="where the private servers keep their data (default .flowrt/dev)")
    p.set_defaults(func=cmd_dev)
    return parser


def _guard(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from .gctune import spare_exit

    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except _Exit as exc:
        if exc.message:
            print(f"flowrt: error: {exc.message}", file=sys.stderr)
        return exc.code
    except NotFound as exc:
        if args.debug:
            raise
        print(f"flowrt: error: {exc}", file=sys.stderr)
        return 2
    except FlowrtError as exc:
        if args.debug:
            raise
        print(f"flowrt: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"flowrt: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        spare_exit()  # the process exits next


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _guard(args.func, args)


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowrt-worker", description="Run a flowrt worker.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    _worker_flags(parser)
    args = parser.parse_args(argv)
    return _guard(cmd_worker, args)


if __name__ == "__main__":
    raise SystemExit(main())
