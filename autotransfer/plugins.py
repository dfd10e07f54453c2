"""The plugin manager: bundled and installed plugins through one entry-point group, loaded once.

Every plugin, bundled or third-party, arrives through the ``autotransfer`` entry-point group (or
``--plugin MODULE_OR_FILE.py``). Loading imports the plugin modules and calls the register hooks;
no plugin may import torch at module level, so listing plugins stays fast.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UserError
from .specs import BackboneSpec, StrategySpec, TaskSpec

ENTRY_POINT_GROUP = "autotransfer"
#: comma-separated plugin names to load exclusively / to skip
ALLOW_ENV = "AUTOTRANSFER_PLUGINS_ALLOW"
BLOCK_ENV = "AUTOTRANSFER_PLUGINS_BLOCK"

KINDS = {"backbones": BackboneSpec, "strategies": StrategySpec, "tasks": TaskSpec}


@dataclass
class Registry:
    """What the loaded plugins registered, by kind and name, with the plugin that registered it."""

    items: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, spec: Any, plugin: str) -> None:
        expected = KINDS[kind]
        if not isinstance(spec, expected):
            raise PluginError(
                f"plugin {plugin!r} registered {type(spec).__name__} as one of its {kind}; "
                f"register an autotransfer.specs.{expected.__name__}"
            )
        names = [spec.name, *getattr(spec, "aliases", ())]
        for name in names:
            key = (kind, name)
            if key in self.owner or (kind == "backbones" and name in self.aliases):
                first = self.owner.get(key) or self.owner[(kind, self.aliases[name])]
                raise PluginError(
                    f"{kind[:-1]} name {name!r} is registered by both plugin {first!r} and plugin "
                    f"{plugin!r}; block one with {BLOCK_ENV}={plugin}"
                )
        self.items[kind][spec.name] = spec
        self.owner[(kind, spec.name)] = plugin
        for alias in getattr(spec, "aliases", ()):
            self.aliases[alias] = spec.name

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        return sorted(n for n in self.items[kind] if fnmatch.fnmatch(n, pattern))

    def get(self, kind: str, name: str) -> Any:
        if kind == "backbones":
            name = self.aliases.get(name, name)
        try:
            return self.items[kind][name]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "(none registered)"
            raise UserError(f"unknown {kind[:-1]} {name!r}; valid {kind}: {valid}") from None


class Host:
    """Owns the pluggy manager and the registry built from it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("autotransfer")
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        self._registry: Registry | None = None

    # loading -------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        allow = _names_from_env(ALLOW_ENV)
        block = _names_from_env(BLOCK_ENV)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in block or (allow and ep.name not in allow):
                self.pm.set_blocked(ep.name)
                continue
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a plugin's import error is reported by its name
                raise PluginError(f"plugin {ep.name!r} failed to import: {type(exc).__name__}: {exc}") from exc
            version = ep.dist.version if ep.dist is not None else "unknown"
            self.add(module, ep.name, version)

    def add(self, plugin: Any, name: str, version: str = "unknown") -> None:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from exc
        self.versions[name] = version
        self._registry = None

    def add_path(self, ref: str) -> None:
        """Load a local plugin given as an importable module name or a ``.py`` file."""
        path = Path(ref)
        try:
            if ref.endswith(".py"):
                if not path.is_file():
                    raise UserError(f"--plugin {ref}: no such file; give a .py file or a module name")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
                name = path.stem
            else:
                module = importlib.import_module(ref)
                name = ref
        except UserError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc
        if self.pm.get_plugin(name) is None:
            self.add(module, name, getattr(module, "__version__", "local"))

    def remove(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self._registry = None

    # the registry --------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                plugin_name = self.pm.get_name(impl.plugin)

                def register(spec: Any, _kind: str = kind, _plugin: str = plugin_name) -> None:
                    registry.add(_kind, spec, _plugin)

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {plugin_name!r} raised in register_{kind}: {type(exc).__name__}: {exc}"
                    ) from exc
        return registry

    def backbone(self, name: str) -> BackboneSpec:
        registry = self.registry
        if name in registry.items["backbones"] or name in registry.aliases:
            return registry.get("backbones", name)
        try:
            spec = self.pm.hook.resolve_backbone(name=name)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"backbone {name!r} could not be resolved: {type(exc).__name__}: {exc}") from exc
        if spec is None:
            return registry.get("backbones", name)  # raises, listing the valid names
        if not isinstance(spec, BackboneSpec):
            raise PluginError(f"resolve_backbone returned {type(spec).__name__} for {name!r}, not a BackboneSpec")
        return spec

    def describe(self) -> list[dict]:
        """What ``autotransfer plugins`` prints."""
        registry = self.registry
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:
                continue
            registered = {
                kind: sorted(n for (k, n), owner in registry.owner.items() if k == kind and owner == name)
                for kind in KINDS
            }
            out.append({
                "name": name,
                "version": self.versions.get(name, "unknown"),
                "hooks": sorted(h.name for h in self.pm.get_hookcallers(plugin) or []),
                **{k: v for k, v in registered.items() if v},
            })
        return out


def _names_from_env(var: str) -> set[str]:
    return {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}


_host: Host | None = None


def get_host(extra: Iterable[str] = ()) -> Host:
    """The process-wide plugin host, loaded on first use; ``extra`` adds local plugins."""
    global _host
    if _host is None:
        host = Host()
        host.load_entry_points()
        _host = host
    for ref in extra:
        _host.add_path(ref)
    return _host


def reset_host() -> None:
    """Forget the loaded plugins (tests)."""
    global _host
    _host = None
