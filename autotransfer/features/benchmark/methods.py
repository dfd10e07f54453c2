"""The methods a benchmark compares. Every one but ``plain-loop`` runs through the same engine, on the
same files, split and device, with only its settings changed; a method is one entry in ``METHODS``.
Methods name strategies by the role they play (the probe, the random-init reference), never by a
bundled strategy's name; the fixed recipe's strategy comes from the suite's ``recipe`` table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna

from ...config import SearchConfig
from ...errors import UserError
from ...specs import FIXED, PROBE, REFERENCE
from .suite import Suite


@dataclass
class Outcome:
    """What a run leaves: its best result (best.json's fields), its study, its training size."""

    best: dict | None
    study: optuna.Study
    n_train: int
    device: str
    n_test: int = 0


class EngineRun:
    """A search, opened and ready: ``run()`` runs it and says what came of it."""

    def __init__(self, search) -> None:
        self.search = search

    def run(self) -> Outcome:
        from ...engine.run import quiet_optuna

        with quiet_optuna():
            result = self.search.run()
        problem = self.search.problem
        split = problem.split
        return Outcome(
            result.best, result.study, len(split["train"]), str(problem.device), len(split["test"])
        )


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    #: (base config, suite) -> something with ``run() -> Outcome``, opened and ready
    prepare: Callable[[SearchConfig, Suite], Any]
    #: the search with one part taken out, to measure that part: never the baseline a verdict is against
    ablation: bool = False


def _open(config: SearchConfig):
    from ...engine.run import Search, quiet_optuna

    with quiet_optuna():
        return Search.open(config)


def _role(config: SearchConfig, role: str) -> str:
    """The name of the strategy playing ``role`` for the suite's data."""
    from ...engine.candidates import pick_task, with_role
    from ...plugins import default_host

    host = default_host(config.plugins)
    strategy = with_role(host, role, pick_task(host, config).modality)
    if strategy is None:
        raise UserError(
            f"no loaded plugin registers a {role} strategy for this data; see `autotransfer strategies`"
        )
    return strategy.name


def _searching(config: SearchConfig, suite: Suite) -> EngineRun:
    return EngineRun(_open(config))


def _without_portfolio(config: SearchConfig, suite: Suite) -> EngineRun:
    return EngineRun(_open(replace(config, use_portfolio=False)))


def _restricted(role: str):
    def prepare(config: SearchConfig, suite: Suite) -> EngineRun:
        restricted = replace(config, strategies=[_role(config, role)], reference=False, ensemble=False)
        return EngineRun(_open(restricted))

    return prepare


def _random(config: SearchConfig, suite: Suite) -> EngineRun:
    plain = replace(config, sampler="random", pruning=False, reference=False, rank=False, ensemble=False)
    return EngineRun(_open(plain))


def _recipe(config: SearchConfig, suite: Suite, backbone: str | None = None) -> EngineRun:
    """The fixed recipe: one trial of the suite's ``recipe`` (by default a full fine-tune with AdamW
    at 1e-4, cosine, batch 32, weight decay 0.01) at the backbone's own resolution. It is never
    skipped: under a budget it trains the epochs that fit, or until the budget stops it (keeping its
    best finished epoch; none finished, the method has no result)."""
    recipe = suite.recipe
    strategy = recipe["strategy"]
    config = replace(
        config,
        strategies=[strategy],
        n_trials=1,
        ensemble=False,
        pruning=False,
        reference=False,
        rank=False,
        max_epochs=suite.recipe_epochs,
        backbones=[backbone] if backbone else config.backbones,
    )
    search = _open(config)
    problem = search.problem
    sizes = problem.batch_size_choices()
    batch = recipe.get("batch_size", 32)
    params = {
        "backbone": problem.backbones[0].name,
        "strategy": strategy,
        f"{strategy}.lr": recipe.get("lr", 1e-4),
        "epochs": suite.recipe_epochs,
        "batch_size": batch if batch in sizes else min(sizes),
        "weight_decay": recipe.get("weight_decay", 0.01),
        "augment": "off",
        **{f"{strategy}.{k}": v for k, v in (recipe.get("knobs") or NEUTRAL_KNOBS).items()},
    }
    if problem.input_sizes:
        params[problem.task.size_key] = max(problem.input_sizes)
    search.study.study.enqueue_trial(params, user_attrs={FIXED: True})
    return EngineRun(search)


#: a fine-tune's own knobs at their plainest: one rate for every layer, no warm-up or smoothing
NEUTRAL_KNOBS = {
    "layer_decay": 1.0,
    "head_lr_mult": 1.0,
    "warmup": 0.0,
    "schedule": "cosine",
    "label_smoothing": 0.0,
}


def _top_ranked(config: SearchConfig, suite: Suite) -> EngineRun:
    """LogME ranks the candidate backbones on the training split; the recipe trains the top one."""
    from ...engine.candidates import probe_or_error
    from ...engine.problem import open_problem
    from ...engine.rank import rank_backbones
    from ...plugins import default_host

    host = default_host(config.plugins)
    problem = open_problem(config, host)
    try:
        names = [b.name for b in problem.backbones]
        probe = probe_or_error(host, problem.modality, "the top-ranked method")
        size = max(problem.input_sizes) if problem.input_sizes else None
        ranking = rank_backbones(problem, probe, size) if len(names) > 1 else []
    finally:
        problem.close()
    run = _recipe(config, suite, backbone=ranking[0].backbone if ranking else names[0])
    run.search.study.remember("ranking", [[r.backbone, r.logme] for r in ranking])
    return run


def _plain(config: SearchConfig, suite: Suite):
    from .plain import PlainLoop

    return PlainLoop(config)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "autotransfer",
            "the search as shipped: cost-aware TPE over backbone, strategy, resolution and "
            "knobs, Hyperband pruning, probe warm starts, the portfolio, within the budget; the best "
            "trial, or the greedy ensemble of the best trials where it wins on validation",
            _searching,
        ),
        Method(
            "no-portfolio",
            "the search as shipped but started from no portfolio entries (--no-portfolio): an ablation, "
            "never a baseline; how much sooner the portfolio reaches the best baseline's accuracy",
            _without_portfolio,
            ablation=True,
        ),
        Method(
            "default-recipe",
            "a fixed recipe, no search: the suite's recipe (by default a full fine-tune of "
            "the first backbone, AdamW lr 1e-4, cosine, batch 32, weight decay 0.01, recipe_epochs epochs) "
            "at the backbone's resolution; one trial, never skipped nor replaced: under a time budget it "
            "trains the epochs its predicted cost fits in what the budget allows (its schedule over those), "
            "one at least, which the budget may stop; no result when no epoch ended",
            _recipe,
        ),
        Method(
            "probe",
            "the search restricted to the probe strategy (a linear probe: frozen backbone, trained head); "
            "the best trial alone, no ensemble",
            _restricted(PROBE),
        ),
        Method(
            "random-search",
            "Optuna random search over the same space, no pruning, no warm start, no trial trained on, "
            "no ensemble",
            _random,
        ),
        Method(
            "top-ranked",
            "the backbone LogME ranks first (transferability, before training), trained with "
            "the recipe; one trial plus the ranking",
            _top_ranked,
        ),
        Method(
            "from-scratch",
            "the search restricted to the random-init reference strategy: the same "
            "architectures from random weights, every layer trained; no ensemble",
            _restricted(REFERENCE),
        ),
        Method(
            "plain-loop",
            "what a user writes today: Optuna TPE and Hyperband over learning rate, epochs and "
            "batch size, full fine-tune of the first backbone at its own resolution, every batch decoded "
            "from the files every epoch, study.optimize(timeout=budget)",
            _plain,
        ),
    )
}
