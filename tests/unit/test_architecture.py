"""The layering rules of docs/architecture.md, checked on the source (with ``ast``).

Nothing here imports the modules it checks: every rule reads the files, so a rule
also holds for code paths no test runs (imports inside functions included).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowrt

ROOT = Path(__file__).resolve().parents[2]
FLOWRT = ROOT / "flowrt"
WORKERS = ROOT / "workers"

# The pure core: no I/O, no clock, no randomness.
CORE = ("definition", "guards", "events", "machine", "errors", "actions")
CORE_MODULES = frozenset(f"flowrt.{name}" for name in CORE)
# Standard-library modules the core may not use: they bring I/O, time or randomness.
CORE_FORBIDDEN_STDLIB = frozenset({"asyncio", "time", "random", "uuid", "os", "socket"})
# Third-party modules the core may use, and which core module may use each.
CORE_THIRD_PARTY = {
    "msgspec": set(CORE),
    "yaml": {"definition"},  # loading definition files
    "cel": {"guards"},  # compiling and evaluating guards
}
# Never in the core, named so that a failure says what went wrong.
INFRASTRUCTURE = ("asyncpg", "redis", "starlette", "uvicorn", "prometheus_client", "structlog")
FLOWRT_EDGES = ("flowrt.store", "flowrt.bus", "flowrt.api", "flowrt.worker", "flowrt.engine",
                "flowrt.cli")


# --- reading imports --------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(path: Path) -> str:
    """The package relative imports in ``path`` are resolved against."""
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports(path: Path, package: str | None = None) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line (nested imports too).

    Relative imports resolve against ``package`` (by default the file's own).
    ``from pkg import name`` yields ``pkg.name`` as well as ``pkg``, since ``name``
    may be a submodule; rules match on prefixes, so that is what they need.
    """
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (package if package is not None else _package(path)).split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{module}.{alias.name}"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _top(module: str) -> str:
    return module.partition(".")[0]


def _sources(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


# --- (a) the pure core --------------------------------------------------------------


@pytest.mark.parametrize("name", CORE)
def test_core_imports_only_stdlib_msgspec_yaml_cel_and_itself(name: str) -> None:
    path = FLOWRT / f"{name}.py"
    bad: list[str] = []
    for line, module in imports(path):
        top = _top(module)
        if top == "flowrt":
            # ``from . import x`` style names resolve to flowrt.<x>; only core modules.
            if module != "flowrt" and not any(_within(module, m) for m in CORE_MODULES):
                bad.append(f"{_where(path, line)}: {module} (not a core module)")
        elif top in sys.stdlib_module_names:
            if top in CORE_FORBIDDEN_STDLIB:
                bad.append(f"{_where(path, line)}: {module} (I/O, clock or randomness)")
        elif top in CORE_THIRD_PARTY:
            if name not in CORE_THIRD_PARTY[top]:
                bad.append(f"{_where(path, line)}: {module} (only for "
                           f"{', '.join(sorted(CORE_THIRD_PARTY[top]))})")
        else:
            bad.append(f"{_where(path, line)}: {module} (not allowed in the core)")
    assert not bad, "the pure core imports what it must not:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", CORE)
def test_core_never_imports_infrastructure_or_edges(name: str) -> None:
    # Implied by the allow-list above; spelled out so the rule is visible on its own.
    path = FLOWRT / f"{name}.py"
    found = [f"{_where(path, line)}: {module}" for line, module in imports(path)
             if _top(module) in INFRASTRUCTURE
             or any(_within(module, edge) for edge in FLOWRT_EDGES)]
    assert not found, "\n".join(found)


def test_core_list_matches_the_files() -> None:
    for name in CORE:
        assert (FLOWRT / f"{name}.py").is_file(), name


# --- (b) flowrt never depends on the workers -----------------------------------------


def test_flowrt_never_imports_workers() -> None:
    found = [f"{_where(path, line)}: {module}"
             for path in _sources(FLOWRT) for line, module in imports(path)
             if _top(module) == "workers"]
    assert not found, "flowrt/ must not import workers/:\n" + "\n".join(found)


# --- (c) the environment is read in one place ----------------------------------------

_ENV_ATTRS = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})


