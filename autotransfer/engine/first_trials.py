"""The trials a search starts from, and the random-init reference it checks transfer against.

First trials (enqueued once, by the worker that created the study): the probe strategy (a linear
probe) on the best-ranked backbone; then one trial of each strategy the user named or the data calls
for (adaptation with target data, multi-task with related tasks), so it runs second however small
the budget; then the probe on every other backbone (their frozen features are computed once and
reused, so they cost little), the extra small-data probes and a cheap look at every other strategy.

The reference (the REFERENCE strategy: the same architecture from random weights) is bounded: once
a few transfer trials have finished, it gets the median transfer trial's cost (with a budget: at
least 5% and at most 10% of it), at the resolution and on the backbone of the best transfer trial, as
many epochs as are predicted to fit, and runs only when one fits (without a budget: one epoch at
least). It is stopped at its allowance like a trial at the budget. ``best.json`` then compares the
two at equal cost.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import optuna

from ..specs import PROBE, REFERENCE, StrategySpec
from . import portfolio, pricing
from .budget import SAFETY, TRIAL_SHARE, Clock
from .cost import CostModel, Query
from .problem import Problem
from .study import SearchStudy

#: the first look at each strategy: this many epochs at the smallest resolution, within this share
#: of the budget in all, at a batch size giving at least EXPLORE_STEPS steps an epoch
EXPLORE_EPOCHS = 2
EXPLORE_STEPS = 32
#: the cheapest look may take up to this share of the budget alone
EXPLORE_FIRST_SHARE = 0.4
#: a look's learning rate (without a warm start): this far up the strategy's range, on a log scale;
#: two epochs need a brisk one
EXPLORE_LR = 0.6
#: examples a class at most for a training set to count as tiny (see ``small_data_probes``)
SMALL_DATA = 10

EXPLORE_SHARE = 0.25
#: transfer trials to finish before the reference is planned (fewer when --n-trials is smaller)

BEFORE_REFERENCE = 3
#: the reference's allowance, as shares of the whole budget: at least the first, at most the second
REFERENCE_FLOOR = 0.05
REFERENCE_SHARE = 0.1


def warm_params(
    problem: Problem, strategy: StrategySpec, backbone: str, size: int | None, epochs: int | None = None
) -> dict:
    """Parameters for an enqueued trial of ``strategy``: its warm-start knobs; the rest is sampled."""
    params: dict = {"backbone": backbone, "weight_decay": 1e-4}
    if strategy.name in problem.strategy_by_name:
        params["strategy"] = strategy.name
    params |= {f"{strategy.name}.{knob}": value for knob, value in strategy.warm_start.items()}
    if epochs is not None:
        params["epochs"] = epochs
    if size is not None and len(problem.input_sizes) > 1:
        params[problem.task.size_key] = size
    return params


def enqueue_first_trials(
    problem: Problem,
    study: SearchStudy,
    size: int | None,
    log=lambda line: None,
    estimate: Callable[[dict], float | None] | None = None,
    budget: float | None = None,
    probes: int | None = None,
    groups: int | None = None,
    left: float | None = None,
    measure: Callable[[str, list], None] | None = None,
) -> None:
    """Enqueue the warm starts: only in a new study, only by the worker that wrote its split. ``probes``
    limits the backbones probed first (a budget too small for all); ranking needs them all. ``groups``:
    the layer groups of the first backbone, when measured. ``left``: the seconds trials may still
    use (the budget less what starting took and the export's reserve). ``measure(backbone, sizes)``
    times what the portfolio's prices need."""

    config = problem.config
    if study.trials() or not study.wrote_split or config.sampler == "random":
        return
    probe = problem.searched_role(PROBE)
    order = [b.name for b in problem.backbones]
    ranked = probes is None or probes >= len(order)  # ranking computes every backbone's features
    if probe is not None and len(order) > 1 and config.rank and ranked:
        from .rank import rank_backbones

        ranking = rank_backbones(problem, probe, size)
        study.remember("ranking", [[r.backbone, r.logme] for r in ranking])
        order = [r.backbone for r in ranking]
        log("  LogME ranking: " + ", ".join(f"{r.backbone} {r.logme:.3f}" for r in ranking))
    probed = order[: probes or len(order)] if probe is not None else []
    queued: list[dict] = []
    if probed:  # the best-ranked backbone's probe first: it is the cheapest look at the data
        queued.append(warm_params(problem, probe, probed[0], size, epochs=config.max_epochs))
    # what the user named or the data calls for runs next, however small the trial budget
    named = called_for(problem, probe)
    queued += [
        called_look(problem, strategy, order[0], size, estimate, budget, len(named)) for strategy in named
    ]
    queued += [warm_params(problem, probe, name, size, epochs=config.max_epochs) for name in probed[1:]]
    if probe is not None:
        queued += small_data_probes(problem, probe, order[0], size)
    for params in queued:
        study.study.enqueue_trial(params)
    # the portfolio's configurations nearest to this data, within a share of what those leave
    started = enqueue_portfolio(problem, study, queued, estimate, budget, left, groups, log, measure)
    # then a look at the strategies they leave out
    covered = {params["strategy"] for params in started}
    for params in exploration(
        problem,
        [s for s in problem.strategies if s is not probe and s not in named and s.name not in covered],
        order[0],
        estimate,
        budget,
        groups,
        first_look=not started,
    ):
        study.study.enqueue_trial(params, user_attrs={"explore": True})


def enqueue_portfolio(
    problem: Problem, study: SearchStudy, queued: list[dict], estimate, budget, left, groups, log, measure
) -> list:
    """Enqueue the portfolio's trials after the ``queued`` ones: with a budget, up to PORTFOLIO_TRIALS
    within PORTFOLIO_SHARE of what those leave of ``left`` seconds; without one, up to half the trials
    --n-trials leaves after them. Returns their params."""
    room, most, each = None, max(0, (problem.config.n_trials or 0) - len(queued)) // 2, None
    if budget is not None:
        ahead = sum((estimate(p) if estimate else None) or 0.0 for p in queued)
        room = portfolio.PORTFOLIO_SHARE * max(0.0, (budget if left is None else left) - ahead)
        most = portfolio.PORTFOLIO_TRIALS
        each = TRIAL_SHARE * budget * SAFETY  # what one trial may plan once the probe found something
    entries = portfolio.entries_for(problem)  # a bad --portfolio is refused even when none would run
    if most <= 0:
        return []
    started = portfolio.portfolio_trials(problem, entries, estimate, room, groups, most, measure, each)
    for params, entry in started:
        study.study.enqueue_trial(params, user_attrs={"portfolio": entry.source})
    if started:
        log(
            f"  portfolio: {len(started)} configurations that did well on data like this: "
            + ", ".join(f"{p['strategy']} ({e.source})" for p, e in started)
        )
    return [params for params, _ in started]


def exploration(
    problem: Problem,
    strategies: list[StrategySpec],
    backbone: str,
    estimate: Callable[[dict], float | None] | None,
    budget: float | None,
    groups: int | None = None,
    first_look: bool = True,
) -> list[dict]:
    """A cheap look at every other strategy, cheapest first, while they are predicted to fit
    EXPLORE_SHARE of the budget (without one, while they take at most half of --n-trials): the sampler
    then knows each strategy's worth before it chooses; the cheapest one is taken up to
    EXPLORE_FIRST_SHARE alone. Cheap: the smallest resolution, EXPLORE_EPOCHS epochs, the largest batch
    that still takes EXPLORE_STEPS steps an epoch, no augmentation, and a strategy with a searched
    freeze depth frozen (and cached) through half of the backbone's ``groups``; a strategy without a
    warm-start learning rate gets one EXPLORE_LR up its range."""
    size = problem.input_sizes[0] if problem.input_sizes else None
    epochs = min(EXPLORE_EPOCHS, problem.config.max_epochs)
    choices = problem.batch_size_choices()
    steps = [b for b in choices if len(problem.split["train"]) / b >= EXPLORE_STEPS]
    candidates = []
    for strategy in strategies:
        if strategy.role == REFERENCE:
            continue
        params = warm_params(problem, strategy, backbone, size, epochs=epochs)
        params["batch_size"] = max(steps) if steps else min(choices)
        if "off" in problem.task.augmentations:  # frozen layers stay cacheable; the sampler tries the rest
            params["augment"] = "off"
        brisk_lr(params, strategy)
        depth = f"{strategy.name}.freeze_depth"
        if groups and groups > 2 and depth in portfolio.searched_space(problem, backbone, strategy, groups):
            params.setdefault(depth, groups - 2)  # the top two groups train: little data, little time
        candidates.append(params)
    if budget is None:
        room = max(0, (problem.config.n_trials or 0) // 2 - len(problem.backbones))
        return candidates[:room]
    priced = sorted(
        ((estimate(p) if estimate else None) or float("inf"), i, p) for i, p in enumerate(candidates)
    )
    chosen, spent = [], 0.0
    for seconds, _, params in priced:
        if not chosen and first_look:
            # the cheapest look is taken past the share, up to EXPLORE_FIRST_SHARE, and trains as many
            # epochs as fit that: a fine-tune two epochs in is often behind a probe it beats by five,
            # and without one honest look the search would never learn whether anything beyond a
            # probe pays
            params, seconds = longest_look(params, estimate, EXPLORE_FIRST_SHARE * budget, problem)
            if seconds > EXPLORE_FIRST_SHARE * budget:
                break
        elif spent + seconds > EXPLORE_SHARE * budget:
            break
        chosen.append(params)
        spent += seconds
    return chosen


def brisk_lr(params: dict, strategy: StrategySpec) -> None:
    """A look's learning rate, unless the strategy has a warm start: EXPLORE_LR up its range."""
    low, high = strategy.lr_range
    params.setdefault(f"{strategy.name}.lr", low * (high / low) ** EXPLORE_LR)


def called_look(
    problem: Problem, strategy: StrategySpec, backbone: str, size, estimate, budget: float | None, n: int
) -> dict:
    """The first trial of a strategy the user named or the data calls for: a fair look at it, not the
    cheapest random draw (one epoch at a learning rate from anywhere in a range of three decades): a
    brisk learning rate and --max-epochs, or with a budget as many as fit an equal part (of ``n``) of
    EXPLORE_FIRST_SHARE of it."""
    params = warm_params(problem, strategy, backbone, size, epochs=problem.config.max_epochs)
    brisk_lr(params, strategy)
    if budget is not None and estimate is not None:
        share = EXPLORE_FIRST_SHARE * budget / max(1, n)
        params, _ = pricing.fit_epochs(params, estimate, share, 1, problem.config.max_epochs)
    return params


def longest_look(params: dict, estimate, seconds: float, problem: Problem) -> tuple[dict, float]:
    """``params`` with as many epochs (EXPLORE_EPOCHS to --max-epochs) as are predicted to fit
    ``seconds``, and their predicted cost."""
    return pricing.fit_epochs(params, estimate, seconds, params["epochs"], problem.config.max_epochs)


def small_data_probes(problem: Problem, probe: StrategySpec, backbone: str, size: int | None) -> list[dict]:
    """With a tiny training set (at most SMALL_DATA examples a class) a probe's learning rate matters
    most and its trials cost nearly nothing (cached features): the probe again at the warm start's
    learning rate divided and multiplied by three, on the top backbone."""
    per_class = len(problem.split["train"]) / max(1, len(problem.dataset.classes))
    lr = probe.warm_start.get("lr")
    if per_class > SMALL_DATA or lr is None:
        return []
    low, high = probe.lr_range
    out = []
    for other in (lr / 3, lr * 3):
        params = warm_params(problem, probe, backbone, size, epochs=problem.config.max_epochs)
        params[f"{probe.name}.lr"] = min(high, max(low, other))
        out.append(params)
    return out


def called_for(problem: Problem, probe: StrategySpec | None) -> list[StrategySpec]:
    """Strategies that get an early trial: those named with --strategies, and those whose data the
    user gave (target domain, related tasks)."""
    named = set(problem.config.strategies or ())
    return [
        s
        for s in problem.strategies
        if s is not probe and s.role != REFERENCE and (s.name in named or s.needs_target or s.needs_aux)
    ]


class ReferencePlanner:
    """An Optuna callback: once enough transfer trials finished, plan the bounded reference."""

    def __init__(self, problem: Problem, study: SearchStudy, cost: CostModel, clock: Clock) -> None:
        self.problem, self.study, self.cost, self.clock = problem, study, cost, clock
        config = problem.config
        searched = {s.name for s in problem.strategies}
        self.reference = problem.role(REFERENCE) if config.reference and config.sampler != "random" else None
        if self.reference is not None and self.reference.name in searched:
            self.reference = None  # asked for by name: searched like any other strategy
        self.needed = min(BEFORE_REFERENCE, config.n_trials or BEFORE_REFERENCE)

    def pending(self) -> bool:
        """Planned but not run yet: the search waits for it before it stops on --n-trials."""
        return any(t.user_attrs.get("reference") for t in self.study.waiting())

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.reference is None or "reference" in study.user_attrs:
            return
        transfer = [t for t in self.study.trials() if not t.user_attrs.get("reference")]
        done = [t for t in transfer if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) < self.needed:
            return
        # what a transfer trial costs here: the finished ones, pruned included (skipped ones ran nothing)
        paid = [
            t.user_attrs["duration_s"]
            for t in transfer
            if t.state.is_finished()
            and "duration_s" in t.user_attrs
            and not t.user_attrs.get("skipped")
            and t.state != optuna.trial.TrialState.FAIL
        ]
        self.plan(max(done, key=lambda t: t.value), statistics.median(paid))

    def plan(self, best: optuna.trial.FrozenTrial, median: float) -> None:
        """Enqueue the reference (or record why not): as many epochs as fit its allowance, the median
        transfer trial's cost; with a budget at least REFERENCE_FLOOR and at most REFERENCE_SHARE of it,
        and only if one epoch fits; without a budget, at least one epoch."""
        problem, reference, budget = self.problem, self.reference, self.clock.budget
        cap = (
            median if budget is None else min(max(median, REFERENCE_FLOOR * budget), REFERENCE_SHARE * budget)
        )
        size_key = problem.task.size_key
        size = best.params.get(size_key) if size_key else None
        backbone = problem.backbone_spec(best.params["backbone"])
        size_value = pricing.size_value(problem, backbone, size)
        counts = pricing.counts(problem)
        query = Query(
            backbone=backbone.name,
            size=size_value,
            epochs=1,
            frozen_prefix=0,
            cached=False,
            n_train=counts["n_train"],
            n_eval=counts["n_eval"],
            batch_size=best.params.get("batch_size", 32),
            n_decoded_inputs=counts["n_all"],
            inputs_ready=True,
        )
        prediction = self.cost.predict(query)
        epochs = prediction.epochs_within(cap, problem.config.max_epochs)
        if budget is None and epochs < 1:  # no time limit: one epoch, so the verdict can be given
            epochs, cap = 1, 1.5 * prediction.total(1)
        plan = {
            "cap_s": round(cap, 2),
            "backbone": backbone.name,
            "size": size,
            "epochs": epochs,
            "one_epoch_s": round(prediction.total(1), 2),
            "median_transfer_s": round(median, 2),
        }
        if epochs < 1:
            plan["skipped"] = (
                f"one epoch from random weights is predicted to take {prediction.total(1):.1f} s, "
                f"more than its allowance of {cap:.1f} s (the median transfer trial's cost, "
                f"within {REFERENCE_FLOOR:.0%}-{REFERENCE_SHARE:.0%} of the budget)"
            )
            self.study.remember("reference", plan)
            return
        params = warm_params(problem, reference, backbone.name, size, epochs=epochs)
        if "batch_size" in best.params:
            params["batch_size"] = best.params["batch_size"]
        self.study.remember("reference", plan)
        self.study.study.enqueue_trial(params, user_attrs={"reference": reference.name, "cost_cap_s": cap})
