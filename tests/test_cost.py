"""The cost model's arithmetic and memory, and the cost-aware sampler on a real Optuna study."""

from __future__ import annotations

import math

import optuna
import pytest

from autotransfer.engine.cost import CostModel, Prediction, Query, Rates
from autotransfer.engine.sampler import CostAwareTPESampler, make_sampler, supported


def model_with(rates: dict, saved=None) -> tuple[CostModel, dict]:
    store = dict(saved or {})
    cost = CostModel("cpu-2threads", store, store.__setitem__)
    for (backbone, size), r in rates.items():
        cost.remember_rates(backbone, size, r)
    return cost, store


def query(**overrides) -> Query:
    base = dict(
        backbone="b",
        size=64,
        epochs=1,
        frozen_prefix=0,
        cached=False,
        n_train=100,
        n_eval=20,
        batch_size=10,
        inputs_ready=True,
        built=True,
    )
    return Query(**(base | overrides))


FOUR = Rates(forward=[0.001, 0.002, 0.003, 0.004], backward=2.0, params=[10, 20, 30, 40], head_params=5)


def test_a_prediction_adds_up_its_parts():
    cost, _ = model_with({("b", "64"): FOUR})
    cost.step_per_param = 0.0
    full = cost.predict(query())
    per_example = 0.010 * 3  # forward plus a backward twice as long, every group trains
    assert full.per_epoch == pytest.approx(100 * per_example + 20 * 0.010 + 10 * 1.5e-3)
    # a frozen prefix that is cached costs once (its forward over every cached input), not every epoch
    frozen = cost.predict(query(frozen_prefix=2, cached=True, n_cached_inputs=120))
    assert frozen.fixed == pytest.approx(0.003 * 120)
    assert frozen.per_epoch == pytest.approx(100 * 0.007 * 3 + 20 * 0.007 + 10 * 1.5e-3)
    # training few of the weights (BitFit, LoRA) skips most of the weight-gradient half of backward
    few = cost.predict(query(trainable_params=1))
    assert few.per_epoch < full.per_epoch and few.per_epoch > 100 * 0.010 * 2


def test_epochs_within_and_the_learned_correction():
    prediction = Prediction(fixed=2.0, per_epoch=1.0, correction=2.0, overhead=1.0)
    assert prediction.total(3) == 1.0 + 2.0 * 5.0
    assert prediction.epochs_within(11.0, 10) == 3 and prediction.epochs_within(4.9, 10) == 0
    assert prediction.epochs_within(float("inf"), 7) == 7
    cost, _ = model_with({})
    trials = [(0.1, 0.7), (1.0, 2.5), (2.0, 4.5), (10.0, 20.5), (0.2, 0.9), (5.0, 10.5)]  # 0.5 s + twice
    for predicted, actual in trials:
        cost.observe(predicted, actual)
    assert cost.correction == pytest.approx(2.0, rel=0.15)  # what long trials take per predicted second
    assert 0.2 < cost.overhead < 0.8  # and what short ones cost beyond their parts
    for predicted, actual in trials:
        learned = Prediction(
            fixed=predicted, per_epoch=0.0, correction=cost.correction, overhead=cost.overhead
        )
        assert learned.total(1) == pytest.approx(actual, rel=0.25)


def test_measurements_are_remembered_in_the_study_and_read_back():
    cost, store = model_with({("org/model:cls", "128"): FOUR})
    cost.remember_build("org/model:cls", 1.5)
    cost.remember_decode(128, 0.002)
    assert all(key.startswith("cost|cpu-2threads|") for key in store)
    again = CostModel("cpu-2threads", store, store.__setitem__)
    assert again.rates[("org/model:cls", "128")] == FOUR
    assert again.build["org/model:cls"] == 1.5 and again.decode["128"] == 0.002
    # another device's measurements are not this one's
    assert not CostModel("cuda-H100", store, store.__setitem__).rates


def test_unmeasured_sizes_grow_with_the_pixels():
    small = Rates([0.001], 2.0, [10])
    large = Rates([0.004], 2.0, [10])
    cost, _ = model_with({("b", "32"): small, ("b", "64"): large})
    # a + b s^2 through the two sizes measured: 0.001 + (0.003 / (64^2 - 32^2)) (128^2 - 32^2)
    assert cost.rates_for("b", 128).forward[0] == pytest.approx(
        0.001 + 0.003 * (128**2 - 32**2) / (64**2 - 32**2)
    )
    # another backbone, not measured, is guessed from the one that was at that size
    assert cost.rates_for("other", 64) == large
    assert cost.rates_for("other", 96) is None


def test_the_cost_aware_hooks_exist_in_this_optuna():
    assert supported()
    assert isinstance(make_sampler("tpe", 0, cost=lambda params: 1.0), CostAwareTPESampler)
    assert not isinstance(make_sampler("tpe", 0, cost=None), CostAwareTPESampler)


def mean_epochs(sampler) -> float:
    """A study where epochs cost (their square) and hardly help: how many does the sampler choose?"""
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        epochs = trial.suggest_int("epochs", 1, 10)
        x = trial.suggest_float("x", -3, 3)
        return -(x**2) + 0.01 * math.log(epochs)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=40)
    return sum(t.params["epochs"] for t in study.trials[10:]) / 30


def test_the_sampler_prefers_improvement_per_second():
    def cost(params):
        return params["epochs"] ** 2

    for seed in (0, 1):
        options = dict(seed=seed, multivariate=True, n_startup_trials=5)
        plain = mean_epochs(optuna.samplers.TPESampler(**options))
        aware = mean_epochs(CostAwareTPESampler(cost=cost, **options))
        assert aware < plain - 1.0, (seed, aware, plain)
        cooled = mean_epochs(CostAwareTPESampler(cost=cost, cooling=lambda: 0.0, **options))
        assert cooled > aware + 1.0, (seed, cooled, aware)  # cost cooled off: TPE's choice alone again
