"""The cost model's arithmetic and memory, and the cost-aware sampler on a real Optuna study."""

from __future__ import annotations

import math

import optuna
import pytest

from autotransfer.engine.cost import (
    CACHED,
    CROSS_KIND_MOST,
    FROZEN,
    TRAINS,
    CostModel,
    Prediction,
    Query,
    Rates,
)
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


def test_one_off_work_in_the_first_trials_is_not_charged_to_every_later_trial():
    """Probes on MNIST-5k: the first ones built their backbones and filled caches (1.3 s beyond their
    parts), the later ones paid 0.3 s each; a median of the short trials' residuals once priced every
    later 0.4 s probe at 2 s. The overhead every trial pays is their floor."""
    cost, _ = model_with({})
    first = [(0.2, 0.2 + 1.3 + 0.3), (0.3, 0.3 + 1.3 + 0.3), (0.15, 0.15 + 1.3 + 0.3)]  # one-off work
    later = [(0.1, 0.4), (0.2, 0.5), (3.0, 3.3), (2.0, 2.3), (1.0, 1.3)]  # what every trial pays
    for predicted, actual in first + later:
        cost.observe(predicted, actual, kind=FROZEN)
    assert cost.overhead == pytest.approx(0.3, abs=0.05)
    probe = Prediction(
        fixed=0.0, per_epoch=0.1, correction=cost.correction_for(FROZEN), overhead=cost.overhead
    )
    assert probe.total(1) == pytest.approx(0.4, abs=0.1)  # not 2 s


def test_a_correction_below_one_never_prices_the_measured_one_off_part_below_its_measure():
    """Short trials can teach a correction of 0.2; a first cache measured at 26 s must still be priced
    at 26 s (a trial at a new resolution was once priced at 8 s, ran 24 s and was stopped unfinished)."""
    cheap = Prediction(fixed=26.0, per_epoch=1.0, correction=0.2, overhead=0.1)
    assert cheap.total(5) == pytest.approx(0.1 + 26.0 + 5 * 0.2)
    assert cheap.epochs_within(20.0, 10) == 0  # skipped, not run into the budget
    assert cheap.epochs_within(27.2, 10) == 5  # the epochs themselves keep the learned correction
    dear = Prediction(fixed=2.0, per_epoch=1.0, correction=3.0)
    assert dear.total(1) == pytest.approx(9.0)  # a correction above one scales every part


def test_the_correction_is_learned_per_kind_and_probes_never_price_a_fine_tune_below_its_parts():
    """Probes on cached features run at a fraction of their parts (a search once learned 0.5 from
    them, priced a LoRA epoch at 3.9 s, and the budget stopped it after one epoch of 20 s)."""
    cost, _ = model_with({("b", "64"): FOUR})
    for predicted in (1.0, 2.0, 3.0):
        cost.observe(predicted, 0.4 * predicted, kind=FROZEN)
    probe = cost.predict(query(frozen_prefix=4, cached=True))
    fine_tune = cost.predict(query())
    assert probe.kind == FROZEN and probe.correction == pytest.approx(0.4)
    assert fine_tune.kind == TRAINS and fine_tune.correction == 1.0  # the parts, not the probes' 0.4
    for predicted in (1.0, 2.0, 4.0):
        cost.observe(predicted, 2.5 * predicted, kind=TRAINS)
    assert cost.predict(query()).correction == pytest.approx(2.5)  # its own kind, once seen
    assert cost.predict(query(frozen_prefix=4, cached=True)).correction == pytest.approx(0.4)
    # probes that took three times their parts (their overhead): a fine-tune not yet seen is priced a
    # little dearer than its parts, not three times (on digits every fine-tune was once skipped so, and
    # a skipped trial never teaches its kind's own correction)
    slow, _ = model_with({("b", "64"): FOUR})
    slow.observe(2.0, 6.0, kind=FROZEN)
    assert slow.predict(query()).correction == pytest.approx(CROSS_KIND_MOST)
    assert slow.predict(query(frozen_prefix=4, cached=True)).correction == pytest.approx(3.0)
    slow.observe(2.0, 5.0, kind=TRAINS)
    assert slow.predict(query()).correction == pytest.approx(2.5)  # once seen, its own, however dear


