"""The search, put together: the problem, its study, the clock and the cost model, the first trials,
Optuna's loop with the callbacks that keep the budget, then the export."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..config import SearchConfig
from ..errors import TrialFailed
from ..plugins import Host, default_host
from ..specs import PROBE
from . import extend, pricing
from .budget import SAFETY, Clock, clock_text, grace
from .cost import CostModel, device_kind
from .first_trials import ReferencePlanner, enqueue_first_trials, warm_params
from .objective import Objective, last_skips, observe
from .pacing import Pacing
from .problem import Problem, load_inputs, open_problem
from .progress import Progress
from .results import write_leaderboard
from .sampler import make_sampler
from .study import SearchStudy

#: consecutive skipped trials after which nothing more is predicted to fit
SKIPS_TO_STOP = 3


@dataclass
class SearchResult:
    out_dir: Path
    best: dict | None
    study: optuna.Study

    @property
    def leaderboard(self):
        import pandas as pd

        return pd.read_csv(self.out_dir / "leaderboard.csv")

    def predict(self, inputs):
        from ..export import load_model

        return load_model(str(self.out_dir / "model")).predict(inputs)


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's own log lines and experimental warnings, off while a search runs: failures are
    reported by the search's progress lines."""
    import warnings

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


class Search:
    """One search: a problem, its study, a clock. ``open`` builds every part; ``run`` runs it."""

    def __init__(self, problem: Problem, study: SearchStudy, clock: Clock) -> None:
        self.problem, self.study, self.clock = problem, study, clock
        config = problem.config
        self.cost = CostModel(
            device_kind(problem.device), study.costs(), study.remember, size_power=problem.task.size_power
        )
        self.pace = Pacing(problem, study, self.cost, clock)
        for trial in study.trials():
            observe(self.cost, trial)
        sampler_cost = (lambda params: pricing.estimate(problem, self.cost, params)) if clock.budget else None
        seed = config.seed + len(study.trials())  # a resumed study must not replay its first suggestions
        study.study.sampler = make_sampler(config.sampler, seed, sampler_cost, cooling=self.pace.cost_weight)

        if not study.created:  # joining workers seed apart, or those started together sample alike
            study.study.sampler.reseed_rng()
        self.progress = Progress(
            clock=clock,
            metric=problem.metric,
            quiet=config.quiet,
            total=config.n_trials,
            already=study.counted(),
        )
        self.reference = ReferencePlanner(problem, study, self.cost, clock)

    @classmethod
    def open(cls, config: SearchConfig, *, host: Host | None = None, clock: Clock | None = None) -> Search:
        host = host or default_host(config.plugins)
        clock = clock or Clock.start(config.budget_seconds)
        inputs = load_inputs(config, host)
        study = SearchStudy.open(config)
        problem = open_problem(config, host, inputs=inputs, persisted=study)
        study.candidates([b.name for b in problem.backbones], [s.name for s in problem.strategies])
        return cls(problem, study, clock)

    # the loop ------------------------------------------------------------------------------------
    def run(self, *, finalize: bool = True) -> SearchResult:
        """Prepare, optimise until done, export (unless ``finalize`` is False: a worker of several)."""
        self.progress.start(self.problem, self.problem.config.storage_shown, self.pace.budget_note())
        try:
            self.prepare()
            self.optimize()
        finally:
            self.close()
        return self.finish() if finalize else self.result(None)

    def prepare(self) -> None:
        """Measure the device, keep the export's reserve, enqueue the first trials, fail dead workers'."""
        pricing.prime(self.problem, self.cost)
        self.clock.reserve = self.pace.export_reserve()
        size = self.pace.warm_size()
        enqueue_first_trials(
            self.problem,
            self.study,
            size,
            log=self.progress.say,
            estimate=lambda params: pricing.estimate(self.problem, self.cost, params),
            budget=self.clock.budget,
            probes=self.pace.probes_that_fit(size),
            groups=self.pace.layer_groups(),
            left=self.clock.trials_left() if self.clock.budget is not None else None,
            measure=lambda backbone, sizes: pricing.measure(self.problem, self.cost, backbone, sizes),
        )

        optuna.storages.fail_stale_trials(self.study.study)  # dead workers' trials: failed and queued again
        requeued = self.study.requeue_interrupted()
        if requeued:
            self.progress.say(
                f"  trials {', '.join(map(str, requeued))} were interrupted: they run again first"
            )
        self.say_stale()

    def optimize(self) -> None:
        if self.done():
            return
        callbacks = [
            self.after_trial,
            self.reference,
            self.progress.trial_finished,
            self.after_skips,
            self.stop_when_done,
            self.release_memory,
        ]
        self.study.study.optimize(
            self.objective(), catch=(TrialFailed,), gc_after_trial=False, callbacks=callbacks
        )

    def close(self) -> None:
        self.progress.stop_live()
        write_leaderboard(self.study.study, self.problem.config.out_dir / "leaderboard.csv")
        self.problem.close()

    def finish(self) -> SearchResult:
        from .finalize import finalize

        best = finalize(self.problem, self.study, self.clock.left(), self.pace.member_price)
        self.progress.finish(best)
        self.say_overrun()
        return self.result(best)

    def result(self, best: dict | None) -> SearchResult:
        return SearchResult(out_dir=self.problem.config.out_dir, best=best, study=self.study.study)

    def objective(self) -> Objective:
        return Objective(self.problem, self.study, self.clock, self.cost, self.progress)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        observe(self.cost, trial)
        self.clock.reserve = self.pace.export_reserve()
        up = extend.promote(self.problem, self.study, self.cost, self.clock, trial)
        if up is not None:
            key = self.problem.task.size_key
            self.progress.say(f"  trial {trial.number} is the best: queued again at {key} {up[key]}")

    def done(self) -> bool:
        """No more trials: --n-trials reached (the reference, when planned, still runs), the budget
        spent, or nothing predicted to fit what is left."""
        n_trials = self.problem.config.n_trials
        running = [t for t in self.study.running() if not t.user_attrs.get("reference")]
        if n_trials is not None and self.study.counted() + len(running) >= n_trials:
            return not self.reference.pending()
        if self.clock.budget is not None and self.clock.trials_left() <= 0:
            return True
        return last_skips(self.study, SKIPS_TO_STOP) and not self.study.waiting()

    def after_skips(self, study: optuna.Study, trial) -> None:
        """After SKIPS_TO_STOP skipped trials in a row: queue the cheapest trial there is (a probe at
        the lowest resolution on the cheapest backbone, a fresh learning rate) if it fits what is
        left; if it does not, nothing does, and the search stops."""
        if not last_skips(self.study, SKIPS_TO_STOP) or self.study.waiting():
            return
        problem = self.problem
        probe = problem.searched_role(PROBE)
        size = problem.input_sizes[0] if problem.input_sizes else None
        costs = self.pace.probe_costs(size)
        cheapest = min(range(len(costs)), key=costs.__getitem__)
        if probe is None or costs[cheapest] / SAFETY > self.clock.trials_left():
            return
        params = warm_params(
            problem, probe, problem.backbones[cheapest].name, size, epochs=problem.config.max_epochs
        )
        low, high = probe.lr_range
        draw = random.Random(problem.config.seed + len(self.study.trials())).random()
        params[f"{probe.name}.lr"] = float(low * (high / low) ** draw)

        study.enqueue_trial(params, user_attrs={"fallback": True})

    def stop_when_done(self, study: optuna.Study, trial) -> None:
        if self.done():
            study.stop()

    def release_memory(self, study: optuna.Study, trial) -> None:
        """A trial's model is freed when it returns; should something keep it alive in a reference
        cycle, collect, but only when GPU memory is filling (a full collection costs ~0.3 s a trial)."""
        device = self.problem.device
        if device.type != "cuda":
            return
        import gc

        import torch

        if torch.cuda.memory_allocated(device) > 0.5 * torch.cuda.get_device_properties(device).total_memory:
            gc.collect()
            torch.cuda.empty_cache()

    def say_stale(self) -> None:
        running = self.study.running()
        if running:
            numbers = ", ".join(str(t.number) for t in running)
            self.progress.say(
                f"warning: trials {numbers} still RUNNING: another worker has them, or a killed one did; a "
                "trial whose worker died is failed and run again once no heartbeat came for "
                f"{self.problem.config.heartbeat} s",
                always=True,
            )

    def say_overrun(self) -> None:
        budget = self.clock.budget
        if budget is not None and self.clock.elapsed() > budget + grace(budget):
            self.progress.say(
                f"warning: the search took {clock_text(self.clock.elapsed())}, over its budget", always=True
            )


def run_search(
    config: SearchConfig, *, host: Host | None = None, started: float | None = None
) -> SearchResult:
    """Run a search: ``started`` is when the command began (time.time()), so the budget covers
    everything since (the CLI passes it; from Python the call's start)."""
    clock = Clock.start(config.budget_seconds, started if started is not None else time.time())
    with quiet_optuna():
        return Search.open(config, host=host, clock=clock).run()
