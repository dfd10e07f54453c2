"""Spend the budget where it pays: train the best trial on while it still improves, and try it
again at the next resolution up.

A trial ends at the epochs it was given, and under a budget those are few: a portfolio entry or a
first look gets the epochs that fit its share (one LoRA epoch on digits in a one-minute search), and
the sampler often draws one or two. When such a trial is the best the search has found and its last
epoch was its best, or not measurably below it (within one standard error of validation accuracy:
on a few hundred validation examples a two-example dip after a fine-tune's first epoch is noise, and
it cost one 5-minute search on digits the epochs that would have settled it), the next epoch of that
very model is the surest gain there is: it has paid for building, decoding and caching, and its curve
has not turned. So, before the trial is recorded, it trains on from its best epoch's weights (a warm
restart of its schedule at ``EXTEND_LR`` of its peak learning rate), up to as many epochs again as it
ran (the doubling of successive halving), at most --max-epochs in all, while they are predicted to fit
what is left and, all continuations together, what one trial may take of the budget
(``TRIAL_SHARE``). It goes on while each continuation ends on, or within that noise of, its best
epoch. The best epoch over all counts, its weights are kept.

This is freeze-thaw's move as Quick-Tune makes it (continue the configuration whose curve promises
most per second, rather than restart it), restricted to the one configuration whose promise is
measured: the best, still rising. Pruned trials, the reference, a fixed recipe and trials the budget
stopped are never continued; nor is anything without a budget (--n-trials alone: the epochs are the
search's to choose), nor in plain random search (the baseline), whose trials run as drawn.

The best configuration also goes up a fidelity: once a trial finishes as the study's best, the same
parameters at the next larger searched resolution (image side, or text length) are queued, unless that
backbone and strategy have a trial there already, with the epochs predicted to fit what one trial may
take (``promote``); when its turn comes and another trial has overtaken it meanwhile, it is skipped
(``skip_if_overtaken``): the promotion was a bet on the best. Cheap resolutions find what works; the
next one up is where it usually works better: a probe of MNIST-5k at 32 px reached 0.77-0.79
validation, at 64 px 0.92, and a search whose sampler priced every 64 px trial with the one-off cost
of its first cache (10-17 s of a minute against 0.5 s for another 32 px probe) never went there.
"""

from __future__ import annotations

import math
import time

import optuna

from ..specs import FIXED
from . import pricing
from .budget import SAFETY, TRIAL_SHARE, Clock
from .study import SearchStudy

#: a continuation restarts the schedule at this share of the trial's peak learning rate
EXTEND_LR = 0.5


def epoch_seconds(fit_started: float, ends: list[float]) -> float:
    """Measured seconds an epoch of this trial takes: between epoch ends, or the first epoch whole."""
    if len(ends) >= 2:
        return (ends[-1] - ends[0]) / (len(ends) - 1)
    return ends[-1] - fit_started


def spends(problem, clock: Clock) -> bool:
    """Whether this search trains on and promotes: it has a budget and is not plain random search (the
    baseline, whose trials run as drawn)."""
    return clock.budget is not None and problem.config.sampler != "random"


def not_worse(last: float, best: float, n: int) -> bool:
    """Whether an epoch scoring ``last`` is not measurably below the best epoch's ``best``: within one
    standard error of the best's validation accuracy (binomial over ``n`` validation examples, at
    least one example's worth). On 269 validation examples that is two examples at 0.98: a dip of one
    or two is the noise of which examples sit near the boundary, not a curve that has turned."""
    n = max(1, n)
    p = min(1.0, max(0.0, best))
    return best - last <= math.sqrt(max(p * (1 - p), 1 / n) / n) + 1e-9  # (rounding: one example is within)


def continuation(trial: optuna.Trial, trainer, study: SearchStudy, max_epochs: int, fit: int) -> int:
    """Epochs to train ``trial`` on (0: none): its last epoch was not measurably worse than its best
    (``not_worse``), it beats the study's best (which, still running, it is not part of), and ``fit``
    more epochs are predicted to fit."""
    attrs = trial.user_attrs
    if attrs.get("reference") or attrs.get(FIXED) or trainer.stopped:
        return 0
    run = len(trainer.history)
    if not run or not not_worse(
        trainer.history[-1]["val_metric"], trainer.kept.metric, len(trainer.val.labels)
    ):
        return 0  # its curve has turned: more epochs would not pay
    best = study.best()
    if best is not None and not trainer.kept.metric > best.value:
        return 0
    return max(0, min(run, max_epochs - run, fit))


