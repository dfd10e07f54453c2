"""Prices for this problem's trials: turns sampled parameters (before anything is built) or a built
trainer (after) into the cost model's queries, and measures what the model does not know yet."""

from __future__ import annotations

import math
import time
from typing import Any

from ..specs import PROBE, REFERENCE
from .cost import (
    PROBE_EXAMPLES,
    UNKNOWN_BUILD,
    UNKNOWN_FORWARD,
    CostModel,
    Prediction,
    Query,
    measure_optimizer,
    measure_rates,
)
from .problem import Problem
from .streams import TARGET_SAMPLE, inputs_ready, preprocessing_key


def size_value(problem: Problem, backbone, size: int | None) -> Any:
    key = problem.task.size_key
    if size is not None:
        return size
    preprocessing = problem.preprocessing(backbone)
    return preprocessing.get(key, "native") if key else "native"


def counts(problem: Problem) -> dict[str, int]:
    inputs, split = problem.inputs, problem.split
    target = len(inputs.target) if inputs.target is not None else 0
    n_eval = len(split["val"]) + min(TARGET_SAMPLE, target)
    n_all = len(problem.dataset) + target + sum(len(a) for a in inputs.aux)
    if inputs.target_eval is not None:
        n_all += len(inputs.target_eval)
    extra = target + sum(len(a) for a in inputs.aux)
    return {
        "n_train": len(split["train"]),
        "n_eval": n_eval,
        "n_all": n_all,
        "n_cached": len(split["train"]) + n_eval + extra,
    }


def query_from_params(problem: Problem, cost: CostModel, params: dict) -> Query | None:
    """Before building: what a parameter set will cost, its frozen prefix guessed from the
    strategy's role and the study's earlier trials (None when the parameters say too little)."""
    only = lambda names: names[0] if len(names) == 1 else None  # noqa: E731 (a fixed choice is no parameter)
    backbone_name = params.get("backbone", only([b.name for b in problem.backbones]))
    if backbone_name not in {b.name for b in problem.backbones}:
        return None
    backbone = problem.backbone_spec(backbone_name)
    strategy_name = params.get("strategy", only(sorted(problem.strategy_by_name)))
    strategy = problem.strategy_by_name.get(strategy_name) or problem.role(REFERENCE)
    size = params.get(problem.task.size_key) if problem.task.size_key else None
    if size is None and problem.input_sizes:
        size = problem.input_sizes[0]
    size_shown = size_value(problem, backbone, size)
    rates = cost.rates_for(backbone.name, size_shown)
    n_groups = len(rates.forward) if rates is not None else 8
    depth = params.get(f"{strategy.name}.freeze_depth") if strategy is not None else None
    if depth is None:
        is_probe = strategy is not None and strategy.role == PROBE
        depth = cost.typical_frozen(strategy.name if strategy else "", n_groups, is_probe)
    n = counts(problem)
    preprocessing = problem.preprocessing(backbone, size)
    extra = (
        len(problem.extra_streams())
        if strategy is not None and strategy.needs_target or (strategy is not None and strategy.needs_aux)
        else 0
    )
    cached = problem.config.cache and params.get("augment", "off") == "off" and depth > 0
    boundary = cached and _boundary_ready(problem, backbone.name, strategy, preprocessing, depth)
    return Query(
        backbone=backbone.name,
        size=size_shown,
        epochs=int(params.get("epochs", problem.config.max_epochs)),
        frozen_prefix=depth,
        cached=cached,
        n_train=n["n_train"],
        n_eval=n["n_eval"],
        batch_size=int(params.get("batch_size", min(problem.batch_size_choices()))),
        extra_streams=extra,
        n_cached_inputs=n["n_cached"],
        n_decoded_inputs=n["n_all"],
        inputs_ready=inputs_ready(problem, preprocessing),
        boundary_ready=boundary,
        strategy=strategy.name if strategy is not None else "",
    )


def _boundary_ready(problem: Problem, backbone: str, strategy, preprocessing: dict, depth: int) -> bool:
    """Whether the training split's activations at ``depth`` are in the search's cache already."""
    if strategy is None or not strategy.pretrained or problem.config.random_init:
        return False
    split = problem.split["train"]
    stream_key = (problem.dataset.fingerprint(), "train", len(split), hash(tuple(split)))
    key = (backbone, "pretrained", preprocessing_key(preprocessing), stream_key, depth)
    return key in problem.caches.activations


def estimate(problem: Problem, cost: CostModel, params: dict) -> float | None:
    """Predicted seconds of a parameter set (the sampler's cost), or None when unknown."""
    query = query_from_params(problem, cost, params)
    return None if query is None else cost.predict(query).total(query.epochs)


def trained_backbone_params(trainer) -> int:
    """Parameters of the backbone the trial's optimiser updates (the head and add-ons not counted)."""
    backbone = {id(p) for p in trainer.model.backbone.parameters()}
    return sum(p.numel() for g in trainer.plan.param_groups for p in g["params"] if id(p) in backbone)


