"""A trial's price checked against its first batches: a trial slower than priced ends at the epochs
that fit (its schedule with them), or stops at once when not even one does, and teaches the price."""

from __future__ import annotations

import optuna
import pytest

from autotransfer.engine.cost import TRAINS, CostModel
from autotransfer.engine.objective import observe
from autotransfer.engine.pace import Pace, TooSlow
from autotransfer.training.trainer import Schedule


def pace(deadline: float, least: int = 1, epochs: int = 10) -> Pace:
    # priced 2 s an epoch, 1.5 s of it training batches
    return Pace(per_epoch=2.0, train=1.5, priced=2.0, epochs=epochs, least=least, deadline=deadline)


def first_batches(p: Pace, done: int = 4, seconds: float = 0.5, batches: int = 20):
    """``done`` of an epoch's ``batches``, the first untimed at 0 s, then ``seconds`` each; what the
    pace says after each."""
    return [p.batch(seconds * (n - 1), n, batches) for n in range(1, done + 1)]


def test_a_trial_slower_than_its_price_ends_at_the_epochs_that_fit():
    # 0.5 s a batch of 20: 10 s of training an epoch where 1.5 s were priced, so validation is scaled
    # as the training was (0.5 s priced -> 3.3 s), 13.3 s an epoch; judged after the third batch (two
    # timed, a second), 99 s left
    p = pace(deadline=100.0)
    said = first_batches(p)
    assert said[:2] == [None, None]  # too little timed to judge: the first batch pays one-offs
    assert said[2:] == [6, 6]  # 11.8 s to end this epoch, then 5 more within 90% of what is left
    assert p.measured["epoch_s"] == pytest.approx(13.33, abs=0.01)
    assert p.measured["epochs"] < p.measured["planned"] == 10
    assert p.batch(50.0, 10, 20) == 6  # judged once, not again on every batch
    # what the parts predicted for the three batches timed, and what they took: a price to learn from
    assert (p.measured["predicted"], p.measured["actual"]) == (pytest.approx(0.15), 1.0)
    # a trial that fits is left as planned
    roomy = pace(deadline=1000.0)
    assert first_batches(roomy)[2] == 10 and roomy.measured["epochs"] == roomy.measured["planned"]


def test_a_trial_whose_first_epoch_cannot_end_stops_at_once_and_teaches_its_price():
    with pytest.raises(TooSlow, match="measured over its first 3 batches, an epoch takes 13.3 s") as stop:
        first_batches(pace(deadline=10.0))
    assert "its first epoch would not end in the 9.0 s left" in str(stop.value)
    # a portfolio entry that should get two epochs before a larger resolution does: one fits, so it
    # goes to the smaller resolution instead
    with pytest.raises(TooSlow, match="2 epochs would not end"):
        first_batches(pace(deadline=25.0, least=2))
    # recorded as skipped with what its batches took, it corrects the next trial of its strategy
    measured = {"epoch_s": 13.33, "epochs": 1, "planned": 10, "predicted": 0.5, "actual": 1.5}
    skipped = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={
            "cost": {"spent": 1.0, "fixed": 0.0, "epoch": 2.0, "correction": 1.0, "kind": TRAINS},
            "skipped": str(stop.value),
            "paced": measured,
            "strategy": "lora",
        },
    )
    cost = CostModel("cpu-test", {}, lambda key, value: None)
    observe(cost, skipped)
    assert cost.correction_for(TRAINS, strategy="lora") == pytest.approx(3.0)


def test_a_shortened_schedule_still_ends_at_zero():
    schedule = Schedule(total=100, warmup=10)
    assert schedule(9) == 1.0 and schedule(55) == pytest.approx(0.5)
    schedule.total = 40  # the trial shortened to the epochs that fit, in its first epoch
    assert schedule(25) == pytest.approx(0.5) and schedule(40) == pytest.approx(0.0)
