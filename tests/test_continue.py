"""Where the budget pays: the best trial trains on while it still improves and the budget allows (a
trial that is not the best, or that stopped improving, does not; the best epoch over all counts and
its weights are kept), and the best configuration is tried again at the next resolution up."""

from __future__ import annotations

import time

import optuna
import pandas as pd
import pytest
import torch
from conftest import queued_search, write_collapsing_plugin

from autotransfer.engine.budget import grace
from autotransfer.engine.extend import not_worse
from autotransfer.training.trainer import BestEpoch

PROBE = {
    "backbone": "tf_efficientnet_lite0",
    "strategy": "linear-probe",
    "image_size": 32,
    "batch_size": 32,
    "weight_decay": 1e-4,
}


def probe_search(digits, tmp_path, first_trials: list[dict], **options):
    """A probes-only search on digits at 32 px, ``first_trials`` queued before anything else."""
    queued = [{**PROBE, **params} for params in first_trials]
    return queued_search(
        digits, tmp_path, queued, **{"strategies": ["linear-probe"], "image_size": 32, **options}
    )


def test_the_best_trial_trains_on_while_it_improves_and_others_do_not(digits, tmp_path):
    budget = 60
    started = time.time()
    # one epoch of a brisk probe (the best, still rising), then one of a probe too slow to catch it
    config, result = probe_search(
        digits,
        tmp_path,
        [{"linear-probe.lr": 0.03, "epochs": 1}, {"linear-probe.lr": 1e-3, "epochs": 1}],
        budget=budget,
        n_trials=2,
        max_epochs=6,
    )
    assert time.time() - started <= budget + grace(budget)
    first, second = sorted(result.study.trials, key=lambda t: t.number)[:2]
    assert first.state == second.state == optuna.trial.TrialState.COMPLETE
    # the first was the best after its one epoch: it trained on, epochs 2.. reported and validated
    assert first.user_attrs["continued"]["from"] == 1
    assert first.user_attrs["epochs_run"] == first.user_attrs["continued"]["to"] > 1
    assert sorted(first.intermediate_values) == list(range(1, first.user_attrs["epochs_run"] + 1))
    assert first.user_attrs["epochs_run"] <= config.max_epochs
    # its score is its best epoch's over all, and that epoch's weights are the ones kept
    assert first.value == max(first.intermediate_values.values())
    assert first.intermediate_values[first.user_attrs["best_epoch"]] == first.value
    assert first.value > first.intermediate_values[1]
    # the second is far behind the best: one epoch, as sampled
    assert second.value < first.value and "continued" not in second.user_attrs
    assert second.user_attrs["epochs_run"] == 1
    assert result.best["trial"] == first.number


@pytest.mark.parametrize(
    "options", [{}, {"budget": 60, "sampler": "random"}], ids=["no budget", "random search"]
)
def test_no_trial_trains_on_without_a_budget_or_in_random_search(digits, tmp_path, options):
    _, result = probe_search(
        digits, tmp_path, [{"linear-probe.lr": 0.03, "epochs": 1}], n_trials=1, **options
    )
    (trial,) = result.study.trials
    assert trial.user_attrs["epochs_run"] == 1 and "continued" not in trial.user_attrs


def test_training_on_that_finds_nothing_better_gives_back_the_best_epochs_weights():
    model = torch.nn.Linear(4, 2)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    kept = BestEpoch()
    kept.offer(model, 1, 0.9, last=True)  # fit's last epoch was its best: its weights are the model's
    kept.keep(model)  # training on starts from them
    with torch.no_grad():
        model.weight.add_(1.0)
    kept.offer(model, 2, 0.8, last=True)  # the continuation's epoch is worse
    kept.restore(model, epochs_run=2)
    assert kept.epoch == 1 and kept.metric == 0.9
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())


def test_a_dip_within_the_validation_noise_still_trains_on_and_a_turned_curve_does_not():
    # digits' 269 validation examples: the best epoch had 264 right (0.981)
    assert not_worse(264 / 269, 264 / 269, 269)  # the last epoch was the best
    assert not_worse(262 / 269, 264 / 269, 269)  # two examples fewer: within one standard error
    assert not not_worse(260 / 269, 264 / 269, 269)  # four fewer: the curve has turned
    # a perfect best still allows one example's worth, not two
    assert not_worse(268 / 269, 1.0, 269) and not not_worse(267 / 269, 1.0, 269)
    # more validation examples, a finer noise: on 750 at 0.96 a tenth of a point is within it, a point not
    assert not_worse(0.959, 0.96, 750) and not not_worse(0.95, 0.96, 750)


