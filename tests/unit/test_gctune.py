"""``flowrt.gctune``: what flowrt's processes do to their cycle collector at start and exit."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from flowrt.gctune import spare_exit, tune


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


def _fresh(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter, so this test's own collector is not involved."""
    env = {"PATH": "/usr/bin:/bin", **env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


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
    assert int(_fresh(code, FLOWRT_GC_THRESHOLD=value)) == expected


def test_spare_exit_freezes_what_the_process_holds(restored_gc: None) -> None:
    gc.unfreeze()
    held = [[i] for i in range(1000)]  # tracked objects a command still holds
    spare_exit()
    assert gc.get_freeze_count() >= len(held)


def test_a_command_spares_its_exit_whatever_it_returns() -> None:
    """``flowrt replay`` with no execution is a usage error (2) before any I/O; the
    collector's threshold setting 0 leaves only the exit's freeze to count."""
    code = ("import gc\n"
            "from flowrt.cli import main\n"
            "gc.unfreeze()\n"
            "code = main(['replay'])\n"
            "print(code, gc.get_freeze_count() > 1000, gc.get_threshold()[0])\n")
    assert _fresh(code, FLOWRT_GC_THRESHOLD="0") == "2 True 700"


@pytest.mark.parametrize("argv", [["replay"], ["export", "some-execution"]])
def test_commands_that_read_a_whole_log_tune_from_flowrt_gc_threshold(argv: list[str]) -> None:
    """``export`` then fails to connect (a closed port): the tuning came first."""
    code = ("import gc\n"
            "from flowrt.cli import main\n"
            f"code = main({argv!r})\n"
            "print(code != 0, gc.get_threshold()[0])\n")
    assert _fresh(code, FLOWRT_GC_THRESHOLD="1234",
                  FLOWRT_DATABASE_URL="postgresql://x@127.0.0.1:9/none",
                  FLOWRT_DB_TIMEOUT="2") == "True 1234"