def test_a_strategy_is_corrected_by_its_own_trials_before_its_kinds():
    """Strategies that train weights err apart: on digits a LoRA epoch took 1.3-1.7x its parts and a
    partial fine-tune's 0.4x; one ratio for both priced LoRA at 69 s where it took 120 s and the
    fine-tunes at three times theirs. Each strategy's own trials correct it; one not yet run takes
    its kind's."""
    cost, _ = model_with({("b", "64"): FOUR})
    for predicted in (2.0, 3.0):
        cost.observe(predicted, 1.7 * predicted, kind=TRAINS, strategy="lora")
    for predicted in (2.0, 3.0, 4.0):
        cost.observe(predicted, 0.4 * predicted, kind=CACHED, strategy="partial-finetune")
    cached = dict(frozen_prefix=3, cached=True)
    assert cost.predict(query(strategy="lora")).correction == pytest.approx(1.7)
    assert cost.predict(query(strategy="partial-finetune", **cached)).correction == pytest.approx(0.4)
    kind = cost.predict(query(strategy="bitfit")).correction  # never run: its kind's trials
    assert kind == pytest.approx(1.7) and cost.predict(query()).correction == kind


def test_a_cached_fine_tune_never_prices_one_that_runs_every_layer():
    """On MNIST-5k a partial fine-tune over cached activations took 0.4x its parts; the same strategy
    augmented (nothing cached: the frozen layers run every epoch) took 0.8x, BitFit 1.1x. Priced with
    the cached trials' 0.4, an augmented epoch was predicted at 9.5 s with 13.6 s left, ran past
    the budget before its first epoch ended, and BitFit took 7.4 s where 2.9 s was predicted."""
    cost, _ = model_with({("b", "64"): FOUR})
    for predicted in (20.0, 30.0, 40.0):
        cost.observe(predicted, 0.4 * predicted, kind=CACHED, strategy="partial-finetune")
    top = dict(strategy="partial-finetune", frozen_prefix=3)  # most of a forward pass frozen
    cached = cost.predict(query(**top, cached=True))
    augmented = cost.predict(query(**top, cached=False))
    assert cached.kind == CACHED and cached.correction == pytest.approx(0.4)
    assert augmented.kind == TRAINS and augmented.correction == 1.0  # the parts, not 0.4
    assert cost.predict(query(strategy="bitfit")).correction == 1.0
    # LoRA leaves the stem frozen and cached; it still runs most of the network every epoch
    stem = cost.predict(query(strategy="lora", frozen_prefix=1, cached=True))
    assert stem.kind == TRAINS and stem.correction == 1.0
    cost.observe(6.8, 7.4, kind=TRAINS, strategy="bitfit")  # BitFit's first trial teaches its kind
    assert cost.predict(query(**top)).correction == pytest.approx(7.4 / 6.8)
    cost.observe(11.3, 9.4, kind=TRAINS, strategy="partial-finetune")  # then its own, uncached
    assert cost.predict(query(**top)).correction == pytest.approx(9.4 / 11.3)
    assert cost.predict(query(**top, cached=True)).correction == pytest.approx(0.4)


def test_a_sequence_length_not_measured_yet_is_priced_as_its_length_grows_not_as_pixels():
    """A text task's size is a sequence length: a pass grows with it, not with its square (from
    MiniLM's 32- and 64-token rates, the square priced 256 tokens at 3.6 times their measure)."""
    at32 = Rates(forward=[0.004], backward=2.0, params=[10], head_params=5)
    at64 = Rates(forward=[0.010], backward=2.0, params=[10], head_params=5)
    text = CostModel("cpu", {}, lambda key, value: None, size_power=1.0)
    image = CostModel("cpu", {}, lambda key, value: None)
    for cost in (text, image):
        cost.remember_rates("b", 32, at32)
        cost.remember_rates("b", 64, at64)
    assert sum(text.rates_for("b", 256).forward) == pytest.approx(0.010 * 4)  # linear from 64
    assert sum(image.rates_for("b", 256).forward) > 3 * sum(text.rates_for("b", 256).forward)


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


