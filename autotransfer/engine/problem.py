"""The problem a search solves: the task, its data and split, the candidate backbones and
strategies, the resolutions worth trying, and the encoded streams trials train on. It knows no
study: ranking and the conformance kit build one with a fresh split, the search with the split its
study keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import SearchConfig
from ..data import Dataset, split_indices, subsample
from ..errors import UserError
from ..plugins import Host
from ..specs import BackboneSpec, StrategySpec, TaskSpec
from . import candidates


@dataclass
class Inputs:
    """The data a search reads: the labelled examples and whatever else the user gave."""

    task: TaskSpec
    dataset: Dataset
    #: unlabelled target-domain inputs (domain adaptation)
    target: Dataset | None = None
    #: labelled target data: reported beside the search, never optimised
    target_eval: Dataset | None = None
    #: related labelled tasks (multi-task)
    aux: list[Dataset] = field(default_factory=list)


def load_inputs(config: SearchConfig, host: Host) -> Inputs:
    task = candidates.pick_task(host, config)
    options = config.task_options
    dataset = task.load(config.data, options)
    inputs = Inputs(task=task, dataset=dataset)
    if config.target_unlabeled:
        if task.load_unlabeled is None:
            raise UserError(f"--target-unlabeled: task {task.name} cannot read unlabelled data")
        if not Path(config.target_unlabeled).exists():
            raise UserError(f"--target-unlabeled {config.target_unlabeled}: no such file or folder")
        inputs.target = task.load_unlabeled([config.target_unlabeled], options)
    if config.target_eval:
        inputs.target_eval = _load_labelled(task, config.target_eval, "--target-eval", options, dataset)
    inputs.aux = [_load_labelled(task, path, "--aux-task", options) for path in config.aux_tasks]
    return inputs


def _load_labelled(
    task: TaskSpec, path: str, option: str, options, same_as: Dataset | None = None
) -> Dataset:
    if not Path(path).exists():
        raise UserError(f"{option} {path}: no such file or folder")
    dataset = task.load(path, options)
    if same_as is not None:
        unknown = sorted(set(dataset.classes) - set(same_as.classes))
        if unknown:
            raise UserError(
                f"{option} {path}: classes {', '.join(unknown)} are not in the labelled data; use the "
                "same class names"
            )
        position = {name: i for i, name in enumerate(same_as.classes)}
        dataset.labels = [position[dataset.classes[label]] for label in dataset.labels]
        dataset.classes = list(same_as.classes)
    return dataset


def new_split(dataset: Dataset, config: SearchConfig) -> dict[str, list[int]]:
    """Stratified and seeded; the training part shrunk by --shots or --train-fraction."""
    split = split_indices(
        dataset.labels, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
    )
    split["train"] = subsample(
        dataset.labels, split["train"], fraction=config.train_fraction, shots=config.shots, seed=config.seed
    )
    return split


class Persisted(Protocol):
    """Where a search keeps what must stay the same across its runs and workers (its study)."""

    def split(self, task: TaskSpec, dataset: Dataset) -> dict[str, list[int]]: ...

    def input_sizes(self, proposed: list[int]) -> list[int]: ...


def searched_sizes(
    config: SearchConfig, task: TaskSpec, dataset: Dataset, backbones: list[BackboneSpec]
) -> list[int]:
    """The resolutions to search: the task's choice between the data's own size and the smallest
    native size among the candidates; none when pinned or the task has no resolution."""
    key = task.size_key
    if key is None or task.input_sizes is None or key in config.pinned_preprocessing:
        return []
    natives = [int(b.preprocessing[key]) for b in backbones if key in b.preprocessing]
    if not natives:
        return []
    return sorted({int(s) for s in task.input_sizes(dataset, min(natives))})


@dataclass
class Problem:
    """Everything a trial needs that does not change between trials."""

    config: SearchConfig
    host: Host
    inputs: Inputs
    backbones: list[BackboneSpec]
    strategies: list[StrategySpec]
    split: dict[str, list[int]]
    device: object
    #: resolutions searched (cheapest first); empty when pinned or not applicable
    input_sizes: list[int]

    def __post_init__(self) -> None:
        from ..training.cache import Caches

        # activations past the memory cap spill here, and are reused from disk
        self.caches = Caches.create(
            activation_bytes=int(self.config.cache_memory_gb * (1 << 30)),
            spill_dir=self.config.out_dir / "cache",
        )
        self.strategy_by_name = {s.name: s for s in self.strategies}
        #: seconds measured while trials were built, for the cost model: ("build", backbone) and
        #: ("decode", size) per example
        self.timings: dict[tuple[str, str], float] = {}
        self.built_preprocessing: dict[str, dict] = {}
        #: layer groups of each backbone built so far (by ``built``)
        self.layer_groups: dict[str, int] = {}

    @property
    def task(self) -> TaskSpec:
        return self.inputs.task

    @property
    def dataset(self) -> Dataset:
        return self.inputs.dataset

    @property
    def modality(self) -> str:
        return self.inputs.task.modality

    @property
    def metric(self) -> str:
        if self.inputs.target is not None:
            from ..training.validation import METRIC

            return METRIC
        return self.inputs.task.metric

    def searched_role(self, role: str) -> StrategySpec | None:
        """The searched strategy playing ``role`` (PROBE, REFERENCE), if one is searched."""
        return candidates.with_role(self.host, role, self.modality, self.strategies)

    def role(self, role: str) -> StrategySpec | None:
        """The strategy playing ``role``: a searched one first, else any registered one."""
        return self.searched_role(role) or candidates.with_role(self.host, role, self.modality)

    def backbone_spec(self, name: str) -> BackboneSpec:
        return next(b for b in self.backbones if b.name == name)

    def preprocessing(self, backbone: BackboneSpec, size: int | None = None) -> dict:
        """The backbone's preprocessing (as its built model states it, once one was built: a text
        backbone adds its tokenizer), with the user's pinned values and the searched size."""
        preprocessing = dict(self.built_preprocessing.get(backbone.name, backbone.preprocessing))
        for key, value in self.config.pinned_preprocessing.items():
            if key in preprocessing or key == self.task.size_key:
                preprocessing[key] = value
        if size is not None and self.task.size_key:
            preprocessing[self.task.size_key] = size
        return preprocessing

    def built(self, name: str, backbone) -> None:
        """A backbone was built: its model's own preprocessing is the one to use, and its number of
        layer groups is known (a strategy's knobs can then be sampled before the next is built)."""
        self.built_preprocessing[name] = dict(backbone.preprocessing)
        self.layer_groups[name] = len(backbone.layer_groups)

    def batch_size_choices(self) -> list[int]:
        """The configured batch sizes that fit the training split (at least the smallest)."""
        n_train = len(self.split["train"])
        return [b for b in self.config.batch_sizes if b <= max(2, n_train)] or [min(self.config.batch_sizes)]

    def extra_streams(self) -> tuple[str, ...]:
        inputs = self.inputs
        return (("target",) if inputs.target is not None else ()) + tuple(
            f"aux{i}" for i in range(len(inputs.aux))
        )

    def close(self) -> None:
        self.caches.clear()


def open_problem(
    config: SearchConfig, host: Host, *, inputs: Inputs | None = None, persisted: Persisted | None = None
) -> Problem:
    """The problem for ``config``: with ``persisted`` (the study) its saved split and sizes, else a
    fresh split."""
    from .devices import resolve_device

    inputs = inputs or load_inputs(config, host)
    backbones = candidates.pick_backbones(host, config, inputs.task.modality)
    strategies = candidates.pick_strategies(host, config, inputs.task.modality)
    candidates.check_backbones_load(backbones, config.random_init)
    device = resolve_device(config.device)
    sizes = searched_sizes(config, inputs.task, inputs.dataset, backbones)
    if persisted is None:
        split = new_split(inputs.dataset, config)
    else:
        split = persisted.split(inputs.task, inputs.dataset)
        sizes = persisted.input_sizes(sizes)
    return Problem(config, host, inputs, backbones, strategies, split, device, sizes)
