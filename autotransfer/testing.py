"""Conformance tests for plugin authors, and a way to register a plugin for one test.

Subclass a case and name what your plugin registers; every ``test_*`` method then runs real, tiny
work on CPU (seconds, not minutes)::

    from autotransfer.testing import BackboneConformance, StrategyConformance, TaskConformance
    import my_plugin

    class TestMyBackbone(BackboneConformance):
        name = "my-backbone"
        plugins = (my_plugin,)      # harmless once installed: an entry point loaded it already

``plugins`` registers the objects for each test unless the host has loaded them already, which is
what happens once the plugin is installed (its entry point imports the same module), so keeping it
does no harm; a second, different copy of the plugin would clash with the installed one by name.

- ``BackboneConformance``: the transfer surface (features of ``feature_dim``, layer groups that
  cover the parameters in order, stages that compose to the features, pretrained weights that fit
  the architecture) and a one-trial search with a linear probe.
- ``StrategyConformance``: namespaced knobs, a plan that trains what it says (the frozen prefix
  stays unchanged through real training) and a one-trial search that exports a usable model.
- ``TaskConformance``: detection, deterministic loading, one-line errors for missing data,
  encoding a backbone reads, and a one-trial search. Override ``sample_data`` for a layout of your own.

Strategies and tasks are tried on ``tiny-cnn``, a random-init CNN this module registers, so their
tests do not wait for a real backbone; name ``backbone`` to use another (text strategies must).

For the ``autotransfer_plugin`` fixture add ``pytest_plugins = ["autotransfer.testing"]`` to your
conftest.py. Nothing here imports torch until a test runs.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .errors import UserError
from .hookspecs import hookimpl
from .plugins import KINDS, Host, default_host
from .specs import IMAGE, TEXT, BackboneSpec, TaskOptions, TaskSpec

TINY_BACKBONE = "tiny-cnn"


# registering plugins for a test -----------------------------------------------------------------
def _plugin_name(plugin: Any) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


@contextlib.contextmanager
def register_plugin(plugin: Any, name: str | None = None) -> Iterator[Host]:
    """Register ``plugin`` (a module, class or instance with ``@hookimpl`` functions) with the
    process-wide host for the ``with`` block; yields the host."""
    host = default_host()
    name = name or _plugin_name(plugin)
    host.add(plugin, name, "test", source="autotransfer.testing")
    try:
        yield host
    finally:
        if host.pm.has_plugin(name):
            host.remove(name)


@pytest.fixture
def autotransfer_plugin():
    """``autotransfer_plugin(obj, name=None)`` registers a plugin object until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda plugin, name=None: stack.enter_context(register_plugin(plugin, name))


def registered(kind: str, *, modality: str | None = None, source: str | None = None) -> list[str]:
    """Names the loaded plugins registered, for ``pytest.mark.parametrize`` or fixture params:
    only those of ``modality``, or of plugins installed by the distribution ``source``."""
    host = default_host()
    registry = host.registry
    names = []
    for name in registry.names(kind):
        spec = registry.get(kind, name)
        owner = registry.owner[(kind, name)]
        if modality is not None and getattr(spec, "modality", modality) != modality:
            continue
        if modality is not None and kind == "strategies" and modality not in spec.modalities:
            continue
        if source is not None and host.sources.get(owner) != source:
            continue
        names.append(name)
    return names


# a backbone small enough to try any image strategy or task on -------------------------------------
TINY_PREPROCESSING = {
    "image_size": 16,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
}


def build_tiny_backbone(pretrained: bool = True):
    """Three layer groups (two conv blocks, a pooled linear layer) with stages. Its "pretrained"
    weights are always the same (seeded), as real ones are: cached activations stay valid."""
    import torch
    from torch import nn

    from .backbone import Backbone

    with torch.random.fork_rng():  # seeds without touching the caller's random state
        if pretrained:
            torch.manual_seed(0)
        body = nn.Sequential(
            OrderedDict(
                stem=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                block=nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
                head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 16), nn.ReLU()),
            )
        )
    names = list(body._modules)
    groups = [[f"{name}.{p}" for p, _ in getattr(body, name).named_parameters()] for name in names]
    # stages reach submodules by attribute: a strategy may wrap the body (peft does), forwarding attributes
    stages = [lambda module, x, _name=name: getattr(module, _name)(x) for name in names]
    return Backbone(
        body, feature_dim=16, layer_groups=groups, preprocessing=TINY_PREPROCESSING, stages=stages
    )