def test_a_backbone_measured_at_one_size_grows_as_one_measured_at_two():
    """On a CPU a small input's time is mostly per-layer overhead: a backbone measured only at 32 px
    is not priced proportional to the pixels at 224 px (7x slower than it runs there), but grows as
    a backbone measured at two sizes grows; with none, proportionally."""
    cost, _ = model_with({("b", "32"): Rates([0.002], 2.0, [10]), ("b", "64"): Rates([0.004], 2.0, [10])})
    alone, _ = model_with({("c", "32"): Rates([0.003], 2.0, [10])})
    assert alone.rates_for("c", 128).forward[0] == pytest.approx(0.003 * 16)
    cost.remember_rates("c", "32", Rates([0.003], 2.0, [10]))
    b = 0.002 / (64**2 - 32**2)
    growth = (0.002 + b * (128**2 - 32**2)) / 0.002  # 6x, where the pixels grow 16x
    assert cost.rates_for("c", 128).forward[0] == pytest.approx(0.003 * growth)
    assert cost.rates_for("c", 32).forward[0] == 0.003


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


def test_a_trial_the_budget_stopped_teaches_up_to_its_last_whole_epoch():
    from autotransfer.engine.objective import observe

    parts = {"spent": 1.0, "fixed": 0.0, "epoch": 4.0, "correction": 1.0, "overhead": 0.0}
    stopped = optuna.trial.create_trial(
        value=0.9,
        user_attrs={
            "cost": parts | {"kind": TRAINS, "cached": False},
            "epochs_run": 1,
            "stopped": "budget",
            "duration_s": 30.0,  # one epoch and most of the next: not what one epoch costs
            "epochs_end_s": 13.0,
            "strategy": "lora",
            "frozen_prefix": 1,
        },
    )
    cost, _ = model_with({})
    observe(cost, stopped)
    assert cost.pairs[TRAINS] == [(4.0, 12.0)] and cost.correction_for(TRAINS) == pytest.approx(3.0)
    assert cost.frozen_by_strategy == {"lora": [1]}
    # recorded before trials over cached activations were a kind of their own: one that froze most of
    # a forward pass (at the rates measured for its backbone and size) and did not augment cached it
    cost, _ = model_with({("b", "64"): FOUR})
    size = {"image_size": optuna.distributions.CategoricalDistribution([32, 64])}
    for prefix, kind in ((3, CACHED), (1, TRAINS)):
        attrs = {
            **stopped.user_attrs,
            "cost": parts | {"kind": TRAINS},
            "frozen_prefix": prefix,
            "backbone": "b",
        }
        old = optuna.trial.create_trial(
            value=0.9, params={"image_size": 64}, distributions=size, user_attrs=attrs
        )
        observe(cost, old)
        assert cost.pairs[kind] == [(4.0, 12.0)]


def test_the_first_look_beyond_a_probe_is_cheap_and_long_enough_to_judge(digits, tmp_path):
    """With a budget, the cheapest other strategy gets one look of as many epochs as fit 40% of it:
    the smallest resolution, a batch that still takes 32 steps an epoch, no augmentation (frozen
    layers stay cached), the top two layer groups trained, a brisk learning rate; the others a
    two-epoch look while they fit a quarter of the budget."""
    from conftest import problem_for

    from autotransfer.engine import pricing
    from autotransfer.engine.first_trials import EXPLORE_FIRST_SHARE, exploration

    problem = problem_for(digits, tmp_path, backbones=["tf_efficientnet_lite0"])
    cost, _ = model_with({})
    pricing.prime(problem, cost)
    groups = len(cost.rates_for("tf_efficientnet_lite0", problem.input_sizes[0]).forward)
    strategies = [s for s in problem.strategies if s.name in ("partial-finetune", "full-finetune")]
    estimate = lambda params: pricing.estimate(problem, cost, params)  # noqa: E731
    unbounded = exploration(problem, strategies, "tf_efficientnet_lite0", estimate, 1e9, groups)[0]
    one, two = (estimate({**unbounded, "epochs": n}) for n in (1, 2))
    budget = ((one - (two - one)) + 4.5 * (two - one)) / EXPLORE_FIRST_SHARE  # room for 4 epochs and a half
    looks = exploration(problem, strategies, "tf_efficientnet_lite0", estimate, budget, groups)
    first = looks[0]
    assert first["strategy"] == "partial-finetune"  # the frozen prefix makes it the cheapest
    assert first["partial-finetune.freeze_depth"] == groups - 2
    assert first["image_size"] == min(problem.input_sizes) and first["augment"] == "off"
    steps = [b for b in problem.batch_size_choices() if len(problem.split["train"]) / b >= 32]
    assert first["batch_size"] == max(steps or [min(problem.batch_size_choices())])
    assert first["epochs"] == 4 and estimate(first) <= EXPLORE_FIRST_SHARE * budget
    low, high = problem.strategy_by_name["partial-finetune"].lr_range
    assert low * 10 < first["partial-finetune.lr"] < high


