"""Every command with each bundled plugin blocked in turn: it works, or it says in one line what is
missing. The core names no bundled plugin, so none may be assumed present."""

from __future__ import annotations

from importlib import metadata

import pytest
from click.testing import CliRunner
from conftest import cli

from autotransfer.cli import main
from autotransfer.plugins import BLOCK_ENV, ENTRY_POINT_GROUP, reset_host

BUNDLED = sorted(
    ep.name
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
    if ep.value.startswith("autotransfer_") and ep.name != "example"
)
TINY = ["--image-size", "32", "--max-epochs", "1", "--no-reference", "--no-rank", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Data, a finished search (its model, study and report inputs) and a tiny suite, all made with
    every plugin loaded."""
    from autotransfer.features.demo import export_digits

    root = tmp_path_factory.mktemp("blocked")
    data = export_digits(str(root / "digits"), per_class=4)
    out = root / "search"
    reset_host()
    cli("search", data, "-o", out, "--n-trials", "1", "--backbones", "tf_efficientnet_lite0", *TINY)
    suite = root / "suite.yaml"
    suite.write_text(
        f"name: tiny\ndatasets: [{{path: {data}}}]\nseeds: [0]\nbudget: {{n_trials: 1}}\nmethods: "
        "[autotransfer]\n"
        "search: {image_size: 32, max_epochs: 1, backbones: [tf_efficientnet_lite0]}\n"
    )
    reset_host()
    return {"data": data, "out": out, "suite": suite, "root": root}


def commands(made, tmp) -> dict[str, list[str]]:
    data, out = str(made["data"]), str(made["out"])
    image = str(next((made["data"] / "3").iterdir()))
    return {
        "plugins": ["plugins"],
        "backbones": ["backbones"],
        "strategies": ["strategies"],
        "tasks": ["tasks"],
        "search": ["search", data, "-o", str(tmp / "s"), "--n-trials", "1", *TINY],
        "rank": ["rank", data, "--image-size", "32"],
        "predict": ["predict", f"{out}/model", image],
        "export": ["export", str(tmp / "e"), "--storage", f"sqlite:///{out}/study.db", "--device", "cpu"],
        "report": ["report", out],
        "demo": ["demo", "digits", str(tmp / "d"), "--per-class", "2"],
        "benchmark": ["benchmark", str(made["suite"]), "-o", str(tmp / "b")],
    }


@pytest.mark.parametrize("plugin", BUNDLED)
def test_every_command_with_a_bundled_plugin_blocked(made, tmp_path, monkeypatch, plugin):
    monkeypatch.setenv(BLOCK_ENV, plugin)
    for name, args in commands(made, tmp_path).items():
        reset_host()
        # catch_exceptions=False: a traceback fails the test instead of hiding in the result
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code in (0, 1, 2), (name, result.output)
        assert "Traceback" not in result.output, (name, result.output)
        if result.exit_code == 2:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (name, result.output)
    reset_host()
