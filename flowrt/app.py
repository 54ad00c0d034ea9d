"""``App``: the definitions and the actions a worker serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .actions import ActionFn, RetryPolicy
from .definition import Definition, Workflow, load_definition, parse_definition
from .errors import DefinitionError

__all__ = ["App", "RegisteredAction"]


class RegisteredAction:
    __slots__ = ("fn", "name", "retry")

    def __init__(self, name: str, fn: ActionFn, retry: RetryPolicy | None) -> None:
        self.name = name
        self.fn = fn
        self.retry = retry  # None: the worker's default policy from settings


class App:
    """Carries workflow definitions and the async functions their actions name.

    >>> app = App()
    >>> app.load_definition("workers/demo/order.yaml")  # doctest: +SKIP
    >>> @app.action("reserve_stock")
    ... async def reserve_stock(ctx): return {"reserved": True}
    """

    def __init__(self) -> None:
        self._workflows: dict[tuple[str, int], Workflow] = {}
        self._actions: dict[str, RegisteredAction] = {}

    # definitions
    def load_definition(self, path: str | Path) -> Workflow:
        """Load a definition file (.yaml, .json, .toml) and add it."""
        return self.add_definition(load_definition(path))

    def add_definition(self, definition: Workflow | Definition | dict[str, Any]) -> Workflow:
        """Add a definition built in Python (validated like a file)."""
        wf = definition if isinstance(definition, Workflow) else parse_definition(definition)
        key = (wf.name, wf.version)
        if key in self._workflows:
            raise DefinitionError([("name", f"{wf.name} version {wf.version} is already loaded")])
        self._workflows[key] = wf
        return wf

    @property
    def workflows(self) -> list[Workflow]:
        return list(self._workflows.values())

    def workflow(self, name: str, version: int) -> Workflow | None:
        return self._workflows.get((name, version))

    # actions
    def action(self, name: str, *,
               retry: RetryPolicy | None = None) -> Callable[[ActionFn], ActionFn]:
        """Register an async function as the action ``name``."""

        def register(fn: ActionFn) -> ActionFn:
            if name in self._actions:
                raise ValueError(f"action {name!r} is already registered")
            self._actions[name] = RegisteredAction(name, fn, retry)
            return fn

        return register

    def get_action(self, name: str) -> RegisteredAction | None:
        return self._actions.get(name)

    def check(self) -> None:
        """Raise ``DefinitionError`` if a loaded definition names an unregistered action."""
        problems = [
            (f"{wf.name}@{wf.version}", f"action {name!r} is not registered on the app")
            for wf in self._workflows.values()
            for name in sorted(wf.action_names() - self._actions.keys())
        ]
        if problems:
            raise DefinitionError(problems)
