"""Plugins: how they load, what a broken one is told, the listings, one test per hook, and the
example third-party plugin (plugins/autotransfer-example) installed and used by a real search."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from conftest import cli, read_json

import autotransfer_example
from autotransfer import hookimpl
from autotransfer.errors import PluginError, UserError
from autotransfer.plugins import ALLOW_ENV, BLOCK_ENV, ENTRY_POINT_GROUP, default_host, reset_host
from autotransfer.specs import IMAGE, BackboneSpec, StrategySpec, TaskSpec
from autotransfer.testing import (
    TINY_BACKBONE,
    TINY_PREPROCESSING,
    BackboneConformance,
    StrategyConformance,
    TaskConformance,
    TinyBackbonePlugin,
    assert_trial_completed,
    autotransfer_plugin,  # noqa: F401 (the fixture, as a plugin author imports it)
    build_tiny_backbone,
    register_plugin,
    single_threaded,
    tiny_search,
)


@pytest.fixture(autouse=True)
def _fresh_host():
    """Every test here loads plugins under its own environment, and trains tiny models on one thread."""
    reset_host()
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> Path:
    from autotransfer.features.demo import export_digits

    return export_digits(str(tmp_path_factory.mktemp("data") / "digits"), per_class=4)


def write_module(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def fake_entry_points(monkeypatch, tmp_path, **modules: str) -> None:
    """Installed plugins without installing anything: an EntryPoint per module, as pytest's tests do."""
    installed = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    fakes = []
    for name, source in modules.items():
        write_module(tmp_path, f"fake_{name}", source)
        monkeypatch.delitem(sys.modules, f"fake_{name}", raising=False)  # another test's fake of that name
        fakes.append(metadata.EntryPoint(name=name, value=f"fake_{name}", group=ENTRY_POINT_GROUP))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        metadata, "entry_points", lambda group: installed + fakes if group == ENTRY_POINT_GROUP else []
    )


TINY_STRATEGY = """
from autotransfer import hookimpl
from autotransfer.specs import StrategySpec


def prepare(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    return fine_tune_plan(model, context.n_groups - 1, {})


@hookimpl
def register_strategies(register):
    register(StrategySpec(name="top-group", description="train the last layer group and the head",
                          prepare=prepare))
"""


# loading ---------------------------------------------------------------------------------------------
def test_entry_points_are_discovered_without_installing(monkeypatch, tmp_path):
    fake_entry_points(monkeypatch, tmp_path, topgroup=TINY_STRATEGY)
    described = {p["name"]: p for p in json.loads(cli("plugins").output)}
    assert described["topgroup"] == {
        "name": "topgroup",
        "version": "unknown",
        "source": "fake_topgroup",
        "hooks": ["register_strategies"],
        "strategies": ["top-group"],
    }
    assert described["strategies"]["source"] == "autotransfer"  # bundled plugins come the same way
    assert default_host().registry.owner[("strategies", "top-group")] == "topgroup"


def test_block_and_allow_installed_plugins_by_name(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, "strategies, example")
    loaded = {p["name"] for p in json.loads(cli("plugins").output)}
    assert "strategies" not in loaded and "example" not in loaded and {"timm", "image"} <= loaded
    assert "linear-probe" not in cli("strategies").output

    reset_host()
    monkeypatch.delenv(BLOCK_ENV)
    monkeypatch.setenv(ALLOW_ENV, "timm,image")
    assert {p["name"] for p in json.loads(cli("plugins").output)} == {"timm", "image"}
    assert cli("strategies").output == ""

    reset_host()
    monkeypatch.setenv(ALLOW_ENV, "timm,imagee")
    line = cli("plugins", expect=2).output.strip()
    assert line.startswith(f"error: {ALLOW_ENV} names plugins that are not installed: imagee;")
    assert "image, " in line and "\n" not in line  # the installed names are listed


def test_a_blocked_name_is_not_loaded_from_a_local_file_either(monkeypatch, tmp_path):
    monkeypatch.setenv(BLOCK_ENV, "strategies")
    plugin = write_module(tmp_path, "strategies", TINY_STRATEGY)
    output = cli("--plugin", plugin, "strategies", expect=2).output
    assert output.startswith(
        f"error: plugin 'strategies' is blocked or not allowed by {BLOCK_ENV}/{ALLOW_ENV}"
    )


