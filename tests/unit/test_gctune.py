"""``flowrt.gctune``: what the API and the workers do to their cycle collector at start."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from flowrt.gctune import tune


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_freezes_startup_objects_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.unfreeze()
    _young, middle, old = gc.get_threshold()
    tune(50_000)
    assert gc.get_threshold() == (50_000, middle, old)
    assert gc.get_freeze_count() > 1000  # this test process's modules, at least


def test_zero_leaves_the_collector_alone(restored_gc: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(("value", "expected"), [("", 50_000), ("0", 700), ("1234", 1234)])
def test_long_lived_processes_tune_from_flowrt_gc_threshold(value: str, expected: int) -> None:
    """The entry point the API and the worker run through (``cli._run``) applies the
    setting, in a fresh interpreter so this test's own collector is not involved."""
    code = ("import gc, os\n"
            "from flowrt.cli import _run\n"
            "from flowrt.settings import load_settings\n"
            "async def main():\n"
            "    return gc.get_threshold()[0]\n"
            "print(_run(main(), load_settings(os.environ).gc_threshold))\n")
    env = {"PATH": "/usr/bin:/bin", "FLOWRT_GC_THRESHOLD": value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) == expected
