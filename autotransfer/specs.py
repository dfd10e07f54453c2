"""Frozen dataclasses that plugins register: metadata plus factories.

Nothing here imports torch; the factories do, when a trial calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IMAGE = "image"
TEXT = "text"

#: strategy roles: what the search uses a strategy for besides searching it
#: the cheap, strong baseline the search starts from and ranks backbones with (a linear probe)
PROBE = "probe"
#: the random-init reference transfer is judged against (never searched unless asked for by name)
REFERENCE = "reference"

#: a trial's user attribute: a fixed recipe queued from outside the search (the benchmark's default
#: recipe): never skipped for its predicted cost; it trains fewer epochs when all would not fit, and
#: when not even one fits, as far as the budget lets it
FIXED = "fixed"

ROLES = ("", PROBE, REFERENCE)


@dataclass(frozen=True)
class BackboneSpec:
    """A pretrained network that can be transferred.

    ``build(pretrained=...)`` returns an ``autotransfer.backbone.Backbone``: a torch module with
    ``forward_features(inputs) -> (N, feature_dim)``, ``layer_groups`` (ordered lists of parameter
    names, input to output, relative to the Backbone: ``body.`` + the wrapped module's names) and
    ``preprocessing`` (what the task needs to turn files into inputs).

    ``build(pretrained=False)`` must work with no weights anywhere (random init: the reference,
    ``predict`` before loading the exported weights). ``build(pretrained=True)`` loads real weights,
    the same on every call (activations of frozen layers are cached across trials), or raises a
    ``UserError`` saying what to do; ``available()`` tells the search beforehand, cheaply, and the
    search refuses a chosen backbone that is not available before its first trial.
    """

    name: str
    modality: str
    build: Callable[..., Any]
    feature_dim: int
    description: str = ""
    #: whether ``build(pretrained=True)`` can load real weights on this machine (checked cheaply)
    available: Callable[[], bool] = lambda: True
    #: part of the default candidate set when available
    default: bool = False
    aliases: tuple[str, ...] = ()
    #: default preprocessing: for images {"image_size", "mean", "std", "interpolation"}
    preprocessing: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategySpec:
    """A way to transfer a backbone: which knobs it adds and how it prepares the model.

    ``suggest(trial, context) -> dict`` samples the strategy's own hyperparameters, namespaced
    like ``lora.r`` (the dict's keys without the namespace). ``prepare(model, params, context) ->
    autotransfer.strategy.Plan`` gets the ``TransferModel`` (``model.backbone``, ``model.head``),
    those knobs and a ``StrategyContext``, and decides what trains (requires_grad, parameter
    groups, wrappers), any extra loss and training settings (``Plan.training``: weight decay...).
    """

    name: str
    description: str
    prepare: Callable[..., Any]
    suggest: Callable[..., dict] = lambda trial, context: {}
    #: log-uniform learning-rate range searched for this strategy
    lr_range: tuple[float, float] = (1e-5, 1e-2)
    modalities: frozenset[str] = frozenset({IMAGE, TEXT})
    #: False for the random-init reference
    pretrained: bool = True
    #: needs unlabelled target-domain data (domain adaptation)
    needs_target: bool = False
    #: needs related labelled tasks (multi-task)
    needs_aux: bool = False
    #: searched by default (when its needs are met)
    default: bool = True
    #: PROBE, REFERENCE, or "" for an ordinary strategy (see ``ROLES``)
    role: str = ""
    #: the strategy's own knob values (without the namespace, e.g. ``{"lr": 0.03}``) for the trials
    #: the search starts with: the probe's warm start, the reference, a strategy asked for by name;
    #: knobs not given here are sampled
    warm_start: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A domain task: which data layouts it reads and how it scores.

    ``detect(path) -> bool`` says whether the task reads ``path`` (cheap, never raises);
    ``load(path, options)`` returns an ``autotransfer.data.Dataset`` (items, labels, class names)
    without decoding inputs yet; ``options`` is a ``TaskOptions`` whose fields may all be None.
    ``augmentations``, ``size_key`` and ``input_sizes`` tell the search how to vary augmentation
    and input resolution for this task's data.
    """

    name: str
    modality: str
    description: str
    detect: Callable[[str], bool]
    load: Callable[..., Any]
    #: ``load_unlabeled(paths, options)``: files or folders without labels (predict, target domain);
    #: an input it cannot read is skipped with one warning naming it and listed in the dataset's
    #: ``notes``; it raises a ``UserError`` only when nothing is readable

    load_unlabeled: Callable[..., Any] | None = None
    metric: str = "accuracy"
    layouts: Sequence[str] = ()
    #: augmentation levels the dataset's ``prepare`` understands, "off" first; searched when anything
    #: below the head trains (empty: never augmented)
    augmentations: tuple[str, ...] = ()
    #: the preprocessing key that sets input resolution ("image_size"), searched between the data's
    #: own size and the backbone's (None: inputs are used at the backbone's size)
    size_key: str | None = None
    #: ``input_sizes(dataset, native) -> list[int]``: the resolutions worth searching for this data
    #: when the backbones' own is ``native``, cheapest first
    input_sizes: Callable[[Any, int], list[int]] | None = None
    #: how a pass's time grows with the size ``size_key`` sets, as a power of it: an image's side, 2
    #: (its pixels); a sequence's length, 1 (priced as the pixels, a 256-token pass of MiniLM was
    #: predicted at 3.6 times its measure from the 32- and 64-token ones)
    size_power: float = 2.0


@dataclass(frozen=True)
class TaskOptions:
    """What a user may tell a task about their files (``autotransfer search --text-column ...``)."""

    #: the text and label columns of a table, when their names do not say
    text_column: str | None = None
    label_column: str | None = None
    #: the files' encoding, when it is not UTF-8
    encoding: str | None = None