def test_local_plugin_from_a_file_is_used_by_a_search(tmp_path, small_digits):
    plugin = write_module(
        tmp_path,
        "local_tiny",
        """
        from autotransfer import hookimpl
        from autotransfer.specs import BackboneSpec
        from autotransfer.testing import TINY_PREPROCESSING, build_tiny_backbone

        __version__ = "1.2"


        @hookimpl
        def register_backbones(register):
            register(BackboneSpec(name="local-tiny", modality="image", build=build_tiny_backbone,
                                  feature_dim=16, description="a tiny CNN from a local file",
                                  preprocessing=TINY_PREPROCESSING))
    """,
    )
    described = {p["name"]: p for p in json.loads(cli("--plugin", plugin, "plugins").output)}
    assert described["local_tiny"]["version"] == "1.2"
    assert described["local_tiny"]["source"] == str(plugin.resolve())
    assert "local-tiny" in cli("--plugin", plugin, "backbones", "local-*").output
    out = tmp_path / "out"
    cli(
        "--plugin",
        plugin,
        "search",
        small_digits,
        "-o",
        out,
        "--backbones",
        "local-tiny",
        "--strategies",
        "linear-probe",
        "--n-trials",
        "1",
        "--max-epochs",
        "1",
        "--image-size",
        "16",
        "--no-reference",
        "-q",
    )
    assert read_json(out / "best.json")["backbone"] == "local-tiny"


def test_local_plugin_by_module_name(monkeypatch, tmp_path):
    write_module(tmp_path, "my_strategies", TINY_STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = json.loads(cli("--plugin", "my_strategies", "strategies", "top-*", "--json").output)
    assert rows == [
        {
            "name": "top-group",
            "plugin": "my_strategies",
            "description": "train the last layer group and the head",
        }
    ]


def test_a_local_file_does_not_shadow_an_installed_module(tmp_path):
    import json as stdlib_json

    write_module(tmp_path, "json", TINY_STRATEGY)  # a plugin file named like a module in use
    cli("--plugin", tmp_path / "json.py", "strategies")
    assert sys.modules["json"] is stdlib_json


PACKAGE = """
from autotransfer import hookimpl
from autotransfer.specs import StrategySpec

from . import planning  # a relative import: the folder is imported as a package
from {name}.planning import prepare  # and an absolute one of itself

__version__ = "2.0"


@hookimpl
def register_strategies(register):
    assert planning.prepare is prepare
    register(StrategySpec(name="top-group", description="train the last layer group and the head",
                          prepare=prepare))
"""
PLANNING = """
def prepare(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    return fine_tune_plan(model, context.n_groups - 1, {})
"""


@pytest.fixture
def write_package(monkeypatch):
    """``write_package(folder, name)``: a plugin package; whatever it imports is forgotten after the test."""
    names = []

    def write(folder: Path, name: str) -> Path:
        package = folder / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(textwrap.dedent(PACKAGE.format(name=name)))
        (package / "planning.py").write_text(textwrap.dedent(PLANNING))
        names.append(name)
        return package

    yield write
    for name in names:
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            monkeypatch.delitem(sys.modules, module)


def write_project(folder: Path, plugin: str, module: str) -> Path:
    """A project folder as pip installs it: pyproject.toml with the entry point, the package in src/."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "{module.replace("_", "-")}"
            version = "2.0"

            [project.entry-points.autotransfer]
            {plugin} = "{module}"
            """
        )
    )
    return folder


def test_local_plugin_from_a_package_folder(tmp_path, write_package):
    package = write_package(tmp_path, "my_package_plugin")
    listed = cli("--plugin", package, "strategies", "top-*").output.split()
    assert listed[:2] == ["top-group", "my_package_plugin"]  # named after the folder
    described = {p["name"]: p for p in json.loads(cli("--plugin", package, "plugins").output)}
    assert described["my_package_plugin"]["source"] == str(package.resolve())
    assert described["my_package_plugin"]["version"] == "2.0"


