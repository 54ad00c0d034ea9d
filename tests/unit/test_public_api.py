"""The public API: ``flowrt.__all__`` is pinned, so adding or removing a name is a
deliberate change made here too, and the package ships its ``py.typed`` marker.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

import flowrt

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "ActionContext",
    "ActionRecord",
    "App",
    "BusUnavailable",
    "Conflict",
    "Decision",
    "Definition",
    "DefinitionConflict",
    "DefinitionError",
    "Event",
    "ExecutionFinished",
    "FlowrtError",
    "IdempotencyMismatch",
    "InvalidInput",
    "LeaseLost",
    "NotFound",
    "Outcome",
    "RecordedEvent",
    "Replay",
    "RetryPolicy",
    "SettingsError",
    "Snapshot",
    "State",
    "StoreUnavailable",
    "Transition",
    "Unavailable",
    "Workflow",
    "apply",
    "decide",
    "load_definition",
    "parse_definition",
    "replay",
]


def test_all_is_pinned() -> None:
    assert flowrt.__all__ == PUBLIC


def test_all_is_sorted_and_unique() -> None:
    assert PUBLIC == sorted(set(PUBLIC))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("flowrt")
    value = getattr(module, name)
    # Defined by flowrt itself, not a third-party object passed through.
    assert getattr(value, "__module__", "").startswith("flowrt."), (name, value)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from flowrt import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_py_typed_marker_exists() -> None:
    package_dir = Path(flowrt.__file__).parent
    assert (package_dir / "py.typed").is_file()


def test_py_typed_marker_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["flowrt"]
