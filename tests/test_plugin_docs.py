"""docs/plugins.md held against the code: its signatures are the code's, every class and function a
plugin touches is in it, the tutorial's files are the example plugin's, and the page's text alone
makes a plugin package that installs and searches; the one-file plugins on the page work as written."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from conftest import cli, read_json
from test_plugins import write_image_csv

from autotransfer.plugins import reset_host
from autotransfer.testing import BackboneConformance, single_threaded

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
EXAMPLE = ROOT / "plugins" / "autotransfer-example"
REFERENCE = DOCS.split("\n## API reference", 1)[1].split("\n## ", 1)[0]
#: the modules whose every public class and function a plugin author may touch
AUTHOR_MODULES = (
    "autotransfer.specs",
    "autotransfer.strategy",
    "autotransfer.backbone",
    "autotransfer.testing",
)


@pytest.fixture(autouse=True)
def _fresh_host():
    reset_host()
    with single_threaded():
        yield


def documented_files() -> dict[str, str]:
    """The page's code blocks that name a file (```python title="PATH"), joined per file with two
    blank lines, as the tutorial says."""
    blocks: dict[str, list[str]] = {}
    for title, code in re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', DOCS, flags=re.S):
        blocks.setdefault(title, []).append(code.strip("\n"))
    return {title: "\n\n\n".join(parts) + "\n" for title, parts in blocks.items()}


def module_from_docs(title: str, name: str | None = None) -> types.ModuleType:
    """A file on the page, imported as a module (of the file's name unless ``name`` is given)."""
    module = types.ModuleType(name or Path(title).stem)
    exec(compile(documented_files()[title], title, "exec"), module.__dict__)
    return module


# the reference: signatures ---------------------------------------------------------------------------
class Shown:
    """A default as the page writes it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shown(value):
    if callable(value) and not isinstance(value, type):
        return Shown("...")  # a function default (``lambda: True``) is written "..."
    if isinstance(value, frozenset):
        return Shown("frozenset({" + ", ".join(sorted(map(repr, value))) + "})")
    return value


def shown_factory(factory) -> Shown:
    known = {dict: "{}", list: "[]", tuple: "()"}
    return Shown(known.get(factory) or f"{factory.__name__}()")


def code_signature(obj) -> str:
    """``(a, b, *, c=1)``: parameter names, kinds and defaults, without annotations or ``self``."""
    factories = {}
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        factories = {
            f.name: f.default_factory
            for f in dataclasses.fields(obj)
            if f.default_factory is not dataclasses.MISSING
        }
    signature = inspect.signature(obj)
    parameters = []
    for p in signature.parameters.values():
        if p.name == "self":
            continue
        if p.name in factories:
            default = shown_factory(factories[p.name])
        else:
            default = p.default if p.default is p.empty else shown(p.default)
        parameters.append(p.replace(annotation=p.empty, default=default))
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def reference_sections() -> dict[str, str]:
    """The API reference's text under each ``### `module``` heading."""
    parts = re.split(r"^### (.*)$", REFERENCE, flags=re.M)
    return {heading.strip("` "): text for heading, text in zip(parts[1::2], parts[2::2])}


def documented_entries() -> list[tuple[str, str, str | None]]:
    """(module, dotted name, signature or None) for each ``- `NAME(...)``` line of the reference."""
    entries = []
    for module, text in reference_sections().items():
        if not module.startswith("autotransfer"):
            continue
        for line in text.splitlines():
            entry = re.match(r"- `([\w.]+)(\([^`]*\))?`", line)
            if entry:
                entries.append((module, entry.group(1), entry.group(2)))
    return entries


@functools.cache
def instance_attributes() -> dict[str, object]:
    """Objects whose attributes are set in ``__init__``: a real Backbone and TransferModel."""
    from autotransfer.backbone import TransferModel
    from autotransfer.testing import build_tiny_backbone

    model = TransferModel(build_tiny_backbone(pretrained=False), 3)
    return {"Backbone": model.backbone, "TransferModel": model}


def resolve(module: str, dotted: str):
    obj = importlib.import_module(module)
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part) and i == len(parts) - 1 and parts[0] in instance_attributes():
            return getattr(instance_attributes()[parts[0]], part)
        obj = getattr(obj, part)
    return obj


def test_the_reference_documents_entries():
    entries = documented_entries()
    assert len([e for e in entries if e[2] is not None]) >= 30, "the API reference lost its signature lines"


@pytest.mark.parametrize(
    "module, name, documented",
    documented_entries(),
    ids=[f"{m}.{n}" for m, n, _ in documented_entries()],
)
def test_documented_signature_is_the_code_s(module, name, documented):
    obj = resolve(module, name)  # an entry the code does not have fails here
    if documented is not None:
        assert documented == code_signature(obj), f"docs/plugins.md: `{name}{documented}`"