def test_local_plugin_from_a_project_folder_is_used_by_a_search(
    tmp_path, write_package, small_digits, autotransfer_plugin
):
    project = write_project(tmp_path / "my-project", "tops", "my_project_plugin")
    write_package(project / "src", "my_project_plugin")
    assert cli("--plugin", project, "strategies", "top-*").output.split()[:2] == ["top-group", "tops"]
    autotransfer_plugin(TinyBackbonePlugin())
    out = tmp_path / "out"
    options = ["--n-trials", "1", "--max-epochs", "1", "--image-size", "16", "--no-reference", "-q"]
    options += ["--backbones", TINY_BACKBONE, "--strategies", "top-group"]
    cli("--plugin", project, "search", small_digits, "-o", out, *options)
    assert read_json(out / "best.json")["strategy"] == "top-group"

    broken = write_project(tmp_path / "no-package", "absent", "absent_module")
    assert cli("--plugin", broken, "strategies", expect=2).output.startswith(
        f"error: {broken / 'pyproject.toml'}: entry point absent = 'absent_module', but {broken} has no"
    )
    (tmp_path / "plain").mkdir()
    assert "neither a package folder" in cli("--plugin", tmp_path / "plain", "tasks", expect=2).output


def test_plugin_that_is_installed_too_says_to_drop_the_plugin_option(monkeypatch, tmp_path, write_package):
    """After ``pip install -e FOLDER``: the entry point loads the plugin, and --plugin of the same
    project, package or module is an error saying what to do; another plugin of that name is refused."""
    project = write_project(tmp_path / "my-project", "tops", "installed_plugin")
    package = write_package(project / "src", "installed_plugin")
    monkeypatch.syspath_prepend(str(project / "src"))  # as an editable install puts it on the path
    installed = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    fake = metadata.EntryPoint(name="tops", value="installed_plugin", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        metadata, "entry_points", lambda group: installed + [fake] if group == ENTRY_POINT_GROUP else []
    )
    assert cli("strategies", "top-*").output.split()[:2] == ["top-group", "tops"]
    for ref in (project, package, "installed_plugin"):
        reset_host()
        assert cli("--plugin", ref, "strategies", expect=2).output == (
            f"error: --plugin {ref}: plugin 'tops' is already loaded: it is installed (installed_plugin) and "
            f"installed plugins load by themselves; drop --plugin {ref} (after `pip install -e FOLDER` your "
            "edits apply without it), or `pip uninstall` it to load this copy instead\n"
        )
    reset_host()
    other = write_project(tmp_path / "other", "tops", "other_plugin")
    write_package(other, "other_plugin")
    assert cli("--plugin", other, "strategies", expect=2).output.startswith(
        f"error: --plugin {other}: plugin name 'tops' is already taken (installed_plugin); "
    )


def test_register_plugin_for_one_block_only():
    with register_plugin(TinyBackbonePlugin(), name="tiny") as host:
        assert host.registry.owner[("backbones", TINY_BACKBONE)] == "tiny"
    assert TINY_BACKBONE not in default_host().registry.names("backbones")
    assert "tiny" not in {p["name"] for p in default_host().describe()}


# listings --------------------------------------------------------------------------------------------
def test_listings_filter_by_glob_and_name_the_plugin_that_registered_each():
    # the plain listing: name, plugin, [data, default...], description
    assert [line.split()[:2] for line in cli("strategies", "*finetune").output.splitlines()] == [
        ["full-finetune", "strategies"],
        ["partial-finetune", "strategies"],
    ]
    assert cli("backbones", "tf_efficientnet_lite0").output.split()[:4] == [
        "tf_efficientnet_lite0",
        "timm",
        "[image,",
        "default]",
    ]
    assert cli("tasks", "image-classification").output.split()[:3] == [
        "image-classification",
        "image",
        "[image]",
    ]
    names = [row["name"] for row in json.loads(cli("strategies", "*finetune", "--json").output)]
    assert names == ["full-finetune", "partial-finetune"]
    backbones = json.loads(cli("backbones", "tf_*", "--json").output)
    assert [b["name"] for b in backbones] == [
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
    ]
    assert all(b["plugin"] == "timm" and b["modality"] == IMAGE for b in backbones)
    assert json.loads(cli("tasks", "image-*", "--json").output)[0]["name"] == "image-classification"
    assert cli("backbones", "no-such-*").output == ""