def _os_env_uses(tree: ast.Module) -> Iterator[ast.AST]:
    """``os.environ``, ``os.getenv`` & co., and ``from os import environ`` & co."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in _ENV_ATTRS
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            yield node
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
            if any(alias.name in _ENV_ATTRS for alias in node.names):
                yield node


def _from_settings(tree: ast.Module) -> set[str]:
    """Names a module imports from flowrt.settings."""
    return {alias.asname or alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and ((node.level == 1 and node.module == "settings")
                 or (not node.level and node.module == "flowrt.settings"))
            for alias in node.names}


def _allowed(rel: str, tree: ast.Module) -> set[int]:
    """The reads outside settings.py that are allowed, by node id, each for a reason.

    - flowrt/cli.py hands ``os.environ`` to flowrt.settings (``load_settings``,
      ``env_given``): the edge passes the environment, settings reads it;
    - flowrt/cli.py checks ``"NO_COLOR" in os.environ``: the no-color.org convention
      for terminal output, not a flowrt setting;
    """
    allowed: set[int] = set()
    if rel == "flowrt/cli.py":
        settings_api = _from_settings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in settings_api):
                allowed.update(id(arg) for arg in node.args)
            elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
                  and node.left.value == "NO_COLOR"
                  and all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)):
                allowed.update(id(c) for c in node.comparators)
    return allowed


def test_only_settings_reads_the_environment() -> None:
    found: list[str] = []
    for path in _sources(FLOWRT):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "flowrt/settings.py":
            continue
        tree = _parse(path)
        allowed = _allowed(rel, tree)
        found += [_where(path, getattr(node, "lineno", 0))
                  for node in _os_env_uses(tree) if id(node) not in allowed]
    assert not found, ("only flowrt/settings.py reads FLOWRT_* variables (cli.py hands"
                       " os.environ to it); also read here:\n" + "\n".join(found))


def test_cli_hands_the_environment_to_load_settings() -> None:
    # The cli.py exception above exists for this call; if it goes, so should the exception.
    tree = _parse(FLOWRT / "cli.py")
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "load_settings"
             and any(isinstance(a, ast.Attribute) and a.attr == "environ"
                     and isinstance(a.value, ast.Name) and a.value.id == "os"
                     for a in node.args)]
    assert calls, "flowrt/cli.py no longer calls load_settings(os.environ)"


# --- (d) the engine does not know about Redis ---------------------------------------


def _flowrt_import_graph() -> dict[str, tuple[Path, list[tuple[int, str]]]]:
    return {_module_name(p): (p, list(imports(p))) for p in _sources(FLOWRT)}


def test_engine_does_not_import_redis_or_the_bus() -> None:
    graph = _flowrt_import_graph()
    # Follow flowrt's own imports from the engine: nothing it pulls in may reach Redis.
    seen: dict[str, str] = {"flowrt.engine": "flowrt.engine"}
    queue = ["flowrt.engine"]
    found: list[str] = []
    while queue:
        current = queue.pop()
        path, found_imports = graph[current]
        for line, module in found_imports:
            if _top(module) == "redis" or _within(module, "flowrt.bus"):
                found.append(f"{_where(path, line)}: {module} (via {seen[current]})")
            elif module in graph and module not in seen:
                seen[module] = f"{seen[current]} -> {module}"
                queue.append(module)
    assert not found, "the engine must not depend on Redis:\n" + "\n".join(found)


# --- (e) the demo is written against the public API ----------------------------------


def test_workers_demo_uses_only_flowrt_top_level_names() -> None:
    public = set(flowrt.__all__)
    bad: list[str] = []
    for path in _sources(WORKERS / "demo"):
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    continue  # the demo's own modules
                top = _top(node.module or "")
                if top == "flowrt":
                    if node.module != "flowrt":
                        bad.append(f"{_where(path, node.lineno)}: from {node.module} import")
                    bad += [f"{_where(path, node.lineno)}: {a.name} is not in flowrt.__all__"
                            for a in node.names if a.name not in public]
                elif top not in sys.stdlib_module_names:
                    bad.append(f"{_where(path, node.lineno)}: {node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = _top(alias.name)
                    if top == "flowrt" and alias.name != "flowrt":
                        bad.append(f"{_where(path, node.lineno)}: import {alias.name}")
                    elif top != "flowrt" and top not in sys.stdlib_module_names:
                        bad.append(f"{_where(path, node.lineno)}: import {alias.name}")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "flowrt" and node.attr not in public):
                bad.append(f"{_where(path, node.lineno)}: flowrt.{node.attr}")
    assert not bad, ("workers/demo may use the standard library and names from"
                     " flowrt.__all__ only:\n" + "\n".join(bad))


# --- the checker itself ---------------------------------------------------------------


def test_imports_resolves_relative_and_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("from __future__ import annotations\n"
                      "from ..events import Hint\n"
                      "from . import db\n"
                      "def f():\n"
                      "    import redis.asyncio\n", encoding="utf-8")
    found = set(imports(source, package="flowrt.store"))
    assert found == {(1, "__future__"), (1, "__future__.annotations"),
                     (2, "flowrt.events"), (2, "flowrt.events.Hint"),
                     (3, "flowrt.store"), (3, "flowrt.store.db"),
                     (5, "redis.asyncio")}


def test_module_names_and_packages() -> None:
    assert _module_name(FLOWRT / "store" / "db.py") == "flowrt.store.db"
    assert _module_name(FLOWRT / "store" / "__init__.py") == "flowrt.store"
    assert _package(FLOWRT / "store" / "db.py") == "flowrt.store"
    assert _package(FLOWRT / "store" / "__init__.py") == "flowrt.store"
    assert _package(FLOWRT / "machine.py") == "flowrt"