def query_from_trainer(problem: Problem, trainer, backbone: str, size: Any, strategy: str = "") -> Query:
    """After building: the trainer knows its frozen prefix, what it caches and what is cached."""
    n = counts(problem)
    cached = trainer.cached_depth > 0
    return Query(
        backbone=backbone,
        size=size,
        epochs=trainer.config.epochs,
        frozen_prefix=trainer.plan.frozen_prefix,
        cached=cached,
        n_train=n["n_train"],
        n_eval=n["n_eval"],
        batch_size=trainer.config.batch_size,
        extra_streams=len(trainer.extras),
        trainable_params=trained_backbone_params(trainer),
        n_cached_inputs=n["n_cached"],
        n_decoded_inputs=n["n_all"],
        inputs_ready=True,  # building the trainer decoded them
        boundary_ready=cached
        and trainer.activations is not None
        and trainer.boundary_key(trainer.train) in trainer.activations,
        built=True,
        strategy=strategy,
    )


def price_built_trial(
    problem: Problem, cost: CostModel, trainer, backbone: str, size: Any, strategy: str = ""
) -> Prediction:
    """Measure what is unknown about this backbone at this size (a few timed batches), then predict."""
    if not cost.knows(backbone, size):
        rates = measure_rates(
            trainer.model,
            trainer.train.inputs,
            trainer.config.prepare,
            trainer.config.preprocessing,
            trainer.config.device,
        )
        cost.remember_rates(backbone, size, rates)
    return cost.predict(query_from_trainer(problem, trainer, backbone, size, strategy))


#: the export's reserve beyond its prediction: writing files, the process ending
EXPORT_MARGIN_S = 2.0


def export_seconds(problem: Problem, cost: CostModel, backbone: str, size: int | None) -> float:
    """What exporting a trial's model takes: building it again, decoding the test split and testing
    it once, with room for error (the final step, which the budget must always leave time for)."""
    shown = size_value(problem, problem.backbone_spec(backbone), size)
    rates = cost.rates_for(backbone, shown)
    forward = sum(rates.forward) if rates else 8 * UNKNOWN_FORWARD
    n_test = len(problem.split["test"])
    work = cost.build.get(backbone, UNKNOWN_BUILD) + n_test * (cost.decode_seconds(shown) + forward)
    return 1.5 * cost.correction * work + EXPORT_MARGIN_S


def prime(problem: Problem, cost: CostModel) -> None:
    """Once per search, what the first decisions need: the optimiser's step cost on this device, and
    the first backbone's rates at the two smallest searched sizes (on a few examples, random weights:
    speed does not depend on them), from which the others are extrapolated until measured."""
    if "optimizer" not in cost.measured:
        cost.remember_optimizer(measure_optimizer(problem.device))
    measure(problem, cost, problem.backbones[0].name, problem.input_sizes[:2] or [None])


def measure(problem: Problem, cost: CostModel, backbone_name: str, sizes: list) -> None:
    """The backbone's rates at each of ``sizes`` not measured yet (a few timed batches each), and
    what decoding an example at each size takes, from the examples they run on."""
    import torch

    from ..backbone import TransferModel, place
    from ..training.batches import to_device

    backbone = problem.backbone_spec(backbone_name)
    examples = problem.split["train"][:PROBE_EXAMPLES]
    model = None
    for size in sizes:
        shown = size_value(problem, backbone, size)
        if cost.knows(backbone.name, shown):
            continue
        if model is None:
            with torch.random.fork_rng():
                built = backbone.build(pretrained=False)
            problem.built(backbone.name, built)
            model = place(TransferModel(built, len(problem.dataset.classes)), problem.device)

        preprocessing = problem.preprocessing(backbone, size)
        encoded, seconds = timed(problem.dataset.encode, examples, preprocessing)
        if str(shown) not in cost.decode:  # the guess until then is far off for small images
            cost.remember_decode(shown, decode_rate(problem, examples, preprocessing, seconds))
        sample = to_device(encoded, problem.device)
        cost.remember_rates(
            backbone.name,
            shown,
            measure_rates(model, sample, problem.dataset.prepare, preprocessing, problem.device),
        )


def decode_rate(problem: Problem, examples: list, preprocessing: dict, seconds: float) -> float:
    """Seconds per example of decoding, from ``seconds`` for ``examples`` and a second look at a
    quarter of them, the less of the two: one stall in a pass this short (a quarter of a second, once
    in nine searches on digits at 32 px) priced every trial at that size ten times its decode."""
    rate = seconds / max(1, len(examples))
    again = examples[: max(1, len(examples) // 4)]
    return min(rate, timed(problem.dataset.encode, again, preprocessing)[1] / max(1, len(again)))


def fit_epochs(params: dict, estimate, seconds: float, least: int, most: int) -> tuple[dict, float]:
    """``params`` with the most epochs, from ``least`` to ``most``, predicted to fit ``seconds``, and
    their predicted cost (infinite when unknown)."""
    one, two = (estimate({**params, "epochs": n}) or float("inf") for n in (1, 2))
    if math.isinf(one) or math.isinf(two):
        return {**params, "epochs": least}, float("inf")
    per_epoch = max(1e-9, two - one)
    fit = int((seconds - (one - per_epoch)) // per_epoch)
    epochs = max(least, min(most, fit))
    return {**params, "epochs": epochs}, (one - per_epoch) + per_epoch * epochs


def timed(function, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started
