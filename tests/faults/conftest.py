"""The fault suite: each scenario reports its figures; a table of them ends the run.

The figures also go to ``.flowrt/faults/latest.json`` (docs/guarantees.md quotes them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_RESULTS: dict[str, dict[str, Any]] = {}
_OUT = Path(__file__).resolve().parents[2] / ".flowrt" / "faults" / "latest.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(240))


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``report(events=..., recovery_s=..., ...)``: this scenario's figures."""
    started = time.monotonic()

    def record(**figures: Any) -> None:
        figures["duration_s"] = round(time.monotonic() - started, 1)
        _RESULTS[request.node.name] = figures

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("fault scenarios: figures")
    for name, figures in _RESULTS.items():
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")
    _OUT.parent.mkdir(parents=True, exist_ok=True)
    _OUT.write_text(json.dumps(_RESULTS, indent=2, sort_keys=True) + "\n")