class TinyBackbonePlugin:
    """Registers ``tiny-cnn``, the backbone strategy and task conformance tests train."""

    @hookimpl
    def register_backbones(self, register):
        register(
            BackboneSpec(
                name=TINY_BACKBONE,
                modality=IMAGE,
                build=build_tiny_backbone,
                feature_dim=16,
                description="a random-init three-group CNN for tests (autotransfer.testing)",
                preprocessing=TINY_PREPROCESSING,
            )
        )


# data and a one-trial search ------------------------------------------------------------------------
@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Tiny work runs on one CPU thread: on a shared machine several threads per process spin
    against each other and run several times slower; tiny models gain nothing from them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sample_data(modality: str, folder: Path) -> Path:
    """A few real labelled examples per class, in the layout the bundled tasks read."""
    from .features.demo import export_bbc, export_digits

    if modality == IMAGE:
        return export_digits(str(folder / "digits"), per_class=4)
    if modality == TEXT:
        return export_bbc(str(folder / "bbc.csv"), per_class=4)
    raise NotImplementedError(f"no sample data for modality {modality!r}; override sample_data")


def probe_name(modality: str) -> str:
    """The strategy registered as the probe (role ``probe``) for ``modality``."""
    from .engine.candidates import probe_or_error

    return probe_or_error(default_host(), modality, "the conformance kit").name


def tiny_search(data: Path, out: Path, **options):
    """One trial of at most ``max_epochs`` (default 1) on CPU, no reference, no ranking."""
    from .config import SearchConfig
    from .engine.run import run_search

    settings = dict(
        n_trials=1,
        max_epochs=1,
        image_size=32,
        max_length=32,
        reference=False,
        rank=False,
        device="cpu",
        quiet=True,
    )
    return run_search(SearchConfig(data=str(data), output=str(out), **(settings | options)))


def assert_trial_completed(result, *, backbone: str, strategy: str) -> None:
    """The one trial completed, scored in [0, 1], and its exported model was reloaded and tested."""
    board = result.leaderboard
    assert result.best is not None, f"the trial failed: {board.to_dict('records')}"
    assert list(board.state) == ["COMPLETE"]
    assert (result.best["backbone"], result.best["strategy"]) == (backbone, strategy)
    assert 0.0 <= result.best["val_metric"] <= 1.0
    assert result.best["test_metric"] is not None  # finalize reloaded the exported model to test it
    assert (result.out_dir / "model" / "model.safetensors").is_file()


# the conformance cases ----------------------------------------------------------------------------------
class _Conformance:
    """What the three cases share: which spec, which plugins to register, which data."""

    kind: str
    #: the registered name under test
    name: str
    #: plugin objects to register for each test (an author's plugin before it is installed); one the
    #: host has loaded already (installed: its entry point imported that module) is left as it is
    plugins: tuple = ()
    #: image side and text length (tokens) for trials: small is fast
    image_size: int = 32
    max_length: int = 32
    _required: tuple = ()

    @pytest.fixture(autouse=True)
    def _registered_plugins(self):
        with contextlib.ExitStack() as stack:
            stack.enter_context(single_threaded())
            for plugin in (*self._required, *self.plugins):
                if not default_host().pm.is_registered(plugin):
                    stack.enter_context(register_plugin(plugin))
            yield

    @pytest.fixture
    def spec_name(self) -> str:
        """The name under test; override with ``params=registered(...)`` to run over a registry."""
        return self.name

    @pytest.fixture
    def spec(self, spec_name):
        host = default_host()
        spec = (
            host.backbone(spec_name) if self.kind == "backbones" else host.registry.get(self.kind, spec_name)
        )
        assert isinstance(spec, KINDS[self.kind]), f"{spec_name!r} is a {type(spec).__name__}"
        return spec

    def sample_data(self, folder: Path, modality: str) -> Path:
        """Write labelled data of ``modality`` under ``folder``; override for a task's own layout."""
        return sample_data(modality, folder)

    def modality_of(self, spec) -> str:
        return spec.modality

    @pytest.fixture
    def data(self, spec, tmp_path_factory) -> Path:
        """Written once per test class and modality for the whole session."""
        key = (type(self), self.modality_of(spec))
        if key not in _SAMPLES:
            _SAMPLES[key] = self.sample_data(tmp_path_factory.mktemp("sample"), key[1])
        return _SAMPLES[key]


