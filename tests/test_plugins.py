"""Plugins: how they load, what a broken one is told, the listings, one test per hook, and the
example third-party plugin (plugins/autotransfer-example) installed and used by a real search."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from conftest import cli, read_json

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


def test_register_plugin_for_one_block_only():
    with register_plugin(TinyBackbonePlugin(), name="tiny") as host:
        assert host.registry.owner[("backbones", TINY_BACKBONE)] == "tiny"
    assert TINY_BACKBONE not in default_host().registry.names("backbones")
    assert "tiny" not in {p["name"] for p in default_host().describe()}


# listings --------------------------------------------------------------------------------------------
def test_listings_filter_by_glob():
    assert [line.split()[0] for line in cli("strategies", "*finetune").output.splitlines()] == [
        "full-finetune",
        "partial-finetune",
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


def test_example_plugin_is_installed_and_a_search_uses_it(tmp_path):
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
    assert read_json(out / "model" / "config.json")["task"] == "image-csv"  # detected from the CSV
    first = sorted((tmp_path / "images").rglob("*.png"))[0]
    label = cli("predict", out / "model", first).output.split("\t")[1]
    assert label.startswith("digit ")


class TestExampleBackbone(BackboneConformance):
    name = "lite0-gem"


class TestExampleStrategy(StrategyConformance):
    name = "l2-sp"


class TestExampleTask(TaskConformance):
    name = "image-csv"

    def sample_data(self, folder, modality):
        return write_image_csv(folder)

    def predict_inputs(self, data):
        return [str(p) for p in sorted((data.parent / "images").rglob("*.png"))[:2]]