def train_on(trial: optuna.Trial, trainer, objective, fit_started: float, ends: list[float]) -> float:
    """Continue the trial while ``continuation`` allows, all its continuations within what one trial
    may take of the budget; returns its metric (its best epoch's). ``ends``: when its epochs ended."""
    from .objective import export_extra

    study, clock, problem = objective.study, objective.clock, objective.problem
    extra = export_extra(problem, objective.cost, clock, trial)
    metric, first, began = trainer.kept.metric, len(trainer.history), time.time()
    while ends and spends(problem, clock):
        room = min(clock.trials_left() - extra, TRIAL_SHARE * clock.budget - (time.time() - began))
        epoch_s = max(epoch_seconds(fit_started, ends), 1e-3)
        fit = int(room * SAFETY // epoch_s)
        epochs = continuation(trial, trainer, study, problem.config.max_epochs, fit)
        if epochs < 1:
            break
        monitor = trainer.monitor  # the live line's prediction and the deadline grow with it
        if getattr(monitor, "deadline", None) is not None:
            monitor.deadline = max(monitor.deadline, time.time() + room)
            monitor.predicted += epochs * epoch_s
        if "predicted_s" in trial.user_attrs:
            trial.set_user_attr("predicted_s", round(trial.user_attrs["predicted_s"] + epochs * epoch_s, 2))
        fit_started, before = time.time(), len(ends)
        metric = trainer.extend(epochs, EXTEND_LR)
        trial.set_user_attr("continued", {"from": first, "to": len(trainer.history)})
        if len(ends) == before or trainer.stopped:
            break
        ends[:] = ends[before:]  # this continuation's epochs time the next
    return metric


def promote(problem, study: SearchStudy, cost, clock: Clock, trial: optuna.trial.FrozenTrial) -> dict | None:
    """Queue ``trial``'s parameters at the next larger searched resolution when it is the study's
    best and they fit (see the module's docstring); returns the queued parameters (None: none)."""
    key = problem.task.size_key
    attrs, params = trial.user_attrs, trial.params
    if not spends(problem, clock) or not key or key not in params:
        return None
    best = study.best()
    if best is None or best.number != trial.number or attrs.get("reference") or attrs.get(FIXED):
        return None
    larger = [s for s in problem.input_sizes if s > params[key]]
    if not larger:
        return None
    same = (params.get("backbone"), params.get("strategy"), larger[0])
    if any(
        (t.params.get("backbone"), t.params.get("strategy"), t.params.get(key)) == same
        for t in study.trials()
    ):
        return None  # tried there already, or queued
    seconds = min(clock.trials_left(), TRIAL_SHARE * clock.budget) * SAFETY
    estimate = lambda p: pricing.estimate(problem, cost, p)  # noqa: E731
    epochs = max(params.get("epochs", 1), attrs.get("best_epoch") or 1)  # trained on: as far as it paid
    up, predicted = pricing.fit_epochs({**params, key: larger[0]}, estimate, seconds, 1, epochs)
    if predicted > seconds:
        return None
    who = {"backbone": up.get("backbone"), "strategy": up.get("strategy")}  # shown should it be skipped
    study.study.enqueue_trial(up, user_attrs={"promoted": trial.number, **who})
    return up


def skip_if_overtaken(study: SearchStudy, trial: optuna.Trial) -> None:
    """A promoted trial whose source is no longer the study's best when its turn comes is skipped."""
    source = trial.user_attrs.get("promoted")
    best = study.best()
    if source is None or best is None or best.number == source:
        return
    trial.set_user_attr("skipped", f"skipped: trial {source}, promoted here, is no longer the best")
    trial.set_user_attr("duration_s", 0.0)
    raise optuna.TrialPruned(f"trial {source} is no longer the best")