_SAMPLES: dict = {}


class _TrainsOnABackbone(_Conformance):
    """Strategies and tasks are tried on a backbone: ``tiny-cnn`` unless the class names one."""

    #: the backbone to train; None: ``tiny-cnn`` for images, the first available one otherwise
    backbone: str | None = None
    _required = (TinyBackbonePlugin(),)

    def trial_backbone(self, spec) -> str:
        """The backbone strategies and tasks train: ``backbone`` if set, else ``tiny-cnn`` for images."""
        if self.backbone:
            return self.backbone
        if self.modality_of(spec) == IMAGE:
            return TINY_BACKBONE
        available = [
            n
            for n in registered("backbones", modality=self.modality_of(spec))
            if default_host().backbone(n).available()
        ]
        if not available:
            pytest.skip(
                f"no {self.modality_of(spec)} backbone can load here; set `backbone` on the test class"
            )
        return available[0]


class BackboneConformance(_Conformance):
    """Subclass with ``name = "your-backbone"``."""

    kind = "backbones"
    #: parameters outside every layer group train only when nothing is frozen; set True to allow them
    ungrouped_ok: bool = False

    def test_spec(self, spec, spec_name):
        assert spec_name in (spec.name, *spec.aliases)
        assert spec.feature_dim > 0 and spec.description and spec.modality
        if spec.modality == IMAGE:
            assert {"image_size", "mean", "std"} <= set(spec.preprocessing)

    def test_surface(self, spec):
        from .backbone import Backbone

        backbone = spec.build(pretrained=False)
        assert isinstance(backbone, Backbone), "build() must return an autotransfer.backbone.Backbone"
        assert backbone.feature_dim == spec.feature_dim
        groups = backbone.layer_groups
        assert groups and all(groups), "layer groups: a non-empty list of non-empty lists of parameter names"
        flat = [name for group in groups for name in group]
        assert len(flat) == len(set(flat)), "a parameter sits in two layer groups"
        position = {name: i for i, (name, _) in enumerate(backbone.named_parameters())}
        firsts = [min(position[name] for name in group) for group in groups]
        assert firsts == sorted(firsts), "layer groups must run from the input to the output"
        if not self.ungrouped_ok:
            grouped = set(flat)
            ungrouped = [name for name, _ in backbone.named_parameters() if name not in grouped]
            assert not ungrouped, (
                f"parameters outside every layer group: {', '.join(ungrouped[:10])}"
                + (f" and {len(ungrouped) - 10} more" if len(ungrouped) > 10 else "")
                + "; give each to a layer group (names relative to the Backbone, body.NAME), "
                "or set ungrouped_ok = True"
            )

    def test_features(self, spec, data):
        import torch

        backbone = spec.build(pretrained=False).eval()
        x = _sample_inputs(backbone, data, self, _task_reading(data, spec.modality))
        with torch.no_grad():
            features = backbone.forward_features(x)
            assert tuple(features.shape) == (4, spec.feature_dim)
            assert torch.isfinite(features).all()
            if backbone.supports_prefix:  # the activation cache splits the network at any group
                n = len(backbone.layer_groups)
                for k in range(n + 1):
                    split = backbone.forward_range(backbone.forward_range(x, 0, k), k, n)
                    torch.testing.assert_close(split, features, rtol=1e-4, atol=1e-4)

    def test_pretrained_weights_fit_the_architecture(self, spec):
        import torch

        if not spec.available():
            pytest.skip(f"{spec.name}: pretrained weights are not installed here")
        random_init = spec.build(pretrained=False).state_dict()
        pretrained = spec.build(pretrained=True).state_dict()
        assert pretrained.keys() == random_init.keys()
        assert any(
            not torch.equal(pretrained[k], random_init[k])
            for k in pretrained
            if pretrained[k].is_floating_point()
        ), "build(pretrained=True) loaded no weights"

    def test_tiny_search(self, spec, spec_name, data, tmp_path):
        result = tiny_search(
            data,
            tmp_path / "out",
            backbones=[spec_name],
            strategies=[probe_name(spec.modality)],
            image_size=self.image_size,
            max_length=self.max_length,
            random_init=not spec.available(),
        )
        assert_trial_completed(result, backbone=spec_name, strategy=probe_name(spec.modality))


