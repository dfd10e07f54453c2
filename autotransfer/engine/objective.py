"""One trial inside the study: sample, predict its cost, shrink or skip it to fit the time left,
build, train under a deadline, and record what happened. Failures are recorded with their reason
and the search goes on; a trial the budget stops keeps its best epoch."""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections import Counter

import optuna

from ..errors import OutOfTime, TrialFailed
from ..specs import FIXED, REFERENCE
from . import extend, pricing
from .budget import SAFETY, TRIAL_SHARE, Clock, stopped_phrase
from .cost import CACHED, TRAINS, CostModel, Prediction, kind_of
from .pace import Skipped, TooSlow, pace_for
from .portfolio import SIZE_KEYS, smaller_sizes
from .problem import Problem
from .progress import Progress
from .study import SearchStudy
from .trial import Choices, TrialInfo, build_trial, choose, with_knobs


def too_dear(one_epoch: float, left: float, margin: float, predicted: float) -> Skipped:
    """A trial not run: one epoch is predicted to take more than it may plan of ``left`` seconds (a
    ``margin`` of them: the rest is kept back for the prediction's error, and the reason says so)."""
    left = max(0.0, left)
    return Skipped(
        f"skipped: one epoch is predicted to take {one_epoch:.1f} s, more than the {left * margin:.1f} s it "
        f"may plan of the {left:.1f} s left for it ({1 - margin:.0%} kept back for the prediction's error)",
        predicted,
    )


def first_look(trial: optuna.Trial, study) -> bool:
    """The search's first trial while nothing has completed: its cheapest look at the data, judged
    on its measured price, not skipped on a guess."""
    return trial.number == 0 and study.best() is None


def export_extra(problem: Problem, cost: CostModel, clock: Clock, trial: optuna.Trial) -> float:
    """Should this trial win, exporting it may cost more than the reserve kept: leave room for that."""
    backbone = trial.params.get("backbone")
    if clock.budget is None or backbone is None:
        return 0.0
    size = trial.params.get(problem.task.size_key or "")
    return max(0.0, pricing.export_seconds(problem, cost, backbone, size) - clock.reserve)


def planned(trial: optuna.Trial, study) -> bool:
    """A trial the search planned itself (a first look, a portfolio entry, its first probe) was priced
    with all its knobs when queued; before it is built its freeze depth is not known yet, so it is
    judged once built and measured (where it may still train fewer epochs), not on a guess."""
    attrs = trial.user_attrs
    return bool(attrs.get("explore") or attrs.get("portfolio") or attrs.get(FIXED)) or first_look(
        trial, study
    )


#: a trial stops once this many of its epochs have scored no better than predicting one class
IDLE_EPOCHS = 2


def constant_score(problem: Problem) -> float | None:
    """The validation accuracy of predicting the split's most common class, every time (None: trials
    are not scored on accuracy)."""
    if problem.metric != "accuracy" or not problem.split.get("val"):
        return None
    labels = problem.inputs.dataset.labels
    counts = Counter(labels[i] for i in problem.split["val"])
    return max(counts.values()) / len(problem.split["val"])


def idle_check(problem: Problem, study: SearchStudy, trial: optuna.Trial, role: str):
    """A function of each epoch's score (and whether more epochs follow) that says why the trial stops
    as learning nothing (None: it goes on), and records that in the trial: once IDLE_EPOCHS epochs or
    more score no better than predicting the most common class, by more than one validation example,
    while another trial of the study already did better than that (the budget has a better use; while
    nothing has, the user still gets the best of what ran). A diverged fine-tune is this (the
    portfolio's LoRA of EfficientNet-Lite2 on MNIST-5k, in one seed of three: validation 0.100, the ten
    classes' chance, for all ten of its epochs, a sixth of a 10-minute search); a slow one is not: after
    two epochs every trial that was learning at all in the recorded benchmarks was well above chance.
    Portfolio entries, first looks and promotions, which Hyperband never stops, are watched too; the
    reference, a fixed recipe and --no-pruning are not."""
    constant, scores = constant_score(problem), []
    if constant is None or role or trial.user_attrs.get(FIXED) or not problem.config.pruning:
        return lambda score, more: None
    floor = constant + 1 / len(problem.split["val"]) + 1e-9

    def why(score: float, more: bool) -> str | None:
        scores.append(score)
        if not more or len(scores) < IDLE_EPOCHS or max(scores) > floor:
            return None
        best = study.best()
        if best is None or not best.value > floor:
            return None
        reason = (
            f"not learning: {len(scores)} epochs, none above {constant:.4f} (what predicting the most "
            "common class scores) by more than one validation example"
        )
        trial.set_user_attr("not_learning", reason)
        return reason

    return why