@pytest.mark.parametrize("module", AUTHOR_MODULES)
def test_every_class_and_function_a_plugin_touches_is_documented(module):
    section = reference_sections().get(module)
    assert section is not None, f"docs/plugins.md has no API reference section for {module}"
    mod = importlib.import_module(module)
    public = [
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module
    ]
    undocumented = [n for n in public if f"`{n}`" not in section and f"`{n}(" not in section]
    assert not undocumented, f"not in the API reference of docs/plugins.md: {undocumented}"
    if module == "autotransfer.testing":
        return  # its classes are conformance cases: their tests are not an API
    for name in public:
        cls = getattr(mod, name)
        if inspect.isclass(cls):
            fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
            methods = [m for m, f in vars(cls).items() if inspect.isfunction(f) and not m.startswith("_")]
            missing = [m for m in methods if m not in fields and f"`{name}.{m}(" not in section]
            assert not missing, f"methods of {name} not in docs/plugins.md: {missing}"


def callback_entries() -> list[tuple[str, str, str, str]]:
    """(callback, its documented arguments, class, field) for each line of "Callbacks a plugin writes"."""
    section = reference_sections()["Callbacks a plugin writes"]
    return re.findall(r"^- `(\w+)(\([^`]*\))` \(`(\w+)\.(\w+)`\)", section, flags=re.M)


def callback_implementations() -> dict[str, object]:
    """The tutorial's own callbacks, for fields whose type does not say the arguments; the
    tutorial's search (below) shows the engine calls them so."""
    from autotransfer.backbone import TransferModel
    from autotransfer.strategy import StrategyContext
    from autotransfer.testing import build_tiny_backbone

    example = module_from_docs("autotransfer-example/autotransfer_example/__init__.py", "tutorial")
    model = TransferModel(build_tiny_backbone(pretrained=False), 3)
    context = StrategyContext(backbone_name="tiny-cnn", modality="image", n_groups=3, max_epochs=1)
    plan = example.prepare_l2_sp(model, {"alpha": 0.1}, context)
    return {
        "BackboneSpec.build": example.build_lite0_gem,
        "StrategySpec.prepare": example.prepare_l2_sp,
        "Plan.extra_loss": plan.extra_loss,
        "TaskSpec.load": example.load,
        "TaskSpec.load_unlabeled": example.load_unlabeled,
    }


def test_callbacks_are_documented_with_the_arguments_they_get():
    from autotransfer import data, specs, strategy

    entries = callback_entries()
    classes = {c.__name__: c for m in (specs, strategy, data) for c in vars(m).values() if inspect.isclass(c)}
    implemented = callback_implementations()
    assert len(entries) >= 12
    for callback, documented, owner, field in entries:
        cls = classes[owner]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert field in fields, f"{owner} has no field {field}"
        names = [p.strip().split("=")[0] for p in documented.strip("()").split(",") if p.strip()]
        hint = typing.get_type_hints(cls)[field]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None -> X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        arguments = typing.get_args(hint)[0] if typing.get_args(hint) else ...
        default = fields[field].default
        if isinstance(arguments, list):  # Callable[[A, B], R]: the type says how many
            assert len(names) == len(arguments), f"{callback}{documented}: {owner}.{field} takes {arguments}"
        elif inspect.isfunction(default):  # a default to compare with
            assert documented == code_signature(default), f"{owner}.{field} defaults to {default}"
        else:
            function = implemented[f"{owner}.{field}"]
            assert names == list(inspect.signature(function).parameters), f"{callback}{documented}"


# the tutorial is the example plugin --------------------------------------------------------------
def test_the_tutorial_is_the_example_plugin_file_for_file():
    documented = {
        title.removeprefix("autotransfer-example/"): text
        for title, text in documented_files().items()
        if title.startswith("autotransfer-example/")
    }
    files = {
        path.relative_to(EXAMPLE).as_posix(): path.read_text()
        for path in sorted(EXAMPLE.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".toml") and "egg-info" not in path.as_posix()
    }
    assert sorted(documented) == sorted(files)
    for name, text in files.items():
        assert documented[name] == text, f"docs/plugins.md's {name} differs from {EXAMPLE / name}"


def test_the_tutorial_s_conformance_tests_find_its_data(tmp_path):
    """Step 6's test file as written: its task case writes data the task reads."""
    import autotransfer_example

    module = module_from_docs("tests/test_conformance.py")
    assert [c.name for c in (module.TestBackbone, module.TestStrategy, module.TestTask)] == [
        "lite0-gem",
        "l2-sp",
        "image-csv",
    ]
    assert module.TestTask.plugins == (autotransfer_example,)
    table = module.TestTask().sample_data(tmp_path, "image")
    assert autotransfer_example.detect(str(table))
    assert len(autotransfer_example.load(str(table)).classes) == 10