class StrategyConformance(_TrainsOnABackbone):
    """Subclass with ``name = "your-strategy"`` (and ``backbone`` for a text-only strategy)."""

    kind = "strategies"

    def modality_of(self, spec) -> str:
        return IMAGE if IMAGE in spec.modalities else sorted(spec.modalities)[0]

    def _options(self, spec, data) -> dict:
        """Data streams the strategy needs: the sample data serves as target domain and related task."""
        return {
            "backbones": [self.trial_backbone(spec)],
            "strategies": [spec.name],
            "image_size": self.image_size,
            "max_length": self.max_length,
            "target_unlabeled": str(data) if spec.needs_target else None,
            "aux_tasks": [str(data)] if spec.needs_aux else [],
        }

    def test_spec(self, spec):
        low, high = spec.lr_range
        assert spec.description and 0 < low < high
        assert spec.modalities and all(isinstance(m, str) for m in spec.modalities)

    def test_knobs_are_namespaced(self, spec):
        import optuna

        from .strategy import StrategyContext

        for n_groups in (1, 3):
            trial = optuna.create_study().ask()
            context = StrategyContext(
                backbone_name=TINY_BACKBONE,
                modality=self.modality_of(spec),
                n_groups=n_groups,
                max_epochs=3,
                epochs=3,
                streams=("target", "aux0"),
                aux_classes=(3,),
            )
            knobs = spec.suggest(trial, context)
            assert isinstance(knobs, dict)
            foreign = [p for p in trial.params if not p.startswith(f"{spec.name}.")]
            assert not foreign, f"knobs must be named {spec.name}.KNOB: {foreign}"

    def test_plan_trains_what_it_says(self, spec, data):
        """Real training, two epochs: the frozen prefix never changes; something else does."""
        import optuna
        import torch

        from .config import SearchConfig
        from .engine.problem import open_problem
        from .engine.trial import build_trial
        from .strategy import Plan

        config = SearchConfig(data=str(data), device="cpu", max_epochs=2, **self._options(spec, data))
        problem = open_problem(config, default_host())
        trainer, _ = build_trial(problem, optuna.create_study().ask())
        plan, model = trainer.plan, trainer.model
        assert isinstance(plan, Plan), "prepare must return an autotransfer.strategy.Plan"
        n_groups = len(model.backbone.layer_groups)
        assert 0 <= plan.frozen_prefix <= n_groups
        in_optimiser = [p for group in plan.param_groups for p in group["params"]]
        assert in_optimiser, "the plan trains nothing"
        assert len({id(p) for p in in_optimiser}) == len(in_optimiser), "a parameter is in two param groups"
        frozen = [p for group in model.backbone.group_parameters()[: plan.frozen_prefix] for p in group]
        # the trainer caches activations below frozen_prefix: what it claims frozen must be frozen
        assert not any(p.requires_grad for p in frozen), "frozen_prefix covers parameters that require grad"
        assert not {id(p) for p in frozen} & {id(p) for p in in_optimiser}, (
            "frozen_prefix parameters are optimised"
        )
        before = {id(p): p.detach().clone() for p in model.parameters()}
        try:
            trainer.fit()
        finally:
            problem.close()
        assert all(math.isfinite(h["train_loss"]) for h in trainer.history)
        assert all(torch.equal(p, before[id(p)]) for p in frozen), "a parameter of the frozen prefix changed"
        assert any(not torch.equal(p, before[id(p)]) for p in model.parameters()), "training changed nothing"

    def test_tiny_search(self, spec, data, tmp_path):
        options = self._options(spec, data)
        result = tiny_search(data, tmp_path / "out", max_epochs=2, **options)
        assert_trial_completed(result, backbone=options["backbones"][0], strategy=spec.name)