def test_plugins_lists_every_plugin_with_what_it_registered():
    described = json.loads(cli("plugins").output)
    assert [p["name"] for p in described] == sorted(p["name"] for p in described)
    by_name = {p["name"]: p for p in described}
    assert by_name["timm"]["hooks"] == ["register_backbones", "resolve_backbone"]
    assert by_name["image"]["tasks"] == ["image-classification"]
    registered = {name for p in described for name in p.get("strategies", [])}
    assert registered == set(default_host().registry.names("strategies"))


# backbones are checked before the first trial ----------------------------------------------------------
def test_a_missing_weights_file_is_refused_before_any_trial(small_digits, tmp_path):
    missing = tmp_path / "missing.safetensors"
    assert default_host().backbone(f"resnet18@{missing}").available() is False
    weights = tmp_path / "r18.safetensors"
    weights.write_bytes(b"")  # available() only checks that the file is there, cheaply
    assert default_host().backbone(f"resnet18@{weights}").available() is True
    out = tmp_path / "out"
    error = cli(
        "search", small_digits, "-o", out, "--backbones", f"resnet18@{missing}", "-q", expect=2
    ).output
    assert error.startswith(f"error: backbone resnet18@{missing}: its pretrained weights are not available")
    assert error.count("\n") == 1
    assert not (out / "leaderboard.csv").exists()  # no trial ran


def test_hub_weights_offline_count_only_when_cached_and_no_network_is_asked(
    monkeypatch, small_digits, tmp_path
):
    import huggingface_hub.constants
    import timm

    def no_network(*args, **kwargs):
        raise AssertionError("available() asked the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = default_host().backbone("resnet18")
    assert spec.available() is False
    error = cli("search", small_digits, "-o", tmp_path / "out", "--backbones", "resnet18", expect=2).output
    assert error.startswith(
        "error: backbone resnet18: its pretrained weights are not available on this machine"
    )
    assert "NAME@/path/to/weights.safetensors" in error and error.count("\n") == 1

    # the same weights in the local Hugging Face cache: available offline
    repo = tmp_path / "hub" / f"models--{timm.get_pretrained_cfg('resnet18').hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "snapshots" / "0123abc" / "model.safetensors").write_bytes(b"weights")
    assert spec.available() is True
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, the hub is asked when a trial builds the model
    assert default_host().backbone("resnet50").available() is True


def test_conformance_names_the_parameters_outside_every_layer_group(tmp_path):
    """As a plugin author sees it: pytest's report lists parameter names, never tensor values."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["autotransfer.testing"]\n')
    (tmp_path / "test_half_grouped.py").write_text(
        textwrap.dedent(
            """
            from autotransfer import hookimpl
            from autotransfer.specs import BackboneSpec
            from autotransfer.testing import TINY_PREPROCESSING, BackboneConformance


            def build(pretrained=True):
                from torch import nn

                from autotransfer.backbone import Backbone

                body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(4, 4))
                return Backbone(body, feature_dim=4, layer_groups=[["0.weight", "0.bias"]],
                                preprocessing=TINY_PREPROCESSING)


            class Plugin:
                @hookimpl
                def register_backbones(self, register):
                    register(BackboneSpec(name="half-grouped", modality="image", build=build, feature_dim=4,
                                          description="the linear layer is in no group",
                                          preprocessing=TINY_PREPROCESSING))


            class TestHalfGrouped(BackboneConformance):
                name = "half-grouped"
                plugins = (Plugin(),)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "test_surface"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "parameters outside every layer group: body.3.weight, body.3.bias;" in done.stdout
    assert "tensor(" not in done.stdout and "Parameter containing" not in done.stdout


