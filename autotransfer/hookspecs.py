"""Every hook a plugin may implement. Hooks receive a ``register`` callback."""

from __future__ import annotations

from typing import Callable, Optional

import pluggy

hookspec = pluggy.HookspecMarker("autotransfer")
hookimpl = pluggy.HookimplMarker("autotransfer")


@hookspec
def register_backbones(register: Callable) -> None:
    """Register backbones: call ``register(BackboneSpec(...))`` once per backbone."""


@hookspec
def register_strategies(register: Callable) -> None:
    """Register transfer strategies: call ``register(StrategySpec(...))`` once per strategy."""


@hookspec
def register_tasks(register: Callable) -> None:
    """Register domain tasks: call ``register(TaskSpec(...))`` once per task."""


@hookspec(firstresult=True)
def resolve_backbone(name: str) -> Optional[object]:
    """Return a ``BackboneSpec`` for a name no plugin registered (a library id, a path), or None.

    The first plugin to return a spec wins.
    """