def test_the_best_configuration_is_tried_again_at_the_next_resolution_up(digits, tmp_path):
    budget = 60
    started = time.time()
    _, result = probe_search(
        digits,
        tmp_path,
        [{"linear-probe.lr": 0.03, "epochs": 2}],
        budget=budget,
        n_trials=2,
        image_size=None,  # searched: 32, 64, 128, 224 px
    )
    assert time.time() - started <= budget + grace(budget)
    first, second = sorted(result.study.trials, key=lambda t: t.number)[:2]
    assert first.params["image_size"] == 32 and first.state == optuna.trial.TrialState.COMPLETE
    # the best after trial 0 is trial 0: the same probe is queued at 64 px, and runs next
    assert second.user_attrs["promoted"] == first.number
    assert second.params["image_size"] == 64
    assert second.params["linear-probe.lr"] == first.params["linear-probe.lr"]
    assert 1 <= second.params["epochs"] <= max(first.params["epochs"], first.user_attrs["best_epoch"])
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert board.set_index("number").loc[second.number, "origin"] == f"next size up from #{first.number}"


def test_a_promotion_whose_trial_was_overtaken_meanwhile_is_skipped(digits, tmp_path):
    _, result = probe_search(
        digits,
        tmp_path,
        # a slow probe first (the best while alone), then a brisk one that overtakes it
        [{"linear-probe.lr": 1e-3, "epochs": 1}, {"linear-probe.lr": 0.03, "epochs": 2}],
        budget=60,
        n_trials=3,
        max_epochs=2,
        image_size=None,
    )
    trials = {t.number: t for t in result.study.trials}
    assert trials[1].value > trials[0].value
    # trial 0's promotion was queued behind trial 1, which then overtook it: skipped, not run
    (stale,) = [t for t in trials.values() if t.user_attrs.get("promoted") == 0]
    assert stale.user_attrs["skipped"] == "skipped: trial 0, promoted here, is no longer the best"
    assert "epochs_run" not in stale.user_attrs
    # and what was skipped is named (the progress line and the leaderboard), though it never ran
    assert (stale.user_attrs["backbone"], stale.user_attrs["strategy"]) == (
        trials[0].params["backbone"],
        trials[0].params["strategy"],
    )
    # trial 1's runs, at the next size up
    (fresh,) = [t for t in trials.values() if t.user_attrs.get("promoted") == 1]
    assert fresh.params["image_size"] == 64 and fresh.state == optuna.trial.TrialState.COMPLETE
    assert "skipped" not in fresh.user_attrs  # and a promotion is not pruned: it is a planned bet


@pytest.mark.parametrize("pruning, alone", [(True, False), (False, False), (True, True)])
def test_a_trial_that_learns_nothing_stops_even_when_it_is_never_pruned(digits, tmp_path, pruning, alone):
    plugin = write_collapsing_plugin(tmp_path / "collapsing_plugin.py")
    # queued as portfolio entries, which Hyperband never stops early: six epochs each; a probe that
    # learns first (unless alone), so the study knows the budget has a better use than a trial at chance
    entries = [("collapsing-probe", 0.05)] if alone else [("linear-probe", 0.03), ("collapsing-probe", 0.05)]
    queued = [
        ({**PROBE, "strategy": strategy, f"{strategy}.lr": lr, "epochs": 6}, {"portfolio": "digits"})
        for strategy, lr in entries
    ]
    _, result = queued_search(
        digits,
        tmp_path,
        queued,
        plugins=[str(plugin)],
        strategies=["collapsing-probe", "linear-probe"],
        image_size=32,
        budget=60,
        n_trials=len(queued),
        max_epochs=6,
        pruning=pruning,
    )
    trials = sorted(result.study.trials, key=lambda t: t.number)
    stuck = trials[len(queued) - 1]
    # the collapsing probe scores what predicting one class scores, epoch after epoch
    assert max(stuck.intermediate_values.values()) <= 0.2
    if pruning and not alone:
        # two such epochs and it stops, with the reason on the leaderboard
        assert stuck.state == optuna.trial.TrialState.PRUNED
        assert stuck.user_attrs["epochs_run"] == 2
        assert stuck.user_attrs["not_learning"].startswith("not learning: 2 epochs")
        board = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("number")
        assert board.loc[stuck.number, "fail_reason"] == stuck.user_attrs["not_learning"]
    else:
        # --no-pruning runs every trial as drawn; and while nothing has learned, the user gets the best
        # of what ran
        assert stuck.state == optuna.trial.TrialState.COMPLETE
        assert stuck.user_attrs["epochs_run"] == 6 and "not_learning" not in stuck.user_attrs
    if not alone:  # the probe that learned ran its six epochs either way
        probe = trials[0]
        assert probe.state == optuna.trial.TrialState.COMPLETE and probe.user_attrs["epochs_run"] >= 6
        assert probe.value > 0.5