def test_a_strategy_named_with_strategies_runs_among_the_first_trials(
    autotransfer_plugin, small_digits, tmp_path
):
    """Two backbones give the probe two warm starts; with --n-trials 2 the named strategy still runs."""
    import optuna

    from autotransfer.strategy import fine_tune_plan

    class Throwaway:
        @hookimpl
        def register_backbones(self, register):
            for name in ("tiny-a", "tiny-b"):
                register(
                    BackboneSpec(
                        name=name,
                        modality=IMAGE,
                        build=build_tiny_backbone,
                        feature_dim=16,
                        preprocessing=TINY_PREPROCESSING,
                    )
                )

        @hookimpl
        def register_strategies(self, register):
            register(
                StrategySpec(
                    name="top-group",
                    description="train the last layer group and the head",
                    prepare=lambda model, params, context: fine_tune_plan(model, context.n_groups - 1, {}),
                    default=False,
                )
            )

    autotransfer_plugin(Throwaway(), name="throwaway")
    out = tmp_path / "out"
    named = ["--backbones", "tiny-a,tiny-b", "--strategies", "top-group,linear-probe", "--n-trials", "2"]
    cli("search", small_digits, "-o", out, *named, "--max-epochs", "1", "--image-size", "16", "-q")
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    searched = [t for t in study.get_trials() if t.state.is_finished() and not t.user_attrs.get("reference")]
    first = [t.user_attrs["strategy"] for t in sorted(searched, key=lambda t: t.number)[:2]]
    assert "top-group" in first, f"the first two trials: {first}"


