"""The core keeps its shape: it names no bundled backbone or strategy, keeps no module-level mutable
state, and its functions and classes stay small enough to read."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from importlib import metadata
from pathlib import Path

import autotransfer
from autotransfer.plugins import ENTRY_POINT_GROUP, default_host

CORE = Path(autotransfer.__file__).parent
#: longer than the rule, on purpose: the trainer's ladder and its inputs read best together
LONG_CLASSES = {"Trainer"}


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def bundled_names() -> set[str]:
    """Every backbone, alias and strategy the bundled plugins register."""
    bundled = {
        ep.name
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("autotransfer_")
    }
    registry = default_host().registry
    names = set()
    for (kind, name), owner in registry.owner.items():
        if owner in bundled and kind in ("backbones", "strategies"):
            names |= {name, *getattr(registry.get(kind, name), "aliases", ())}
    return names


def string_values(path: Path):
    """(line, text) of every string literal in a file, f-strings' literal parts included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def docstring_lines(path: Path) -> set[int]:
    """Lines of docstrings, and of module-level ``DEFAULT_*`` tables (defaults a suite or plugin may
    override, which may name a bundled strategy as data)."""
    lines = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = [
            t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)
        ]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(t.startswith("DEFAULT") for t in targets):
            lines |= set(range(node.lineno, node.end_lineno + 1))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines.add(first.value.lineno)
    return lines


def test_the_core_names_no_bundled_backbone_or_strategy():
    names = bundled_names()
    assert {"linear-probe", "scratch", "tf_efficientnet_lite0"} <= names  # the check sees what it must
    found = []
    for path in core_files():
        docs = docstring_lines(path)
        for line, text in string_values(path):
            if line in docs:
                continue
            words = {text.strip()} | {w.strip("'\"`,.;:()") for w in text.split()}
            hit = sorted(n for n in names if n in words)
            if hit:
                found.append(f"{path.relative_to(CORE.parent)}:{line} {hit}")
    assert not found, "\n".join(found)


def test_no_module_level_mutable_state():
    found = []
    for module in pkgutil.walk_packages(autotransfer.__path__, "autotransfer."):
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            defined_here = getattr(value, "__module__", loaded.__name__) == loaded.__name__
            if (
                isinstance(value, (dict, list, set))
                and not name.isupper()
                and not name.startswith("__")
                and defined_here
            ):
                found.append(f"{module.name}.{name}")
    assert not found, found


def test_functions_and_classes_stay_small():
    found = []
    for path in core_files():
        for node in ast.walk(ast.parse(path.read_text())):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 60:
                found.append(f"{path.name}: def {node.name} ({size} lines)")
            if isinstance(node, ast.ClassDef) and size > 200 and node.name not in LONG_CLASSES:
                found.append(f"{path.name}: class {node.name} ({size} lines)")
    assert not found, found


def test_the_core_imports_no_model_library_at_module_level():
    heavy = ("timm", "transformers", "peft", "torchvision")
    found = []
    for path in core_files():
        for node in ast.parse(path.read_text()).body:  # top level only: functions import lazily
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in heavy]
    assert not found, found
