"""Every hook is documented in docs/plugins.md and has a test named test_hook_<name>, as Datasette
keeps. The rest of the page is held against the code in tests/test_plugin_docs.py."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from autotransfer import hookspecs
from autotransfer.plugins import HOOKS

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()


def heading(hook: str) -> str:
    return f"### {hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"


def test_every_hookspec_is_known_to_the_host():
    specs = [
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, "autotransfer_spec")
    ]
    assert specs and list(HOOKS) == specs


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    lines = DOCS.splitlines()
    assert heading(hook) in lines, f"docs/plugins.md has no section {heading(hook)!r}"
    section = DOCS.split(heading(hook), 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    if getattr(hookspecs, hook).autotransfer_spec.get("firstresult"):
        assert "first result wins" in section.lower()


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 40
    if getattr(hookspecs, hook).autotransfer_spec.get("firstresult"):
        assert "first plugin to return" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    tests = {
        node.name
        for path in (ROOT / "tests").glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    assert f"test_hook_{hook}" in tests


def test_docs_describe_no_hook_that_does_not_exist():
    reference = DOCS.split("## Hook reference", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^### (\w+)\(", reference, flags=re.M)
    assert documented == list(HOOKS)
