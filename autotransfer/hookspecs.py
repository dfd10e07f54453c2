"""Every hook a plugin may implement. Hooks receive a ``register`` callback.

Documented, with examples, in docs/plugins.md; a test fails when a hook here is missing there or
has no ``test_hook_<name>`` test.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("autotransfer")
hookimpl = pluggy.HookimplMarker("autotransfer")


@hookspec
def register_backbones(register: Callable) -> None:
    """Register backbones: call ``register(BackboneSpec(...))`` once per backbone. Returns nothing.

    Every plugin's implementation is called; a name (or alias) two plugins register is an error.
    A spec's ``build(pretrained=False)`` must work without any weights; ``build(pretrained=True)``
    must give the same weights on every call, and ``available()`` says beforehand whether it can.
    """


@hookspec
def register_strategies(register: Callable) -> None:
    """Register transfer strategies: call ``register(StrategySpec(...))`` once per strategy. Returns nothing.

    Every plugin's implementation is called; a name two plugins register is an error.
    """


@hookspec
def register_tasks(register: Callable) -> None:
    """Register domain tasks: call ``register(TaskSpec(...))`` once per task. Returns nothing.

    Every plugin's implementation is called; a name two plugins register is an error.
    """


@hookspec(firstresult=True)
def resolve_backbone(name: str) -> object | None:
    """Return a ``BackboneSpec`` for a name no plugin registered (a library id, a path,
    ``NAME@WEIGHTS_FILE``), or None when the name is not this plugin's.

    Asked only for names no ``register_backbones`` registered; plugins are asked latest-loaded
    first, the first plugin to return a spec wins, later ones are not asked.
    """
