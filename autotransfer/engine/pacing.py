"""Pacing a search against its budget: how much cost weighs in choosing, the export's reserve, the
resolution and number of the first probes, and what the first lines say about time."""

from __future__ import annotations

import optuna

from ..specs import PROBE
from . import pricing
from .budget import Clock, clock_text
from .cost import CostModel
from .problem import Problem
from .study import SearchStudy

#: the share of the time left that a lone first probe may take to see the data at a larger size
FIRST_PROBE_SHARE = 0.5


class Pacing:
    def __init__(self, problem: Problem, study: SearchStudy, cost: CostModel, clock: Clock) -> None:
        self.problem, self.study, self.cost, self.clock = problem, study, cost, clock

    def cost_weight(self) -> float:
        """How much cost counts in choosing the next trial: 1 at the start, 0 when the budget is spent."""
        if self.clock.budget is None:
            return 1.0
        return min(1.0, max(0.0, self.clock.left() / self.clock.budget))

    def export_reserve(self) -> float:
        """Seconds kept back for the export: building and testing the best trial's model (before any
        trial finished, the cheapest one's); with --ensemble, each of the trials it may be chosen from."""
        problem, best = self.problem, self.study.best()
        if best is None:
            backbone = problem.backbones[0].name
            return pricing.export_seconds(
                problem, self.cost, backbone, problem.input_sizes[0] if problem.input_sizes else None
            )
        if not problem.config.ensemble:
            return self.export_price(best)
        from .ensemble import ENSEMBLE_LIBRARY, ENSEMBLE_SHARE

        complete = self.study.trials(states=(optuna.trial.TrialState.COMPLETE,))
        reserve, others = self.export_price(best), 0.0
        for trial in sorted(complete, key=lambda t: -t.value)[1:ENSEMBLE_LIBRARY]:
            price = self.member_price(trial)
            if self.clock.budget is not None and others + price > ENSEMBLE_SHARE * self.clock.budget:
                break  # the ensemble is chosen from the members whose export fits
            others += price
        return reserve + others

    def member_price(self, trial: optuna.trial.FrozenTrial) -> float:
        """Predicted seconds to export and test ``trial`` as an ensemble's further member (the files
        written and the process ending are counted once, with the best trial's export)."""
        return self.export_price(trial) - pricing.EXPORT_MARGIN_S

    def export_price(self, trial: optuna.trial.FrozenTrial) -> float:
        """Predicted seconds to export and test ``trial``'s model."""
        size = trial.params.get(self.problem.task.size_key or "")
        return pricing.export_seconds(self.problem, self.cost, trial.params["backbone"], size)

    def warm_size(self) -> int | None:
        """The resolution of the first trials: the largest searched size whose probes on every
        backbone are predicted to take at most a tenth of the budget. When none is, and only one
        backbone's probe fits even at the smallest size, the backbones cannot be compared in this
        budget anyway: that one probe gets the largest size predicted to take at most half of the
        time trials have left (on MNIST-5k in 30 s: 64 px, test accuracy 0.92, where 32 px gives 0.78)."""
        sizes = self.problem.input_sizes
        if not sizes:
            return None
        if self.clock.budget is None:
            return sizes[len(sizes) // 2]
        fits = [s for s in sizes if self.probe_seconds(s) <= 0.1 * self.clock.budget]
        if fits:
            return max(fits)
        if self.probes_that_fit(sizes[0]) > 1:
            return sizes[0]
        alone = [s for s in sizes if self.probe_costs(s)[0] <= FIRST_PROBE_SHARE * self.clock.trials_left()]
        return max(alone) if alone else sizes[0]

    def layer_groups(self) -> int | None:
        """Layer groups of the first backbone, as measured at the smallest searched size (None: unknown)."""
        backbone = self.problem.backbones[0]
        size = self.problem.input_sizes[0] if self.problem.input_sizes else None
        rates = self.cost.rates_for(backbone.name, pricing.size_value(self.problem, backbone, size))
        return len(rates.forward) if rates is not None else None

    def probe_seconds(self, size: int | None) -> float:
        return sum(self.probe_costs(size))

    def probe_costs(self, size: int | None) -> list[float]:
        """Predicted seconds of a first probe trial on each backbone, in the problem's order."""
        problem = self.problem
        probe = problem.role(PROBE)
        costs = []
        for backbone in problem.backbones:
            params = {"backbone": backbone.name, "strategy": probe.name if probe else None, "epochs": 1}
            if size is not None:
                params[problem.task.size_key] = size
            costs.append(pricing.estimate(problem, self.cost, params) or 0.0)
        return costs

    def probes_that_fit(self, size: int | None) -> int:
        """How many backbones get a first probe (and are ranked): all, unless their probes would take
        more than a fifth of the budget; then as many as fit it, one at least."""
        costs = self.probe_costs(size)
        if self.clock.budget is None or sum(costs) <= 0.2 * self.clock.budget:
            return len(costs)
        spent, fit = 0.0, 0
        for seconds in costs:
            spent += seconds
            if spent > 0.2 * self.clock.budget:
                break
            fit += 1
        return max(1, fit)

    def budget_note(self) -> str:
        config, budget = self.problem.config, self.clock.budget
        if budget is None:
            return f"no time budget: the search ends after {config.n_trials} trials (--budget 10m sets one)"
        default = " (the default; --budget sets another)" if config.budget is None else ""
        trials = f", or after {config.n_trials} trials" if config.n_trials else ""
        return f"budget {clock_text(budget)}{default}: everything ends within it{trials}"