# errors name the plugin -----------------------------------------------------------------------------------
BROKEN = {
    "import": (
        "import no_such_module_anywhere\n",
        "plugin 'broken' (fake_broken) failed to import: ModuleNotFoundError: No module named "
        "'no_such_module_anywhere'",
    ),
    "raises": (
        """
        from autotransfer import hookimpl

        @hookimpl
        def register_backbones(register):
            raise RuntimeError("weights index unreachable")
        """,
        "plugin 'broken' raised in register_backbones: RuntimeError: weights index unreachable",
    ),
    "wrong type": (
        """
        from autotransfer import hookimpl

        @hookimpl
        def register_strategies(register):
            register({"name": "dict-strategy"})
        """,
        "plugin 'broken' registered dict as one of its strategies; register an "
        "autotransfer.specs.StrategySpec",
    ),
    "wrong kind": (
        """
        from autotransfer import hookimpl
        from autotransfer.specs import StrategySpec

        @hookimpl
        def register_tasks(register):
            register(StrategySpec(name="s", description="s", prepare=print))
        """,
        "plugin 'broken' registered StrategySpec as one of its tasks; register an "
        "autotransfer.specs.TaskSpec",
    ),
    "duplicate": (
        """
        from autotransfer import hookimpl
        from autotransfer.specs import StrategySpec

        @hookimpl
        def register_strategies(register):
            register(StrategySpec(name="linear-probe", description="mine", prepare=print))
        """,
        "strategy name 'linear-probe' is registered by both plugin 'strategies' and plugin 'broken'",
    ),
    "duplicate alias": (
        """
        from autotransfer import hookimpl
        from autotransfer.specs import BackboneSpec

        @hookimpl
        def register_backbones(register):
            register(BackboneSpec(name="my-lite", modality="image", build=print, feature_dim=1,
                                  aliases=("efficientnet_lite0",)))
        """,
        "backbone name 'efficientnet_lite0' is registered by both plugin 'timm' and plugin 'broken'",
    ),
    "misspelled hook": (
        """
        from autotransfer import hookimpl

        @hookimpl
        def register_backbone(register):
            pass
        """,
        "plugin 'broken' implements unknown hook 'register_backbone'; did you mean 'register_backbones'?",
    ),
    "unmarked hook": (
        """
        def register_tasks(register):
            pass
        """,
        "plugin 'broken' defines register_tasks without @hookimpl",
    ),
    "wrong arguments": (
        """
        from autotransfer import hookimpl

        @hookimpl
        def register_tasks(registry):
            pass
        """,
        "plugin 'broken' for hook 'register_tasks' hookimpl definition: register_tasks(registry) "
        "Argument(s) {'registry'} are declared in the hookimpl but can not be found in the hookspec",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_installed_plugin_is_named_in_one_line(monkeypatch, tmp_path, case):
    source, message = BROKEN[case]
    fake_entry_points(monkeypatch, tmp_path, broken=source)
    with pytest.raises(PluginError) as error:
        _ = default_host().registry
    assert message in str(error.value)
    reset_host()
    output = cli("backbones", expect=2).output  # as a user sees it: one line, no traceback
    assert output == f"error: {error.value}\n" and "\n" not in str(error.value)


def test_a_broken_local_plugin_is_named(tmp_path):
    plugin = write_module(tmp_path, "half_written", "def oops(:\n")
    output = cli("--plugin", plugin, "strategies", expect=2).output
    assert output.startswith("error: plugin 'half_written'") and "failed to import: SyntaxError" in output
    assert cli("--plugin", tmp_path / "absent.py", "strategies", expect=2).output.startswith(
        f"error: --plugin {tmp_path / 'absent.py'}: no such file"
    )
    assert (
        "failed to import: ModuleNotFoundError"
        in cli("--plugin", "no_such_plugin_module", "tasks", expect=2).output
    )


def test_two_plugins_under_one_name_are_refused(autotransfer_plugin):
    autotransfer_plugin(TinyBackbonePlugin(), name="tiny")
    with pytest.raises(PluginError, match="plugin name 'tiny' is already loaded"):
        autotransfer_plugin(TinyBackbonePlugin(), name="tiny")


# one test per hook ---------------------------------------------------------------------------------
def test_hook_register_backbones(autotransfer_plugin):
    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register(
                BackboneSpec(
                    name="hooked-tiny",
                    modality=IMAGE,
                    build=build_tiny_backbone,
                    feature_dim=16,
                    aliases=("ht",),
                    preprocessing=TINY_PREPROCESSING,
                )
            )

    autotransfer_plugin(Plugin(), name="hooked")
    host = default_host()
    assert host.backbone("ht") is host.backbone("hooked-tiny")
    assert host.backbone("ht").build(pretrained=True).feature_dim == 16
    rows = json.loads(cli("backbones", "hooked-*", "--json").output)
    assert [(r["name"], r["plugin"], r["default"], r["available"]) for r in rows] == [
        ("hooked-tiny", "hooked", False, True)
    ]


def test_hook_register_strategies(autotransfer_plugin, small_digits, tmp_path):
    from autotransfer.strategy import fine_tune_plan

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register(
                StrategySpec(
                    name="top-group",
                    description="train the last layer group and the head",
                    prepare=lambda model, params, context: fine_tune_plan(
                        model, context.n_groups - params["keep"], {}
                    ),
                    suggest=lambda trial, context: {"keep": trial.suggest_int("top-group.keep", 1, 1)},
                )
            )

    autotransfer_plugin(TinyBackbonePlugin())
    autotransfer_plugin(Plugin(), name="hooked")
    result = tiny_search(small_digits, tmp_path / "out", backbones=[TINY_BACKBONE], strategies=["top-group"])
    assert_trial_completed(result, backbone=TINY_BACKBONE, strategy="top-group")
    assert result.best["params"]["top-group.keep"] == 1


def test_hook_register_tasks(autotransfer_plugin, small_digits, tmp_path):
    """A task that reads the digit folders listed in a text file, one class per line."""
    import autotransfer_image

    def load(path, config=None):
        root = Path(path).parent / "selected"
        root.mkdir(exist_ok=True)
        for line in Path(path).read_text().split():
            (root / line).mkdir(exist_ok=True)
            for png in sorted((small_digits / line).glob("*.png")):
                (root / line / png.name).write_bytes(png.read_bytes())
        return autotransfer_image.load(str(root), config)

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(
                TaskSpec(
                    name="class-list",
                    modality=IMAGE,
                    description="digit classes listed in a .classes file",
                    detect=lambda path: path.endswith(".classes"),
                    load=load,
                )
            )

    autotransfer_plugin(TinyBackbonePlugin())
    autotransfer_plugin(Plugin(), name="hooked")
    listing = tmp_path / "three.classes"
    listing.write_text("3\n5\n8\n")
    result = tiny_search(listing, tmp_path / "out", backbones=[TINY_BACKBONE], strategies=["linear-probe"])
    assert_trial_completed(result, backbone=TINY_BACKBONE, strategy="linear-probe")
    assert result.study.user_attrs["task"] == "class-list"  # detected from the layout, no --task
    assert result.study.user_attrs["classes"] == ["3", "5", "8"]


def test_hook_resolve_backbone(autotransfer_plugin):
    class Resolver:
        def __init__(self, width):
            self.width = width

        @hookimpl
        def resolve_backbone(self, name):
            if not name.startswith("tiny@"):
                return None
            return BackboneSpec(name=name, modality=IMAGE, build=build_tiny_backbone, feature_dim=self.width)

    autotransfer_plugin(Resolver(16), name="first")
    autotransfer_plugin(Resolver(99), name="second")  # called first, as pluggy calls the latest first
    host = default_host()
    assert host.backbone("tiny@anything").feature_dim == 99
    assert host.backbone("tf_efficientnet_lite0").name == "tf_efficientnet_lite0"  # registered names first
    with pytest.raises(
        UserError, match="unknown backbone 'nothing-resolves-this'; valid backbones: .*tf_efficientnet_lite0"
    ):
        host.backbone("nothing-resolves-this")

    class Broken:
        @hookimpl
        def resolve_backbone(self, name):
            return "a model name"

    autotransfer_plugin(Broken(), name="broken")
    with pytest.raises(PluginError, match="plugin 'broken' returned str from resolve_backbone for 'x'"):
        host.backbone("x")


# the example third-party plugin ------------------------------------------------------------------------
def write_image_csv(folder: Path, per_class: int = 4) -> Path:
    """The image-csv layout: digit PNGs in one folder, listed in labels.csv with their labels."""
    from autotransfer.features.demo import export_digits

    images = export_digits(str(folder / "images"), per_class=per_class)
    table = folder / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for png in sorted(images.rglob("*.png")):
            writer.writerow([png.relative_to(folder).as_posix(), f"digit {png.parent.name}"])
    return table


def test_example_plugin_is_installed_and_a_search_uses_it(tmp_path, monkeypatch):
    try:
        dist = metadata.distribution("autotransfer-example")
    except metadata.PackageNotFoundError:
        pytest.fail("the example plugin is not installed: pip install -e plugins/autotransfer-example")
    assert [ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP] == ["autotransfer_example"]
    example = {p["name"]: p for p in json.loads(cli("plugins").output)}["example"]
    assert example == {
        "name": "example",
        "version": "0.1.0",
        "source": "autotransfer-example",
        "hooks": ["register_backbones", "register_strategies", "register_tasks"],
        "backbones": ["lite0-gem"],
        "strategies": ["l2-sp"],
        "tasks": ["image-csv"],
    }

    table = write_image_csv(tmp_path)
    out = tmp_path / "out"
    cli(
        "search",
        table,
        "-o",
        out,
        "--backbones",
        "lite0-gem",
        "--strategies",
        "l2-sp",
        "--n-trials",
        "1",
        "--max-epochs",
        "1",
        "--image-size",
        "32",
        "--no-reference",
        "--device",
        "cpu",
        "-q",
    )
    best = read_json(out / "best.json")
    assert (best["backbone"], best["strategy"]) == ("lite0-gem", "l2-sp")
    assert 1e-4 <= best["params"]["l2-sp.alpha"] <= 1e-1
    config = read_json(out / "model" / "config.json")
    assert config["task"] == "image-csv"  # detected from the CSV
    assert config["backbone_plugin"] == "example"
    first = sorted((tmp_path / "images").rglob("*.png"))[0]
    label = cli("predict", out / "model", first).output.split("\t")[1]
    assert label.startswith("digit ")

    reset_host()  # predicting needs the plugin that registered the backbone: the error names both
    monkeypatch.setenv(BLOCK_ENV, "example")
    assert cli("predict", out / "model", first, expect=2).output == (
        f"error: {out / 'model'}: backbone 'lite0-gem' comes from plugin 'example', which is not loaded; "
        "install it, or load it with `autotransfer --plugin FILE_OR_FOLDER ...`\n"
    )


class TestExampleBackbone(BackboneConformance):
    name = "lite0-gem"


class TestExampleStrategy(StrategyConformance):
    name = "l2-sp"
    plugins = (autotransfer_example,)  # as docs/plugins.md says: harmless once it is installed


class TestExampleTask(TaskConformance):
    name = "image-csv"

    def sample_data(self, folder, modality):
        return write_image_csv(folder)

    def predict_inputs(self, data):
        return [str(p) for p in sorted((data.parent / "images").rglob("*.png"))[:2]]