def test_a_plugin_package_written_from_the_tutorial_alone_installs_and_searches(tmp_path):
    """The tutorial's files, written as they are on the page, installed with pip (into a folder of
    their own, first on the path), then a search with its backbone, strategy and task."""
    source = tmp_path / "autotransfer-example"
    for title, text in documented_files().items():
        if title.startswith("autotransfer-example/"):
            path = tmp_path / title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    installed = subprocess.run([*pip, "--target", site, source], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    probe = "import json, autotransfer_example as m; from autotransfer.plugins import default_host as h; "
    probe += "print(json.dumps([m.__file__, [p for p in h().describe() if p['name'] == 'example']]))"
    module_file, described = json.loads(run("-c", probe).stdout)
    assert Path(module_file).is_relative_to(site)  # the copy built from the page, not another one
    assert described == [
        {
            "name": "example",
            "version": "0.1.0",
            "source": "autotransfer-example",
            "hooks": ["register_backbones", "register_strategies", "register_tasks"],
            "backbones": ["lite0-gem"],
            "strategies": ["l2-sp"],
            "tasks": ["image-csv"],
        }
    ]
    table = write_image_csv(tmp_path / "data")
    out = tmp_path / "out"
    options = ["--n-trials", "1", "--max-epochs", "1", "--image-size", "32", "--no-reference", "-q"]
    run(
        "-m",
        "autotransfer",
        "search",
        table,
        "-o",
        out,
        "--backbones",
        "lite0-gem",
        "--strategies",
        "l2-sp",
        *options,
    )
    best = read_json(out / "best.json")
    assert (best["backbone"], best["strategy"]) == ("lite0-gem", "l2-sp")
    assert best["test_metric"] is not None  # the exported model was loaded back, as predict does
    config = read_json(out / "model" / "config.json")
    assert (config["task"], config["backbone_plugin"]) == ("image-csv", "example")


# the one-file plugins on the page --------------------------------------------------------------------
def test_the_one_file_strategy_plugin_loads_as_written(tmp_path):
    plugin = tmp_path / "head_plus_top.py"
    plugin.write_text(documented_files()["head_plus_top.py"])
    line = cli("--plugin", plugin, "strategies", "head-*").output.split()
    assert line[:2] == ["head-plus-top", "head_plus_top"]  # name, then the plugin that registered it


MOBILENET = "tv-mobilenet-v3-small"


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> Path:
    """A weights file as a user would have one: a MobileNetV3-Small state dict, as safetensors."""
    import torch
    from safetensors.torch import save_file
    from torchvision.models import mobilenet_v3_small

    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = mobilenet_v3_small().state_dict()
    path = tmp_path_factory.mktemp("weights") / "mnv3s.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def mobilenet_plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "mobilenet_plugin.py"
    path.write_text(documented_files()["mobilenet_plugin.py"])
    return path


class TestTheRecipeBackbone(BackboneConformance):
    """The page's backbone from any library passes the conformance kit, with its weights file."""

    plugins = (module_from_docs("mobilenet_plugin.py"),)

    @pytest.fixture
    def spec_name(self, mobilenet_weights):
        return f"{MOBILENET}@{mobilenet_weights}"


def test_the_recipe_backbone_is_searched_with_a_regularised_strategy_and_predicts(
    mobilenet_plugin, mobilenet_weights, tmp_path
):
    """A torchvision model with local weights and L2-SP, as the issue's outside author tried; then
    predict, which needs the plugin again and says so, naming it, when it is missing."""
    from autotransfer.features.demo import export_digits

    data = export_digits(str(tmp_path / "digits"), per_class=4)
    out = tmp_path / "out"
    name = f"{MOBILENET}@{mobilenet_weights}"
    options = ["--n-trials", "1", "--max-epochs", "1", "--image-size", "32", "--no-reference", "-q"]
    cli(
        "--plugin",
        mobilenet_plugin,
        "search",
        data,
        "-o",
        out,
        "--backbones",
        name,
        "--strategies",
        "l2-sp",
        *options,
    )
    assert read_json(out / "model" / "config.json")["backbone_plugin"] == "mobilenet_plugin"
    image = sorted(data.rglob("*.png"))[0]
    reset_host()
    assert cli("--plugin", mobilenet_plugin, "predict", out / "model", image).output.startswith(str(image))
    reset_host()
    error = cli("predict", out / "model", image, expect=2).output
    assert error == (
        f"error: {out / 'model'}: backbone {name!r} comes from plugin 'mobilenet_plugin', which is not "
        "loaded; install it, or load it with `autotransfer --plugin FILE_OR_FOLDER ...`\n"
    )


def test_the_recipe_backbone_without_weights_is_refused_before_any_trial(mobilenet_plugin, tmp_path):
    from autotransfer.features.demo import export_digits

    data = export_digits(str(tmp_path / "digits"), per_class=2)
    out = tmp_path / "out"
    error = cli(
        "--plugin", mobilenet_plugin, "search", data, "-o", out, "--backbones", MOBILENET, expect=2
    ).output
    assert error.startswith(f"error: backbone {MOBILENET}: its pretrained weights are not available")
    assert error.count("\n") == 1 and "NAME@" in error
    assert not (out / "leaderboard.csv").exists()
