"""What the user sees while a search runs.

On a terminal: a live line inside every trial (epoch, batch, images per second, the trial's
predicted time left, the budget left, the best so far), redrawn a few times a second with rich,
and a permanent line per finished trial above it. Elsewhere (CI logs, files): the same permanent
lines, one per trial, nothing redrawn.
"""

from __future__ import annotations

import sys
import time

import optuna

from ..errors import OutOfTime
from ..training.trainer import Monitor
from .budget import Clock, clock_text, stopped_phrase
from .pace import Pace
from .results import stated_reason

#: redraws of the live line per second at most
REFRESH = 4.0


class Progress:
    def __init__(
        self,
        *,
        clock: Clock,
        metric: str,
        quiet: bool,
        total: int | None = None,
        already: int = 0,
        stream=None,
    ) -> None:
        from rich.console import Console

        self.clock, self.metric, self.quiet, self.total, self.already = clock, metric, quiet, total, already
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.live_enabled = self.console.is_terminal and not quiet
        self._live = None
        self.finished = 0
        self.best: tuple[float, int] | None = None
        #: predicted seconds of recent trials: the ETA of an --n-trials search
        self.predicted: list[float] = []

    # lines -------------------------------------------------------------------------------------
    def say(self, line: str, *, always: bool = False) -> None:
        """A line for the user; ``always`` for warnings --quiet must not hide."""
        if self.quiet and not always:
            return
        if self._live is not None:
            self._live.console.print(line, markup=False)
        else:
            self.console.print(line, markup=False)

    def start(self, problem, storage_shown: str, budget_note: str) -> None:
        d, split = problem.dataset, problem.split
        self.say(
            f"autotransfer: {len(d)} examples, {len(d.classes)} classes ({problem.task.name}); split "
            f"train/val/test {len(split['train'])}/{len(split['val'])}/{len(split['test'])}; device "
            f"{problem.device}"
        )
        self.say(f"  backbones: {', '.join(b.name for b in problem.backbones)}")
        self.say(f"  strategies: {', '.join(s.name for s in problem.strategies)}")
        if problem.input_sizes:
            self.say(f"  {problem.task.size_key} searched: {', '.join(map(str, problem.input_sizes))}")
        self.say(f"  study: {storage_shown} ({self.already} trials already done)")
        self.say(f"  {budget_note}")

    def _eta(self) -> str:
        left = self.clock.left()
        if self.total is not None and self.predicted:
            remaining = max(0, self.total - self.already - self.finished)
            ordered = sorted(self.predicted[-5:])
            left = min(left, remaining * ordered[len(ordered) // 2])
        return "" if left == float("inf") else f"  ETA {clock_text(left)}"

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: one permanent line per finished trial."""
        attrs = trial.user_attrs
        counted = not attrs.get("skipped") and not attrs.get("reference")
        self.finished += counted
        if trial.value is not None and (self.best is None or trial.value > self.best[0]):
            self.best = (trial.value, trial.number)
        if counted and "predicted_s" in attrs:  # the ETA's trials: ones that ran, as the rest will
            self.predicted.append(attrs["predicted_s"])
        if trial.value is not None:
            value = f"{self.metric}={trial.value:.4f}"
            if attrs.get("stopped"):
                value += (
                    f" (stopped by {stopped_phrase(attrs['stopped'])} after epoch {attrs.get('epochs_run')})"
                )
            paced = attrs.get("paced") or {}
            if paced.get("epochs", 0) < paced.get("planned", 0):
                value += (
                    f" (ended at {paced['epochs']} of {paced['planned']} epochs: its first batches took "
                    f"{paced['epoch_s']:.1f} s an epoch)"
                )
            if attrs.get("continued"):
                value += " (trained on, epochs {from} -> {to}: the best, its curve not turned)".format(
                    **attrs["continued"]
                )
        else:
            value = stated_reason(attrs) or f"after epoch {attrs.get('epochs_run', '?')}"
        state = "SKIPPED" if attrs.get("skipped") else trial.state.name
        who = f"{attrs.get('backbone', '?')} / {attrs.get('strategy', '?')}"
        if attrs.get("reference"):
            who += " (reference)"
        timing = ""
        if "duration_s" in attrs and "predicted_s" in attrs:
            timing = f"  {attrs['duration_s']:.1f}s (predicted {attrs['predicted_s']:.1f}s)"
        best = f"best {self.best[0]:.4f} (#{self.best[1]})" if self.best else "best -"
        total = f"/{self.total}" if self.total else ""
        count = f" {self.already + self.finished}{total}" if counted else ""
        self.say(
            f"[trial {trial.number}{count}] {state:8s} {who:40s} {value}"
            f"{timing}  | {best}  elapsed {clock_text(self.clock.elapsed())}{self._eta()}"
        )

    def finish(self, best: dict | None) -> None:
        self.stop_live()
        if best is None:
            self.say("no trial completed; see leaderboard.csv for the reasons")
            return
        test = ""
        if best["test_metric"] is not None:
            test = f", test {best['test_metric_name']} {best['test_metric']:.4f}"
        if "target_accuracy" in best:
            test += f", target accuracy {best['target_accuracy']:.4f} (reported, not optimised)"
        ensemble = best.get("ensemble", {})
        if ensemble.get("exported"):
            single = best["single"]
            members = ", ".join(f"#{m['trial']} x{m['weight']:g}" for m in ensemble["members"])
            single_test = "" if single["test_metric"] is None else f", test {single['test_metric']:.4f}"
            self.say(
                f"best: an ensemble of {len(ensemble['members'])} trials ({members}): "
                f"val {best['metric']} {best['val_metric']:.4f}{test}; the best single trial, "
                f"{best['trial']} {best['backbone']} / {best['strategy']}: val {single['val_metric']:.4f}"
                f"{single_test}"
            )
        else:
            self.say(
                f"best: trial {best['trial']} {best['backbone']} / {best['strategy']}: "
                f"val {best['metric']} {best['val_metric']:.4f}{test}"
            )
        if ensemble and not ensemble.get("exported"):
            self.say(f"  no ensemble: {ensemble['why']}")
        self.say(f"  {best['verdict']}")
        self.say(
            f"  took {clock_text(self.clock.elapsed())}"
            + (f" of a {clock_text(self.clock.budget)} budget" if self.clock.budget else "")
        )

    # inside a trial ---------------------------------------------------------------------------
    def watch(
        self, number: int, who: str, predicted: float, deadline: float | None, pace: Pace | None = None
    ) -> TrialMonitor:
        if self.live_enabled and self._live is None:
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(""), console=self.console, transient=True, auto_refresh=False)
            self._live.start()
        return TrialMonitor(self, number, who, predicted, deadline, pace)

    def draw(self, text: str) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(text, overflow="ellipsis", no_wrap=True), refresh=True)

    def stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class TrialMonitor(Monitor):
    """Draws one trial's live line, stops the trial at its deadline (the budget's, or its cap) and,
    with a ``pace``, checks its price against its first batches (see ``pace``)."""

    def __init__(
        self,
        progress: Progress,
        number: int,
        who: str,
        predicted: float,
        deadline: float | None,
        pace: Pace | None = None,
    ) -> None:
        self.progress, self.number, self.who, self.predicted = progress, number, who, predicted
        self.deadline, self.pace = deadline, pace
        self.started = time.time()
        self.phase_name, self.epoch, self.epochs, self.batches = "start", 0, 0, 0
        self.batch, self.examples, self.phase_started = 0, 0, self.started
        self.drawn = 0.0

    def phase(self, name: str, epoch: int, epochs: int, batches: int) -> None:
        self.phase_name, self.epoch, self.epochs, self.batches = name, epoch, epochs, batches
        self.batch, self.examples, self.phase_started = 0, 0, time.time()
        self._check()

    def batch_end(self, examples: int) -> None:
        self.batch += 1
        self.examples += examples
        now = self._check()
        if (
            self.pace is not None
            and self.phase_name == "train"
            and self.epoch == 1
            and self.last_epoch is None
        ):
            self.last_epoch = self.pace.batch(now, self.batch, self.batches)
            if self.last_epoch is not None:  # the trial's time left, now measured
                self.predicted = now - self.started + self.pace.measured["left_s"]
        if self.progress.live_enabled and now - self.drawn >= 1 / REFRESH:
            self.drawn = now
            self.progress.draw(self.line(now))

    def epoch_end(self, epoch: int, metric: float) -> None:
        self._check()

    def _check(self) -> float:
        now = time.time()
        if self.deadline is not None and now >= self.deadline:
            raise OutOfTime(f"trial {self.number}: time is up")
        return now

    def line(self, now: float) -> str:
        rate = self.examples / max(1e-6, now - self.phase_started)
        trial_left = max(0.0, self.predicted - (now - self.started))
        budget = self.progress.clock.left()
        best = self.progress.best
        parts = [
            f"trial {self.number} {self.who}",
            f"{self.phase_name} epoch {self.epoch}/{self.epochs}" if self.epochs else self.phase_name,
            f"batch {self.batch}/{self.batches}",
            f"{rate:.0f} ex/s",
            f"trial ~{clock_text(trial_left)} left",
        ]
        if budget != float("inf"):
            parts.append(f"budget {clock_text(budget)} left")
        parts.append(f"best {best[0]:.4f} (#{best[1]})" if best else "best -")
        return " · ".join(parts)