def test_a_trial_is_priced_at_its_own_freeze_depth_before_it_is_built(digits, tmp_path):
    """Before building, a partial fine-tune is judged (skipped or not) at the freeze depth it
    sampled, not at the strategy's typical one (with no history: none frozen, a full fine-tune's
    price); building then uses those same knobs."""
    from conftest import problem_for

    from autotransfer.engine import pricing
    from autotransfer.engine.trial import build_trial, choose, with_knobs

    problem = problem_for(digits, tmp_path, backbones=["tf_efficientnet_lite0"])
    cost, _ = model_with({})
    pricing.prime(problem, cost)  # times the first backbone: its layer groups are known from then on
    groups = problem.layer_groups["tf_efficientnet_lite0"]
    size = problem.input_sizes[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fixed = {"strategy": "partial-finetune", "image_size": size, "partial-finetune.freeze_depth": groups - 1}
    study.enqueue_trial(fixed)
    trial = study.ask()
    choices = with_knobs(problem, trial, choose(problem, trial))
    assert choices.knobs["freeze_depth"] == groups - 1
    assert trial.params["partial-finetune.freeze_depth"] == groups - 1  # before anything is built
    assert pricing.query_from_params(problem, cost, trial.params).frozen_prefix == groups - 1
    own = pricing.estimate(problem, cost, {**trial.params, "epochs": 1})
    typical = {k: v for k, v in trial.params.items() if k != "partial-finetune.freeze_depth"}
    assert own < pricing.estimate(problem, cost, {**typical, "epochs": 1})
    trainer, _ = build_trial(problem, trial, choices=choices)
    assert trainer.plan.frozen_prefix == groups - 1


def test_a_strategy_called_for_gets_a_fair_first_look(digits, tmp_path):
    """A strategy the user named (or the data calls for) starts with a look that can judge it: a brisk
    learning rate and --max-epochs, or with a budget as many epochs as fit its part of the first
    look's share, not the cheapest random draw."""
    from conftest import problem_for

    from autotransfer.engine import pricing
    from autotransfer.engine.first_trials import EXPLORE_FIRST_SHARE, EXPLORE_LR, called_look

    lite0 = "tf_efficientnet_lite0"
    problem = problem_for(digits, tmp_path, backbones=[lite0], max_epochs=6)
    cost, _ = model_with({})
    pricing.prime(problem, cost)
    strategy = problem.strategy_by_name["full-finetune"]
    size = problem.input_sizes[0]
    look = called_look(problem, strategy, lite0, size, None, None, 2)
    low, high = strategy.lr_range
    assert look["epochs"] == 6 and look["full-finetune.lr"] == pytest.approx(low * (high / low) ** EXPLORE_LR)
    estimate = lambda params: pricing.estimate(problem, cost, params)  # noqa: E731
    one, two = (estimate({**look, "epochs": n}) for n in (1, 2))
    budget = 2 * ((one - (two - one)) + 3.5 * (two - one)) / EXPLORE_FIRST_SHARE  # two looks, 3.5 epochs each
    assert called_look(problem, strategy, lite0, size, estimate, budget, 2)["epochs"] == 3


def test_models_run_channels_last_and_their_weights_save_and_load_unchanged(tmp_path):
    """Trials, measurements and predict place models channels-last (the layout a CPU's convolutions
    run fastest in); outputs are those of the usual layout and exported weights load back exactly."""
    import torch

    from autotransfer.backbone import TransferModel, place
    from autotransfer.export import load_weights, save_weights
    from autotransfer.plugins import default_host

    spec = default_host().backbone("tf_efficientnet_lite0")
    torch.manual_seed(0)
    model = TransferModel(spec.build(pretrained=False), 3).eval()
    usual = TransferModel(spec.build(pretrained=False), 3).eval()
    usual.load_state_dict(model.state_dict())
    place(model, torch.device("cpu"))
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), usual(x), atol=1e-4)
    save_weights(model, tmp_path / "model.safetensors")
    loaded = TransferModel(spec.build(pretrained=False), 3).eval()
    load_weights(loaded, tmp_path / "model.safetensors")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_first_probes_see_the_data_at_the_largest_size_the_budget_allows(digits, tmp_path):
    """The first probes run at the largest searched size at which every backbone's probe together
    takes at most a tenth of the budget; where none does and only one backbone's probe fits at all,
    that lone probe gets the largest size that fits half the time trials have left (on MNIST-5k in
    30 s a lone 64 px probe tests 0.92 where the smallest size tests 0.78), not the smallest."""
    from conftest import problem_for

    from autotransfer.engine import pricing
    from autotransfer.engine.budget import Clock
    from autotransfer.engine.pacing import FIRST_PROBE_SHARE, Pacing

    problem = problem_for(digits, tmp_path)
    sizes, backbones = problem.input_sizes, problem.backbones
    assert len(sizes) >= 3 and len(backbones) >= 2
    cost, _ = model_with({})
    for k, backbone in enumerate(backbones, start=1):  # each backbone dearer, each size dearer
        cost.remember_build(backbone.name, 0.5)
        for size in sizes:
            rates = Rates(forward=[2e-7 * k * size**2] * 4, backward=2.0, params=[1000] * 4, head_params=50)
            cost.remember_rates(backbone.name, pricing.size_value(problem, backbone, size), rates)
    for size in sizes:
        cost.remember_decode(size, 1e-5)
    pace = Pacing(problem, None, cost, Clock.start(None))
    probes = {size: pace.probe_costs(size) for size in sizes}
    assert all(sum(probes[a]) < sum(probes[b]) for a, b in zip(sizes, sizes[1:]))

    # room: every backbone's probe at the second size fits a tenth of the budget, at the third not
    pace.clock = Clock.start(10 * sum(probes[sizes[1]]) * 1.02)
    assert sum(probes[sizes[2]]) > 0.1 * pace.clock.budget
    assert pace.warm_size() == sizes[1] and pace.probes_that_fit(sizes[1]) == len(backbones)

    # tight: only the first backbone's probe fits, so it alone looks, at the largest size that fits
    # half of what trials have left
    first = probes[sizes[0]]
    pace.clock = Clock.start((first[0] + 0.5 * first[1]) / 0.2)
    assert pace.probes_that_fit(sizes[0]) == 1
    alone = max(s for s in sizes if probes[s][0] <= FIRST_PROBE_SHARE * pace.clock.trials_left())
    assert alone > sizes[0] and pace.warm_size() == alone


def test_one_stall_in_the_decode_measure_does_not_price_every_trial_at_that_size(digits, tmp_path):
    """Decoding is timed on a few examples; a pass that stalled (a quarter of a second once made 32 px
    digits cost 4.1 ms an example instead of 0.3 ms, and every trial at that size was skipped) is
    checked against a second look, and the lower rate kept."""
    from conftest import problem_for

    from autotransfer.engine import pricing

    problem = problem_for(digits, tmp_path)
    backbone, size = problem.backbones[0], problem.input_sizes[0]
    examples = problem.split["train"][: pricing.PROBE_EXAMPLES]
    preprocessing = problem.preprocessing(backbone, size)
    stalled = 0.25 + 0.0003 * len(examples)
    stalled_rate = stalled / len(examples)
    assert 0 < pricing.decode_rate(problem, examples, preprocessing, stalled) < 0.5 * stalled_rate
    cost, _ = model_with({})
    pricing.measure(problem, cost, backbone.name, [size])  # what the search's first seconds run
    assert 0 < cost.decode[str(pricing.size_value(problem, backbone, size))] < 0.5 * stalled_rate
