"""Live progress in the terminal: one line per finished trial, with the best so far and an ETA."""

from __future__ import annotations

import sys
import time

import optuna


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(
        self,
        *,
        total: int | None,
        already: int,
        timeout: float | None,
        quiet: bool,
        metric: str = "accuracy",
    ) -> None:
        self.total, self.already, self.timeout, self.quiet, self.metric = (
            total,
            already,
            timeout,
            quiet,
            metric,
        )
        self.started = time.time()
        self.finished = 0

    def _print(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def start(self, search) -> None:
        d = search.dataset
        backbones = ", ".join(b.name for b in search.backbones)
        strategies = ", ".join(s.name for s in search.strategies)
        self._print(
            f"autotransfer: {len(d)} examples, {len(d.classes)} classes ({search.task.name}); "
            f"split train/val/test {len(search.split['train'])}/{len(search.split['val'])}/"
            f"{len(search.split['test'])}; device {search.device}"
        )
        self._print(f"  backbones: {backbones}\n  strategies: {strategies}")
        self._print(f"  study: {search.config.storage_shown} ({self.already} trials already done)")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.finished += 1
        elapsed = time.time() - self.started
        done = self.already + self.finished
        eta = ""
        if self.total:
            eta = f"  ETA {_clock(elapsed / self.finished * max(0, self.total - done))}"
        if self.timeout:
            left = self.timeout - elapsed
            eta = f"  ETA {_clock(left)}" if not eta else eta
        value = (
            f"{self.metric}={trial.value:.4f}"
            if trial.value is not None
            else (
                trial.user_attrs.get("fail_reason")
                or f"after epoch {trial.user_attrs.get('epochs_run', '?')}"
            )
        )
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "best -"
        total = f"/{self.total}" if self.total else ""
        who = f"{trial.user_attrs.get('backbone', '?')} / {trial.user_attrs.get('strategy', '?')}"
        self._print(
            f"[trial {trial.number} {done}{total}] {trial.state.name:8s} {who:42s} {value}  | {best}"
            f"  elapsed {_clock(elapsed)}{eta}"
        )

    def finish(self, best: dict | None) -> None:
        if best is None:
            self._print("no trial completed; see leaderboard.csv for the reasons")
            return
        test = (
            f", test {best['test_metric_name']} {best['test_metric']:.4f}"
            if best["test_metric"] is not None
            else ""
        )
        if "target_accuracy" in best:
            test += f", target accuracy {best['target_accuracy']:.4f} (reported, not optimised)"
        self._print(
            f"best: trial {best['trial']} {best['backbone']} / {best['strategy']}: "
            f"val {best['metric']} {best['val_metric']:.4f}{test}"
        )
        self._print(f"  {best['verdict']}")
