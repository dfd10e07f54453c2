"""A trial, from sampled parameters to a ready trainer. The space is define-by-run: backbone, then
strategy, then the common knobs (learning rate, epochs, batch size, weight decay, resolution), then
the strategy's own knobs (namespaced, ``lora.r``), then augmentation when anything below the head
trains. No study in here: ``trial`` is anything with Optuna's ``suggest_*`` (a live trial, a
``FixedTrial``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..specs import BackboneSpec, StrategySpec
from .problem import Problem


@dataclass(frozen=True)
class Choices:
    """What the first part of the space decides, before anything is built (enough to predict cost)."""

    backbone: BackboneSpec
    strategy: StrategySpec
    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    #: the searched resolution (None when pinned, or the task has none)
    size: int | None
    #: the strategy's role when the trial plays it (the reference), else ""
    role: str = ""
    #: the strategy's own knobs, when sampled before building (see ``with_knobs``)
    knobs: dict | None = None


@dataclass(frozen=True)
class TrialInfo:
    """What the exported model's config records about the trial that made it."""

    backbone: str
    strategy: str
    preprocessing: dict
    role: str = ""


def choose(problem: Problem, trial, role: str = "") -> Choices:
    """Sample backbone, strategy and the common knobs. ``role`` fixes the strategy to the one playing
    it (the reference), which then is not a parameter."""
    config = problem.config
    backbone = problem.backbone_spec(
        trial.suggest_categorical("backbone", [b.name for b in problem.backbones])
    )
    if role:
        strategy = problem.role(role)
    else:
        names = sorted(problem.strategy_by_name)
        strategy = problem.strategy_by_name[trial.suggest_categorical("strategy", names)]
    trial.set_user_attr("backbone", backbone.name)
    trial.set_user_attr("strategy", strategy.name)
    lr = trial.suggest_float(f"{strategy.name}.lr", *strategy.lr_range, log=True)
    epochs = trial.suggest_int("epochs", 1, config.max_epochs)
    sizes = problem.batch_size_choices()
    batch_size = trial.suggest_categorical("batch_size", sizes) if len(sizes) > 1 else sizes[0]
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    size = None
    if problem.input_sizes:
        choices = problem.input_sizes
        size = trial.suggest_categorical(problem.task.size_key, choices) if len(choices) > 1 else choices[0]
    return Choices(backbone, strategy, lr, epochs, batch_size, weight_decay, size, role)


def with_knobs(problem: Problem, trial, choices: Choices) -> Choices:
    """``choices`` with the strategy's own knobs sampled, before anything is built, when the
    backbone's layer groups are known (it was built or measured before): a trial is then priced at
    its own freeze depth, not at the strategy's typical one."""
    n_groups = problem.layer_groups.get(choices.backbone.name)
    if n_groups is None:
        return choices
    context = strategy_context(problem, choices.backbone.name, n_groups, choices.epochs)
    return replace(choices, knobs=choices.strategy.suggest(trial, context))


def build_trial(problem: Problem, trial, role: str = "", choices: Choices | None = None):
    """Sample the space (unless ``choices`` are given) and build model, plan and trainer; returns
    (trainer, TrialInfo). Nothing trains yet."""
    import torch

    from ..backbone import TransferModel, place

    choices = choices or choose(problem, trial, role)
    config, strategy = problem.config, choices.strategy
    seed = config.seed + getattr(trial, "number", 0)
    torch.manual_seed(seed)
    pretrained = strategy.pretrained and not config.random_init
    started = time.perf_counter()
    backbone = choices.backbone.build(pretrained=pretrained)
    problem.timings[("build", choices.backbone.name)] = time.perf_counter() - started
    problem.built(choices.backbone.name, backbone)

    context = strategy_context(problem, choices.backbone.name, len(backbone.layer_groups), choices.epochs)
    knobs = choices.knobs if choices.knobs is not None else strategy.suggest(trial, context)
    model = TransferModel(backbone, len(problem.dataset.classes))
    plan = strategy.prepare(model, knobs, context)
    model = plan.model if plan.model is not None else model
    augment = "off"
    if problem.task.augmentations and plan.frozen_prefix < context.n_groups:
        augment = trial.suggest_categorical("augment", list(problem.task.augmentations))
    preprocessing = problem.preprocessing(choices.backbone, choices.size)
    place(model, problem.device)
    weights = "pretrained" if pretrained else f"random-init-{seed}"
    trainer = make_trainer(problem, model, plan, choices, preprocessing, augment, weights, seed)
    return trainer, TrialInfo(choices.backbone.name, strategy.name, preprocessing, choices.role)


def strategy_context(problem: Problem, backbone: str, n_groups: int, epochs: int):
    """What a strategy is told of a trial before it suggests its knobs and prepares the model."""
    from ..strategy import StrategyContext

    return StrategyContext(
        backbone_name=backbone,
        modality=problem.modality,
        n_groups=n_groups,
        max_epochs=problem.config.max_epochs,
        epochs=epochs,
        streams=problem.extra_streams(),
        aux_classes=tuple(len(a.classes) for a in problem.inputs.aux),
    )


def make_trainer(
    problem: Problem,
    model,
    plan,
    choices: Choices,
    preprocessing: dict,
    augment: str,
    weights: str,
    seed: int,
):
    from ..errors import UserError
    from ..training.trainer import TrainConfig, Trainer
    from .streams import preprocessing_key, streams

    config = problem.config
    training = plan.training
    train_config = TrainConfig(
        epochs=choices.epochs,
        lr=choices.lr,
        weight_decay=choices.weight_decay if training.weight_decay is None else training.weight_decay,
        batch_size=choices.batch_size,
        device=problem.device,
        preprocessing=preprocessing,
        prepare=problem.dataset.prepare,
        augment=augment,
        use_cache=config.cache,
        cache_key=(choices.backbone.name, weights, preprocessing_key(preprocessing)),
        warmup_fraction=training.warmup_fraction,
        schedule=training.schedule,
        label_smoothing=training.label_smoothing,
        seed=seed,
    )
    data = streams(problem, preprocessing)
    missing = [name for name in plan.needs if name not in data]
    if missing:
        raise UserError(
            f"strategy {choices.strategy.name} needs data streams {missing}; "
            "pass --target-unlabeled DIR (target) or --aux-task DIR (aux)"
        )
    score = None
    if problem.inputs.target is not None:
        from ..training.validation import label_free_score

        score = label_free_score
    return Trainer(
        model,
        plan,
        train_config,
        data["train"],
        data["val"],
        extras={name: data[name] for name in plan.needs},
        score=score,
        target_val=data.get("target_val"),
        target_eval=data.get("target_eval"),
        activations=problem.caches.activations if config.cache else None,
        memory=problem.caches.memory,
    )
