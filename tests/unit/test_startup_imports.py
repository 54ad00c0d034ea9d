"""What a one-shot command pays at start: ``flowrt replay`` of a long log is timed by
``make bench`` with its start-up included, and imports were a third of it."""

from __future__ import annotations

import subprocess
import sys

# Everything `flowrt replay EXECUTION_ID` imports (flowrt/cli.py: cmd_replay, _fetch_log).
_REPLAY = ("import flowrt.cli, flowrt.definition, flowrt.gctune, flowrt.machine\n"
           "import flowrt.replay_report\n"
           "from flowrt.store import Database, ExecutionStore, ProcessingStore\n"
           "from flowrt.store.definitions import DefinitionStore\n")


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    code += f"import sys\nprint(sorted(m for m in {modules!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return list(eval(out.stdout))  # a list of str literals printed by the child


def test_replay_leaves_logging_and_package_metadata_out() -> None:
    """structlog loads rich when it is installed (cel's dependency): 70 ms that replay,
    which never logs, paid through flowrt.store.outbox; importlib.metadata (16 ms) is
    needed only by ``--version``."""
    assert _loaded(_REPLAY, ("structlog", "rich", "importlib.metadata")) == []