def stopped_by(trial: optuna.Trial) -> str:
    """What stopped a trial at its deadline: the reference's cap (it has one) or the budget."""
    return "the reference's cap" if trial.user_attrs.get("cost_cap_s") else "budget"


class Objective:
    def __init__(
        self, problem: Problem, study: SearchStudy, clock: Clock, cost: CostModel, progress: Progress
    ):
        self.problem, self.study, self.clock, self.cost, self.progress = problem, study, clock, cost, progress
        self.checkpoints = problem.config.out_dir / "checkpoints"

    def __call__(self, trial: optuna.Trial) -> float:
        role = REFERENCE if trial.user_attrs.get("reference") else ""
        started = time.time()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # which worker ran it
        skip_if_surplus(self.study, trial, role)
        extend.skip_if_overtaken(self.study, trial)
        try:
            return self._run(trial, role, started)
        except Skipped as skip:
            record_skip(self.problem, self.study, trial, skip, started)
            raise
        except optuna.TrialPruned:
            raise
        except OutOfTime as exc:
            what = stopped_by(trial)
            trial.set_user_attr("stopped", what)
            raise optuna.TrialPruned(
                f"stopped by {stopped_phrase(what)} before its first epoch ended"
            ) from exc
        except Exception as exc:
            raise self._failed(trial, exc) from exc
        finally:
            trial.set_user_attr("duration_s", round(time.time() - started, 2))

    def allowed(self, trial: optuna.Trial, started: float) -> float:
        """Seconds this trial may take from ``started``: what the budget leaves (at most a share of
        it), and the reference's cap."""
        extra = export_extra(self.problem, self.cost, self.clock, trial)
        allowed = self.clock.trials_left() + (time.time() - started) - extra
        if self.clock.budget is not None and self.study.best() is not None:
            # once something is found, no single trial may bet more than a share of the budget
            allowed = min(allowed, TRIAL_SHARE * self.clock.budget)
        cap = trial.user_attrs.get("cost_cap_s")
        return min(allowed, cap) if cap is not None else allowed

    def _run(self, trial: optuna.Trial, role: str, started: float) -> float:
        choices = with_knobs(self.problem, trial, choose(self.problem, trial, role))
        allowed = self.allowed(trial, started)
        guess = pricing.estimate(self.problem, self.cost, {**trial.params, "epochs": 1})
        # a backbone not measured yet is guessed from another's rates: skip on that only when far off
        margin = SAFETY if self.cost.knows_backbone(choices.backbone.name) else 0.5
        unplanned = not planned(trial, self.study)
        if guess is not None and guess > allowed * margin and self.clock.budget is not None and unplanned:
            raise too_dear(guess, allowed, margin, guess)
        trainer, info = build_trial(self.problem, trial, role, choices)
        self.cost.absorb(self.problem.timings)
        prediction, epochs, allowed = self._plan(trial, trainer, choices, started)
        ends: list[float] = []  # when each epoch ended, so a trial the budget stops still teaches
        trainer.report = self._reporter(trial, role, lambda: trainer.config.epochs, ends)
        who = f"{info.backbone} / {info.strategy}"
        deadline = None if allowed == float("inf") else started + allowed
        pace = pace_for(trial, prediction, epochs, deadline, smaller_sizes(self.problem, trial))
        trainer.monitor = self.progress.watch(
            trial.number, who, trial.user_attrs["predicted_s"], deadline, pace
        )
        fit_started = time.time()
        metric, trainer = self._fit(trial, trainer, role, choices)
        if pace is not None and pace.measured is not None:
            trial.set_user_attr("paced", pace.measured)
        metric = extend.train_on(trial, trainer, self, fit_started, ends)
        if ends:
            trial.set_user_attr("epochs_end_s", round(ends[-1] - started, 2))
        self._record(trial, trainer)
        self._keep_if_best(trial, trainer, metric, info)
        return metric

    def _plan(self, trial, trainer, choices: Choices, started: float) -> tuple[Prediction, int, float]:
        """Predict the built trial; fewer epochs when all would not fit, skipped when none does. Its
        allowance is priced again, its resolution now measured (a 256-token MiniLM's export room, 61 s
        unmeasured, is 16 s measured)."""
        prediction = pricing.price_built_trial(
            self.problem,
            self.cost,
            trainer,
            choices.backbone.name,
            pricing.size_value(self.problem, choices.backbone, choices.size),
            choices.strategy.name,
        )
        allowed = self.allowed(trial, started)
        spent = time.time() - started
        epochs = prediction.epochs_within((allowed - spent) * SAFETY, choices.epochs)
        if epochs == 0 and self.clock.budget is None and trial.user_attrs.get("reference"):
            epochs = 1  # no time limit: the reference trains one epoch at least (its cap stops it after)
        if epochs == 0 and first_look(trial, self.study) and spent + prediction.total(1) < allowed:
            epochs = 1  # the first probe is the search's only fallback: it runs if one epoch may fit
        if epochs == 0 and trial.user_attrs.get(FIXED):
            epochs = 1  # a fixed recipe is not skipped: one epoch at least, which the budget may stop
        if epochs == 0:
            raise too_dear(prediction.total(1), allowed - spent, SAFETY, spent + prediction.total(1))

        if epochs < choices.epochs:
            trial.set_user_attr("epochs_shrunk_from", choices.epochs)
            trainer.config.epochs = epochs
        trial.set_user_attr("predicted_s", round(spent + prediction.total(epochs), 2))
        # the parts, uncorrected, so a finished trial can teach the correction (see ``observe``)
        trial.set_user_attr(
            "cost",
            {
                "spent": round(spent, 3),
                "fixed": prediction.fixed,
                "epoch": prediction.per_epoch,
                "correction": prediction.correction,
                "overhead": prediction.overhead,
                "kind": prediction.kind,
                "cached": prediction.kind == CACHED,
            },
        )
        return prediction, epochs, allowed

    def _reporter(self, trial: optuna.Trial, role: str, last_epoch, ends: list[float]):
        # a first look at a strategy, a portfolio configuration or a promotion is not pruned either: a
        # fine-tune behind a probe after one epoch is often ahead after a few, and a look is there to learn
        attrs = trial.user_attrs
        prunable = not role and not any(
            attrs.get(k) is not None for k in ("explore", "portfolio", "promoted")
        )
        idle = idle_check(self.problem, self.study, trial, role)  # nor trains on at chance (see there)

        def report(epoch: int, metric: float, extra: dict) -> None:
            ends.append(time.time())
            trial.report(metric, epoch)
            # the last epoch is never pruned: the trial has already paid for it; the reference never
            more = epoch < last_epoch()
            why = idle(metric, more)
            trial.set_user_attr("epochs_run", epoch)
            if why or (prunable and more and trial.should_prune()):
                for key, value in extra.items():  # a storage write each: only for the epoch that counts
                    trial.set_user_attr(key, value)
                raise optuna.TrialPruned(why or f"pruned after epoch {epoch} at {metric:.4f}")

        return report

    def _fit(self, trial, trainer, role: str, choices: Choices):
        """(metric, the trainer that reached it)."""
        import torch

        try:
            return trainer.fit(), trainer
        except torch.OutOfMemoryError:
            # out of memory all the same (the fit is an estimate; other processes take memory too):
            # retry once from the start with half the micro-batch, the same batch by accumulation
            half = max(1, trainer.config.pass_size // 2)
            report, monitor, epochs = trainer.report, trainer.monitor, trainer.config.epochs
            del trainer
            if self.problem.device.type == "cuda":
                torch.cuda.empty_cache()
            trial.set_user_attr("oom_retry_micro_batch", half)
            trainer, _ = build_trial(self.problem, trial, role, choices)
            trainer.config.micro_batch, trainer.config.epochs = half, epochs
            trainer.report, trainer.monitor = report, monitor
            return trainer.fit(), trainer

    def _record(self, trial, trainer) -> None:
        trial.set_user_attr("epochs_run", len(trainer.history))
        trial.set_user_attr("best_epoch", trainer.best_epoch)
        for key, value in trainer.history[
            trainer.best_epoch - 1
        ].items():  # the metrics of the epoch that counts
            if key not in ("epoch", "val_metric"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("frozen_prefix", trainer.plan.frozen_prefix)
        if trainer.stopped:
            trial.set_user_attr("stopped", stopped_by(trial))
        if trainer.config.pass_size < trainer.config.batch_size:
            trial.set_user_attr("micro_batch", trainer.config.micro_batch)  # the batch was accumulated
        if trainer.target_eval is not None:
            # true target accuracy, beside the search: recorded, never returned to the optimiser
            inputs = trainer.boundary(trainer.target_eval)
            trial.set_user_attr("target_accuracy", trainer.evaluate(inputs, trainer.target_eval.labels))

    def _keep_if_best(self, trial, trainer, metric: float, info: TrialInfo) -> None:
        """The weights of a trial that may be exported: the best so far, or with an ensemble one of
        the ENSEMBLE_LIBRARY best (with its validation probabilities, which the ensemble is chosen on)."""
        from .ensemble import ENSEMBLE_LIBRARY

        ensemble = self.problem.config.ensemble
        complete = self.study.trials(states=(optuna.trial.TrialState.COMPLETE,))
        if sum(1 for t in complete if t.value >= metric) < (ENSEMBLE_LIBRARY if ensemble else 1):
            keep_checkpoint(self.checkpoints, trial.number, trainer, info, outputs=ensemble)

    def _failed(self, trial, exc: Exception) -> TrialFailed:
        import torch

        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        if isinstance(exc, torch.OutOfMemoryError):
            reason = f"out of memory even at half the micro-batch: {reason}"
        trial.set_user_attr("fail_reason", reason)
        self.problem.config.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.problem.config.out_dir / "failures.log", "a") as log:
            log.write(f"--- trial {trial.number}\n{traceback.format_exc()}\n")
        return TrialFailed(reason)


def record_skip(
    problem: Problem, study: SearchStudy, trial: optuna.Trial, skip: Skipped, started: float
) -> None:
    """A skipped trial's reason and price; a portfolio entry is queued again at a smaller resolution."""
    smaller = requeue_smaller(problem, study.study, trial)
    again = "" if smaller is None else f"; queued again at {smaller}"
    trial.set_user_attr("skipped", f"{skip}{again}")
    predicted = skip.predicted
    if isinstance(skip, TooSlow):  # measured from its first batches: its whole trial, at that pace
        predicted += time.time() - started
        trial.set_user_attr("paced", skip.measured)  # what its batches took teaches the price
    trial.set_user_attr("predicted_s", round(predicted, 2))


def skip_if_surplus(study: SearchStudy, trial: optuna.Trial, role: str) -> None:
    """Not run, and not counted, when other workers' trials already reached --n-trials."""
    if not role and study.surplus(trial.number):
        trial.set_user_attr("skipped", "skipped: other workers' trials reached --n-trials")
        trial.set_user_attr("duration_s", 0.0)
        raise optuna.TrialPruned("other workers' trials reached --n-trials")


def requeue_smaller(problem: Problem, study: optuna.Study, trial) -> int | None:
    """A portfolio entry that did not fit once built (it was priced when queued, before the search's
    first trials taught the cost model) is queued again at the next smaller searched resolution: a
    cheaper fidelity of the same configuration. Returns that resolution (None: not queued again)."""
    key, source = problem.task.size_key, trial.user_attrs.get("portfolio")
    smaller = smaller_sizes(problem, trial)
    if not smaller:
        return None
    study.enqueue_trial({**trial.params, key: smaller[-1]}, user_attrs={"portfolio": source})
    trial.set_user_attr("requeued_at", smaller[-1])
    return smaller[-1]


def keep_checkpoint(checkpoints, number: int, trainer, info: TrialInfo, outputs: bool) -> None:
    """The trial's weights (and, with ``outputs``, its best epoch's validation probabilities) and what
    exporting it needs, in ``checkpoints``."""
    from ..export import save_weights
    from .ensemble import save_outputs

    model = trainer.plan.export(trainer.model) if trainer.plan.export else trainer.model
    save_weights(model, checkpoints / f"trial-{number}.safetensors")
    if outputs and trainer.kept.val_logits is not None:
        save_outputs(checkpoints, number, trainer.kept.val_logits)
    record = {"backbone": info.backbone, "strategy": info.strategy, "preprocessing": info.preprocessing}
    (checkpoints / f"trial-{number}.json").write_text(json.dumps(record))


def observe(cost: CostModel, trial: optuna.trial.FrozenTrial) -> None:
    """Teach the cost model from a finished trial: the predicted against the actual seconds after the
    prediction, for the epochs it ran; a trial the budget stopped, up to the end of its last whole
    epoch; one its pace stopped, from the batches it timed (other skipped trials teach nothing)."""
    attrs = trial.user_attrs
    parts, epochs = attrs.get("cost"), attrs.get("epochs_run") or 0
    seconds = attrs.get("epochs_end_s") if attrs.get("stopped") else attrs.get("duration_s")
    paced, strategy = attrs.get("paced"), attrs.get("strategy") or trial.params.get("strategy", "")
    if parts is not None and attrs.get("skipped") and paced:  # stopped by its pace: its batches teach
        cost.observe(paced["predicted"], paced["actual"], None, trial_kind(trial, cost), strategy)
        return
    if parts is None or seconds is None or epochs < 1:
        return
    frozen = (attrs["strategy"], attrs["frozen_prefix"]) if "frozen_prefix" in attrs else None
    predicted = parts["fixed"] + parts["epoch"] * epochs
    cost.observe(predicted, seconds - parts["spent"], frozen, trial_kind(trial, cost), strategy)


def trial_kind(trial: optuna.trial.FrozenTrial, cost: CostModel) -> str:
    """The cost kind a trial was priced as. Recorded before trials over cached activations were a kind
    of their own (no ``cached`` among its parts), one that froze a prefix and did not augment cached it
    (``pricing.query_from_params``'s rule, with the cache on, the default): its kind is what
    ``cost.kind_of`` makes of that prefix at the rates measured for its backbone and resolution."""
    parts, attrs = trial.user_attrs.get("cost") or {}, trial.user_attrs
    kind = parts.get("kind", TRAINS)
    if kind != TRAINS or "cached" in parts or trial.params.get("augment", "off") != "off":
        return kind
    size = next((trial.params[k] for k in SIZE_KEYS if k in trial.params), None)
    rates = cost.rates_for(attrs.get("backbone") or trial.params.get("backbone", ""), size)
    return kind_of(rates.forward, attrs.get("frozen_prefix") or 0, True) if rates is not None else kind


def predicted_for_epochs_run(trial: optuna.trial.FrozenTrial, cost: CostModel | None = None) -> float | None:
    """What the trial was predicted to cost for the epochs it ran (pruned trials ran fewer); with
    ``cost``, its recorded parts priced with the correction and overhead ``cost`` has learned instead
    (``benchmarks/cost_accuracy.py --replay``)."""
    attrs = trial.user_attrs
    parts, epochs = attrs.get("cost"), attrs.get("epochs_run") or 0
    if parts is None or epochs < 1:
        return None
    correction, overhead = parts["correction"], parts.get("overhead", 0.0)
    if cost is not None:
        strategy = attrs.get("strategy") or trial.params.get("strategy", "")
        correction = cost.correction_for(trial_kind(trial, cost), strategy=strategy)
        overhead = cost.overhead
    return parts["spent"] + Prediction(parts["fixed"], parts["epoch"], correction, overhead).total(epochs)


def last_skips(study: SearchStudy, n: int) -> bool:
    """Whether the last ``n`` finished trials were all skipped: nothing more fits."""
    finished = [t for t in study.trials() if t.state.is_finished()]
    return len(finished) >= n and all(t.user_attrs.get("skipped") for t in finished[-n:])