class TaskConformance(_TrainsOnABackbone):
    """Subclass with ``name = "your-task"``; override ``sample_data(folder, modality)`` for your layout."""

    kind = "tasks"

    def predict_inputs(self, data: Path) -> list[str]:
        """Inputs ``predict`` reads (files for the image tasks); [] skips the prediction check."""
        return [str(p) for p in sorted(Path(data).rglob("*.png"))[:2]] if Path(data).is_dir() else []

    def test_spec(self, spec):
        assert spec.description and spec.modality and spec.layouts and spec.metric

    def test_detects_its_layout_only(self, spec, data, tmp_path):
        assert spec.detect(str(data)) is True
        (tmp_path / "empty").mkdir()
        assert not spec.detect(str(tmp_path / "empty"))
        assert not spec.detect(str(tmp_path / "missing"))

    def test_loads_labelled_examples_the_same_way_twice(self, spec, data):
        from .data import Dataset

        first, second = spec.load(str(data), TaskOptions()), spec.load(str(data), TaskOptions())
        assert isinstance(first, Dataset)
        assert len(first.items) == len(first.labels) > 0
        assert len(set(first.classes)) == len(first.classes) >= 2
        assert set(first.labels) == set(range(len(first.classes)))
        assert len(set(first.items)) == len(first.items), (
            "items name examples in the saved split: keep them unique"
        )
        assert (first.items, first.labels, first.classes) == (second.items, second.labels, second.classes), (
            "loading must be deterministic: a resumed study maps its saved split back by item"
        )

    def test_missing_data_is_a_one_line_user_error(self, spec, tmp_path):
        missing = str(tmp_path / "missing")
        with pytest.raises(UserError) as error:
            spec.load(missing, TaskOptions())
        assert "\n" not in str(error.value) and "missing" in str(error.value)

    def test_encodes_what_the_backbone_reads(self, spec, data):
        import torch

        backbone = default_host().backbone(self.trial_backbone(spec)).build(pretrained=False).eval()
        with torch.no_grad():
            features = backbone.forward_features(_sample_inputs(backbone, data, self, task=spec))
        assert tuple(features.shape) == (4, backbone.feature_dim)

    def test_reads_unlabeled_inputs(self, spec, data):
        if spec.load_unlabeled is None:
            pytest.skip(f"task {spec.name} reads no unlabelled data")
        inputs = self.predict_inputs(data) or [str(data)]
        unlabeled = spec.load_unlabeled(inputs, TaskOptions())
        assert unlabeled.labels is None and len(unlabeled.items) >= 1

    def test_tiny_search(self, spec, data, tmp_path):
        backbone = self.trial_backbone(spec)
        result = tiny_search(
            data,
            tmp_path / "out",
            task=spec.name,
            backbones=[backbone],
            strategies=[probe_name(spec.modality)],
            image_size=self.image_size,
            max_length=self.max_length,
        )
        assert_trial_completed(result, backbone=backbone, strategy=probe_name(spec.modality))
        inputs = self.predict_inputs(data)
        if inputs:
            rows = result.predict(inputs)
            assert [row["input"] for row in rows] == inputs
            classes = result.study.user_attrs["classes"]
            assert all(row["label"] in classes and 0 <= row["probability"] <= 1 for row in rows)


def _task_reading(data: Path, modality: str) -> TaskSpec:
    registry = default_host().registry
    tasks = [registry.get("tasks", name) for name in registered("tasks", modality=modality)]
    task = next((t for t in tasks if t.detect(str(data))), None)
    assert task is not None, f"no registered {modality} task reads {data}"
    return task


def _sample_inputs(backbone, data: Path, case: _Conformance, task: TaskSpec, n: int = 4):
    """``n`` real examples of ``data``, encoded and prepared the way a trial does."""
    dataset = task.load(str(data), TaskOptions())
    preprocessing = dict(backbone.preprocessing)
    for key in ("image_size", "max_length"):
        if key in preprocessing:
            preprocessing[key] = getattr(case, key)
    return dataset.prepare(dataset.encode(list(range(n)), preprocessing), preprocessing, train=False)
