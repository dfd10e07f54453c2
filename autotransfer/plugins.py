"""The plugin manager: bundled and installed plugins through one entry-point group, loaded once.

Every plugin, bundled or third-party, arrives through the ``autotransfer`` entry-point group (or
``--plugin``: a ``.py`` file, a package folder, a project folder, a module name). Loading imports the
plugin modules and calls the register hooks; no plugin may import torch at module level, so listing
plugins stays fast.

Whatever a plugin gets wrong (an import error, an exception inside a hook, the wrong type
registered, a name another plugin already took, a misspelled or unmarked hook implementation)
raises a ``PluginError`` whose message names the plugin.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, UserError
from .specs import BackboneSpec, StrategySpec, TaskSpec

ENTRY_POINT_GROUP = "autotransfer"
#: comma-separated names of installed plugins to load exclusively / to skip
ALLOW_ENV = "AUTOTRANSFER_PLUGINS_ALLOW"
BLOCK_ENV = "AUTOTRANSFER_PLUGINS_BLOCK"

KINDS = {"backbones": BackboneSpec, "strategies": StrategySpec, "tasks": TaskSpec}
SINGULAR = {"backbones": "backbone", "strategies": "strategy", "tasks": "task"}
#: the hooks a plugin may implement, by name
HOOKS = tuple(name for name, value in vars(hookspecs).items() if hasattr(value, "autotransfer_spec"))


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
                    f"{SINGULAR[kind]} name {name!r} is registered by both plugin {first!r} and plugin "
                    f"{plugin!r}; rename one, or block one with {BLOCK_ENV}={plugin}"
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
            raise UserError(f"unknown {SINGULAR[kind]} {name!r}; valid {kind}: {valid}") from None


class Host:
    """Owns the pluggy manager and the registry built from it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("autotransfer")
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, str] = {}
        #: where each plugin came from: the distribution that installed it, or the local file/module
        self.sources: dict[str, str] = {}
        #: the plugins that came through an entry point (installed), by name
        self.installed: set[str] = set()
        self._registry: Registry | None = None
        #: backbone names a ``resolve_backbone`` answered, and the plugin that answered
        self._resolved_by: dict[str, str] = {}

    # loading -------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every installed plugin the allow/block environment variables let through."""
        entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        allow, block = _names_from_env(ALLOW_ENV), _names_from_env(BLOCK_ENV)
        unknown = sorted(allow - {ep.name for ep in entry_points})
        if unknown:
            installed = ", ".join(sorted(ep.name for ep in entry_points))
            raise UserError(
                f"{ALLOW_ENV} names plugins that are not installed: {', '.join(unknown)}; "
                f"installed plugins: {installed}"
            )
        for ep in entry_points:
            if ep.name in block or (allow and ep.name not in allow):
                self.pm.set_blocked(ep.name)
                continue
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                continue  # the same name installed twice: the first one found wins, as in pytest
            try:
                module = ep.load()
            except Exception as exc:  # a plugin's import error is reported by its name
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            dist = ep.dist
            self.add(
                module, ep.name, dist.version if dist else "unknown", source=dist.name if dist else ep.value
            )
            self.installed.add(ep.name)

    def add(self, plugin: Any, name: str, version: str = "unknown", *, source: str = "") -> None:
        """Register one plugin object (a module, a class, an instance) under ``name``."""
        if self.pm.is_blocked(name):
            raise PluginError(
                f"plugin {name!r} is blocked or not allowed by {BLOCK_ENV}/{ALLOW_ENV}; "
                "rename it or change the variables"
            )
        if self.pm.has_plugin(name):
            raise PluginError(
                f"plugin name {name!r} is already loaded ({self.sources.get(name) or 'registered'}); "
                "give the new plugin another name"
            )
        if self.pm.is_registered(plugin):
            raise PluginError(f"plugin {name!r} is already loaded as plugin {self.pm.get_name(plugin)!r}")
        _check_marked(plugin, name)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a hook implementation with the wrong arguments
            message = " ".join(str(exc).split())  # pluggy's "Plugin 'name' for hook ..." on one line
            raise PluginError(message[0].lower() + message[1:]) from exc
        unknown = [caller.name for caller in self.pm.get_hookcallers(plugin) or [] if not caller.has_spec()]
        if unknown:
            self.pm.unregister(name=name)
            hint = difflib.get_close_matches(unknown[0], HOOKS, n=1)
            raise PluginError(
                f"plugin {name!r} implements unknown hook {unknown[0]!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else f"; hooks are: {', '.join(HOOKS)}")
            )
        self.versions[name] = version
        self.sources[name] = source
        self._changed()

    def add_path(self, ref: str) -> None:
        """Load a local plugin (``--plugin REF``): a ``.py`` file, named after its stem; a package
        folder (with ``__init__.py``), named after the folder; a project folder (a ``pyproject.toml``
        with entry points in the ``autotransfer`` group), each entry point loaded from the folder under
        its own name, as ``pip install`` would; or an importable module name.

        A local plugin is asked for by name, so the allow list does not apply to it (the block list
        does). A plugin that is already loaded from elsewhere (installed, say) is an error that says
        what to do."""
        path = Path(ref)
        if ref.endswith(".py"):
            if not path.is_file():
                raise UserError(f"--plugin {ref}: no such file; give a .py file, a folder or a module name")
            _add_local(self, ref, path.stem, str(path.resolve()), lambda: _import_file(path), file=path)
        elif path.is_dir():
            for name, module_name, init in _folder_plugins(path, ref):

                def load(module_name: str = module_name, init: Path = init):
                    return _import_package(module_name, init, ref)

                _add_local(self, ref, name, str(path.resolve()), load, file=init, module_name=module_name)
        else:
            _add_local(self, ref, ref, ref, lambda: _import_module(ref), module_name=ref)

    def remove(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self.sources.pop(name, None)
        self.installed.discard(name)
        self._changed()

    def _changed(self) -> None:
        self._registry = None
        self._resolved_by.clear()

    # the registry --------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for kind in KINDS:
            # in the order plugins loaded: bundled, installed, local; a clash blames the later one
            for plugin_name, function in reversed(self._implementations(f"register_{kind}")):

                def register(spec: Any, _kind: str = kind, _plugin: str = plugin_name) -> None:
                    registry.add(_kind, spec, _plugin)

                _call(plugin_name, f"register_{kind}", function, register=register)
        return registry

    def _implementations(self, hook: str) -> list[tuple[str, Any]]:
        """(plugin name, function) of every implementation of ``hook``, in the order pluggy calls them."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return [(self.pm.get_name(impl.plugin), impl.function) for impl in reversed(impls)]

    def backbone(self, name: str, *, registered_by: str | None = None) -> BackboneSpec:
        """A registered backbone, or one a plugin resolves from the name (the first answer wins).

        ``registered_by``: the plugin known to have registered it (an exported model's config says);
        when the name is unknown and that plugin is not loaded, the error names the plugin."""
        registry = self.registry
        if name in registry.items["backbones"] or name in registry.aliases:
            return registry.get("backbones", name)
        for plugin_name, function in self._implementations("resolve_backbone"):
            spec = _call(plugin_name, "resolve_backbone", function, name=name)
            if spec is None:
                continue
            if not isinstance(spec, BackboneSpec):
                raise PluginError(
                    f"plugin {plugin_name!r} returned {type(spec).__name__} from resolve_backbone "
                    f"for {name!r}; return an autotransfer.specs.BackboneSpec or None"
                )
            self._resolved_by[name] = plugin_name
            return spec
        if registered_by is not None and not self.pm.has_plugin(registered_by):
            raise UserError(
                f"backbone {name!r} comes from plugin {registered_by!r}, which is not loaded; install it, "
                "or load it with `autotransfer --plugin FILE_OR_FOLDER ...`"
            )
        return registry.get("backbones", name)  # raises, listing the valid names

    def backbone_owner(self, name: str) -> str:
        """The plugin that registered backbone ``name``, or resolved it (``resolve_backbone``)."""
        registry = self.registry
        registered = registry.aliases.get(name, name)
        if ("backbones", registered) in registry.owner:
            return registry.owner[("backbones", registered)]
        if name not in self._resolved_by:
            self.backbone(name)
        return self._resolved_by[name]

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
            out.append(
                {
                    "name": name,
                    "version": self.versions.get(name, "unknown"),
                    "source": self.sources.get(name, ""),
                    "hooks": sorted(h.name for h in self.pm.get_hookcallers(plugin) or []),
                    **{k: v for k, v in registered.items() if v},
                }
            )
        return out


def _add_local(
    host: Host, ref: str, name: str, source: str, load, *, file: Path | None = None, module_name: str = ""
) -> None:
    if host.sources.get(name) == source:
        return  # asked for twice (the CLI, then the search it starts)
    same = _loaded_from(host, file) if file is not None else None
    if same is not None:  # these very files are loaded already (an editable install of them)
        raise _already_loaded(host, ref, same)
    if host.pm.has_plugin(name):
        if module_name and getattr(host.pm.get_plugin(name), "__name__", None) == module_name:
            raise _already_loaded(host, ref, name)  # another copy of the same plugin
        taken_by = host.sources.get(name) or "loaded"
        raise PluginError(
            f"--plugin {ref}: plugin name {name!r} is already taken ({taken_by}); "
            "give your plugin another name"
        )
    module = load()
    if host.pm.is_registered(module):  # a module name that an installed plugin's entry point names
        raise _already_loaded(host, ref, host.pm.get_name(module))
    host.add(module, name, getattr(module, "__version__", "local"), source=source)


def _loaded_from(host: Host, file: Path) -> str | None:
    """The loaded plugin whose module is ``file`` (its ``__init__.py`` for a package), if any."""
    for name, plugin in host.pm.list_name_plugin():
        loaded = getattr(plugin, "__file__", None)
        if loaded and Path(loaded).resolve() == file.resolve():
            return name
    return None


def _already_loaded(host: Host, ref: str, name: str) -> PluginError:
    """``ref`` is (a copy of) plugin ``name``, loaded already."""
    if name in host.installed:
        version = host.versions.get(name, "unknown")
        dist = host.sources.get(name, "") + ("" if version == "unknown" else f" {version}")
        return PluginError(
            f"--plugin {ref}: plugin {name!r} is already loaded: it is installed ({dist}) and installed "
            f"plugins load by themselves; drop --plugin {ref} (after `pip install -e FOLDER` your edits "
            "apply without it), or `pip uninstall` it to load this copy instead"
        )
    return PluginError(
        f"--plugin {ref}: plugin {name!r} is already loaded ({host.sources.get(name) or 'registered'}); "
        "load it once"
    )


def _call(plugin: str, hook: str, function, **kwargs) -> Any:
    """Call one plugin's hook implementation; whatever it raises names the plugin."""
    try:
        return function(**kwargs)
    except PluginError:
        raise
    except UserError as exc:  # already a message for the user; say whose
        raise PluginError(f"plugin {plugin!r} ({hook}): {exc}") from exc
    except Exception as exc:
        raise PluginError(f"plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}") from exc


def _check_marked(plugin: Any, name: str) -> None:
    """A function named like a hook but without ``@hookimpl`` would be ignored in silence."""
    for hook in HOOKS:
        function = getattr(plugin, hook, None)
        if callable(function) and not hasattr(function, "autotransfer_impl"):
            raise PluginError(
                f"plugin {name!r} defines {hook} without @hookimpl; "
                "decorate it with `from autotransfer import hookimpl`"
            )


def _exec_file(module_name: str, path: Path, plugin: str, where: Path):
    """Execute ``path`` as module ``module_name`` (a package when it is an ``__init__.py``), registered
    in ``sys.modules`` first, as dataclasses, pickling and the package's imports of itself look it up
    by name; an error is the plugin's, named with ``where`` it came from."""
    package = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(module_name, path, submodule_search_locations=package)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise PluginError(
            f"plugin {plugin!r} ({where}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _import_file(path: Path):
    """Import a ``.py`` file as a module of its own (never shadowing an installed module's name)."""
    return _exec_file(f"_autotransfer_plugin_{path.stem}", path, path.stem, path)


def _import_module(ref: str):
    try:
        return importlib.import_module(ref)
    except Exception as exc:
        raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc


def _folder_plugins(folder: Path, ref: str) -> list[tuple[str, str, Path]]:
    """(plugin name, module name, the package's ``__init__.py`` or the module file) for each plugin in
    a package folder or a project folder."""
    if (folder / "__init__.py").is_file():
        return [(folder.name, folder.name, folder / "__init__.py")]
    project = folder / "pyproject.toml"
    if not project.is_file():
        raise UserError(
            f"--plugin {ref}: neither a package folder (no __init__.py) nor a project folder (no "
            "pyproject.toml); give a .py file, a package folder, a project folder or a module name"
        )
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise UserError(
            f"--plugin {ref}: reading pyproject.toml needs Python 3.11; give the package folder inside it"
        ) from None
    try:
        declared = tomllib.loads(project.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{project}: not valid TOML ({exc})") from None
    entry_points = declared.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    if not entry_points:
        raise UserError(
            f"{project}: no entry point in the {ENTRY_POINT_GROUP!r} group; declare the plugin with "
            f'[project.entry-points.{ENTRY_POINT_GROUP}] NAME = "your_module"'
        )
    plugins = []
    for name, value in entry_points.items():
        module_name = value.partition(":")[0].strip()
        top = module_name.split(".")[0]
        places = [folder / top / "__init__.py", folder / f"{top}.py", folder / "src" / top / "__init__.py"]
        places += [folder / "src" / f"{top}.py"]
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            raise UserError(
                f"{project}: entry point {name} = {value!r}, but {folder} has no {top}/ package or {top}.py"
            )
        plugins.append((name, module_name, found))
    return plugins


def _import_package(module_name: str, init: Path, ref: str):
    """Import ``module_name`` from a local folder under its own name, so that the package's relative and
    absolute imports of itself work; refused when a module of that name is imported from elsewhere."""
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", None) or "").resolve() != init.resolve():
            raise PluginError(
                f"--plugin {ref}: a module named {top!r} is already imported from "
                f"{getattr(loaded, '__file__', None) or 'elsewhere'}; rename the package"
            )
    else:
        _exec_file(top, init, top, init.parent if init.name == "__init__.py" else init)
    return _import_module(module_name)


def _names_from_env(var: str) -> set[str]:
    return {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}


#: the default host of the command line and the Python API: every other part is handed a host
_host: Host | None = None


def default_host(extra: Iterable[str] = ()) -> Host:
    """The default plugin host (installed plugins), loaded on first use; ``extra`` adds local plugins.
    The command line and ``autotransfer.search`` use it; everything below them is handed a host."""
    global _host
    if _host is None:
        host = Host()
        host.load_entry_points()
        _host = host
    for ref in extra:
        _host.add_path(ref)
    return _host


def reset_host() -> None:
    """Forget the default host's plugins (tests)."""
    global _host
    _host = None
