"""The command line starts fast: --help and plugins import no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = """
import sys
from autotransfer.cli import main
try:
    main({args!r})
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = sorted(m for m in ("torch", "timm", "transformers", "optuna", "peft") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["plugins"], ["backbones"], ["strategies"], ["tasks"], ["search", "--help"]]
)
def test_starts_without_importing_torch(args):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(args=args)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY=", result.stdout


def test_plugins_json_lists_bundled_plugins_and_what_they_registered():
    result = subprocess.run(
        [sys.executable, "-m", "autotransfer.cli", "plugins"], capture_output=True, text=True
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert "tf_efficientnet_lite0" in plugins["timm"]["backbones"]
    assert {"linear-probe", "partial-finetune", "full-finetune", "scratch"} <= set(
        plugins["strategies"]["strategies"]
    )
    assert plugins["image"]["tasks"] == ["image-classification"]
    assert all(p["version"] for p in plugins.values())
