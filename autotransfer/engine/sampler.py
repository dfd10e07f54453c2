"""Cost-aware sampling: TPE that prefers expected improvement per second.

TPE scores each of its candidate configurations by ``log l(x) - log g(x)``, a monotone stand-in for
expected improvement. This sampler subtracts ``alpha * log`` of the candidate's predicted cost
relative to the median candidate's, so of two equally promising configurations the cheaper one
wins, and an expensive one must promise proportionally more (EI per second, as in Snoek et al.,
2012 and Quick-Tune's cost-aware acquisition). ``alpha`` cools from 1 to 0 as the budget is spent
(cost cooling, Lee et al., 2020: EI per second alone keeps to the cheap corner forever). Before TPE
has enough trials to model (its random start-up), each trial takes the cheapest of a few random
draws: cheap fidelities (low resolution, few epochs) come first, the expensive corners later.


It reaches into two of ``TPESampler``'s private methods (``_sample`` and
``_compute_acquisition_func``); ``supported()`` checks they exist, and without them the search
falls back to plain TPE (a test fails first, so an Optuna upgrade that moves them is noticed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.samplers import TPESampler

#: random draws per start-up trial, of which the cheapest is taken
STARTUP_DRAWS = 3
#: the group of parameters that sets a trial's cost holds this one (backbone and strategy may be fixed)
COST_KEY = "epochs"

Cost = Callable[[dict], float | None]


def supported() -> bool:
    """Whether this Optuna's TPE still has the two methods the cost-aware acquisition overrides."""
    return all(callable(getattr(TPESampler, name, None)) for name in ("_sample", "_compute_acquisition_func"))


class CostAwareTPESampler(TPESampler):
    """``TPESampler`` whose acquisition is divided by predicted cost (``cost(params)`` in seconds)."""

    def __init__(self, *, cost: Cost, cooling: Callable[[], float] = lambda: 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cost = cost
        self._cooling = cooling
        self._space: dict | None = None
        self._draws = optuna.samplers.RandomSampler(seed=kwargs.get("seed"))

    # start-up: the cheapest of a few random draws ---------------------------------------------
    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._draws.reseed_rng()

    def sample_relative(self, study, trial, search_space):
        trials = study._get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
            use_cache=True,
        )
        if COST_KEY in search_space and len(trials) < self._n_startup_trials:
            return self._cheapest_random(study, trial, search_space)
        return super().sample_relative(study, trial, search_space)

    def _cheapest_random(self, study, trial, search_space: dict) -> dict:
        draws = [
            {
                name: self._draws.sample_independent(study, trial, name, dist)
                for name, dist in search_space.items()
            }
            for _ in range(STARTUP_DRAWS)
        ]
        costs = [self._cost(params) for params in draws]
        known = [(c, i) for i, c in enumerate(costs) if c is not None]
        return draws[min(known)[1]] if known else draws[0]

    # after start-up: expected improvement per second ----------------------------------------------
    def _sample(self, study, trial, search_space):
        self._space = search_space
        try:
            return super()._sample(study, trial, search_space)
        finally:
            self._space = None

    def _compute_acquisition_func(self, samples, mpe_below, mpe_above):
        values = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        space = self._space
        if not space or COST_KEY not in space:
            return values  # groups of knobs that do not set the cost: plain TPE
        n = len(values)
        params = [
            {name: dist.to_external_repr(samples[name][i]) for name, dist in space.items()} for i in range(n)
        ]
        costs = np.array([self._cost(p) or np.nan for p in params], dtype=float)
        if not np.isfinite(costs).any():
            return values
        costs = np.where(np.isfinite(costs) & (costs > 0), costs, np.nanmedian(costs))
        return values - self._cooling() * np.log(costs / np.median(costs))


def make_sampler(
    kind: str, seed: int, cost: Cost | None, cooling: Callable[[], float] = lambda: 1.0
) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    options = dict(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if cost is None or not supported():
            return TPESampler(**options)
        return CostAwareTPESampler(cost=cost, cooling=cooling, **options)
