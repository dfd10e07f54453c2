"""A trial's price checked against its own first batches.

A trial is priced before it trains from rates measured on the bare backbone, a few batches of 64
examples, corrected by the study's earlier trials. What that misses shows in the trial's first
batches: a LoRA of EfficientNet-Lite0 at batch 16 ran 2-4x its parts (adapters on every layer,
small batches on a CPU), and a trial the budget then stopped lost the epoch it was in (22 s of a
two-minute search on digits) or, before its first epoch ended, everything (27 s on MNIST-5k).

So once a trial has trained a few batches of its first epoch (past the first, which pays one-off
costs) for a second or more, its epoch is measured, not predicted: the batches' rate, with the rest
of the epoch's parts (validation) scaled as the training was. When its planned epochs no longer fit
its deadline, it ends at those that do and its learning-rate schedule ends there too (a trial cut
mid-schedule by the deadline keeps an epoch trained at a high learning rate). When not even the
fewest worth running fit (one epoch; for a portfolio entry with a smaller resolution to go to, the
epochs it should get before a larger resolution does), it stops at once (``TooSlow``) and is
recorded as skipped with what was measured, which teaches the cost model before the next price.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from ..specs import FIXED
from .portfolio import ENTRY_EPOCHS

#: the pace is judged after this many seconds of timed batches (past the first), or half the epoch
MEASURE_S = 1.0
#: and after at least this many batches (the first of them untimed)
MEASURE_BATCHES = 3
#: epochs planned at the measured pace fill this much of the time left: the measurement's own error
PACE_SAFETY = 0.9


class Skipped(optuna.TrialPruned):
    """Not run: predicted not to fit the time left (``predicted``: seconds, for one epoch)."""

    def __init__(self, message: str, predicted: float) -> None:
        super().__init__(message)
        self.predicted = round(predicted, 2)


class TooSlow(Skipped):
    """Stopped in its first epoch: the batches measured say the epochs worth running do not fit."""

    def __init__(self, message: str, predicted: float, measured: dict) -> None:
        super().__init__(message, predicted)
        self.measured = measured


@dataclass
class Pace:
    """One trial's plan, checked once against its first batches (``batch``)."""

    #: the cost model's parts for one epoch (uncorrected): all of it, and its training batches
    per_epoch: float
    train: float
    #: what one epoch was priced at (corrected), for the record
    priced: float
    epochs: int
    #: the fewest epochs worth running (below them the trial stops and is skipped)
    least: int
    #: wall-clock time the trial must end by
    deadline: float
    first: float | None = None
    #: what was measured, once judged: epoch seconds, the epochs that fit (for the record)
    measured: dict | None = None

    def batch(self, now: float, done: int, batches: int) -> int | None:
        """After ``done`` of the first epoch's ``batches``: the epochs the trial should end at, once
        judged (None before); raises ``TooSlow`` when too few fit."""
        if self.measured is not None:
            return self.measured["epochs"]
        if done == 1 or self.first is None:
            self.first = now
            return None
        timed = now - self.first
        if (
            batches < MEASURE_BATCHES + 1
            or done < MEASURE_BATCHES
            or (timed < MEASURE_S and done < batches / 2)
        ):
            return None
        rate = timed / (done - 1)
        train = rate * batches
        epoch = self.per_epoch * train / self.train if self.train > 0 else train
        rest = (batches - done) * rate + max(0.0, epoch - train)  # this epoch's batches and validation
        left = self.deadline - now
        fit = 0 if rest > left else 1 + int(max(0.0, left * PACE_SAFETY - rest) // max(1e-9, epoch))
        epochs = min(self.epochs, max(1, fit))
        self.measured = {
            "epoch_s": round(epoch, 2),
            "epochs": epochs,
            "left_s": round(rest + (epochs - 1) * epoch, 2),
            "planned": self.epochs,
            # the parts predicted for the batches timed, and what they took: a price to learn from
            "predicted": round(self.train * (done - 1) / batches, 3),
            "actual": round(timed, 3),
        }
        if fit < self.least:
            fewest = "its first epoch" if self.least == 1 else f"{self.least} epochs"
            raise TooSlow(
                f"skipped: measured over its first {done} batches, an epoch takes {epoch:.1f} s (priced "
                f"{self.priced:.1f} s before it ran); {fewest} would not end in the {left:.1f} s left for it",
                rest + (self.least - 1) * epoch,
                self.measured,
            )
        return self.measured["epochs"]


def pace_for(trial, prediction, epochs: int, deadline: float | None, smaller: list) -> Pace | None:
    """The check of a trial's price (``prediction``, for ``epochs``) against its first batches: none
    without a deadline, nor for a fixed recipe (it trains as given until the budget stops it). A
    portfolio entry with ``smaller`` resolutions to go to should get ENTRY_EPOCHS, as when queued."""
    if deadline is None or trial.user_attrs.get(FIXED):
        return None
    least = min(ENTRY_EPOCHS, epochs) if smaller else 1
    priced = prediction.per_epoch * prediction.correction
    return Pace(prediction.per_epoch, prediction.parts["train"], priced, epochs, least, deadline)
