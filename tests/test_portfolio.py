"""The portfolio: built from finished studies, a new search starts from the entries nearest its data."""

from __future__ import annotations

import json

import optuna
import pytest
from conftest import FAST, cli, problem_for, read_json

from autotransfer.engine import portfolio


@pytest.fixture
def priced(digits, tmp_path):
    """A digits problem searched at every resolution on Lite0, and its cost model's price of a
    parameter set (the device primed, as a search primes it)."""
    from autotransfer.engine import pricing
    from autotransfer.engine.cost import CostModel

    problem = problem_for(digits, tmp_path, max_epochs=3, backbones=["tf_efficientnet_lite0"])
    cost = CostModel("cpu", {}, lambda key, value: None)
    pricing.prime(problem, cost)
    yield problem, lambda params: pricing.estimate(problem, cost, params)
    problem.close()


@pytest.fixture(scope="module")
def built(digits_search, tmp_path_factory):
    """A portfolio built, as a user builds one, from a real finished search."""
    path = tmp_path_factory.mktemp("portfolio") / "p.json"
    result = cli("portfolio", "build", digits_search, "-o", path)
    assert f"{path}: " in result.output and "configurations from 1 datasets" in result.output
    return path


def test_a_built_portfolio_keeps_each_datasets_best_distinct_configurations(digits_search, built):
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{digits_search / 'study.db'}")
    entries = portfolio.load(built)
    complete = [
        t
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not t.user_attrs.get("reference")
    ]
    best = max(complete, key=lambda t: t.value)
    assert entries[0].params == best.params and entries[0].value == pytest.approx(best.value, abs=1e-4)
    assert [e.rank for e in entries] == list(range(len(entries))) and len(entries) <= portfolio.TOP
    assert entries == sorted(entries, key=lambda e: -e.value)
    signatures = [(e.params["backbone"], e.params["strategy"]) for e in entries]
    assert len(set(signatures)) == len(signatures)  # at 64 px pinned, distinct backbone and strategy
    meta = entries[0].meta
    split = read_json(digits_search / "split.json")
    assert meta.classes == 10 and meta.per_class == pytest.approx(len(split["train"]) / 10)
    assert meta.size == 64  # --image-size pinned it


def test_a_built_entry_keeps_the_budget_its_search_had(digits, tmp_path):
    out, path = tmp_path / "out", tmp_path / "p.json"
    probes = ["--strategies", "linear-probe", "--no-reference", "--image-size", "32"]
    probes += ["--backbones", "tf_efficientnet_lite0", "--quiet"]
    cli("search", digits, "-o", out, "--budget", "3m", "--n-trials", "2", *probes)
    result = cli("portfolio", "build", out, "-o", path)
    assert {e.budget for e in portfolio.load(path)} == {180.0} and "(a 180s search)" in result.output


def test_a_search_starts_from_the_entries_learned_at_the_budget_nearest_its_own(built):
    """What did best in three minutes is not what does best in ten: each entry keeps its search's
    budget, and of a dataset searched at several budgets a search takes those of the nearest."""
    from dataclasses import replace

    learned = portfolio.load(built)
    assert {e.budget for e in learned} == {None}  # the search it came from ended by --n-trials
    at = {
        b: [replace(e, budget=b, value=e.value - i / 100) for i, e in enumerate(learned)]
        for b in (180.0, 300.0)
    }
    entries = learned + at[180.0] + at[300.0]
    other = replace(learned[0].meta, fingerprint="other data")
    for budget, expected in [(30.0, 180.0), (120.0, 180.0), (240.0, 300.0), (600.0, 300.0), (None, None)]:
        chosen = portfolio.nearest(entries, other, budget)
        assert {e.budget for e in chosen} == {expected} and len(chosen) == len(learned), budget
    # a dataset searched at one budget only gives its entries to every search
    assert {e.budget for e in portfolio.nearest(at[300.0], other, 30.0)} == {300.0}
    assert {e.budget for e in portfolio.nearest(learned, other, 600.0)} == {None}
    # the bundled portfolio has digits at three budgets: a search of MNIST-5k-like data gets the
    # 100-second entries below 134 s, the three-minute ones to 232 s, the five-minute ones beyond
    bundled = portfolio.load(portfolio.BUNDLED)
    mnist = next(e.meta for e in bundled if e.source == "mnist")
    for budget, expected in [(30.0, 100.0), (120.0, 100.0), (150.0, 180.0), (240.0, 300.0), (600.0, 300.0)]:
        chosen = portfolio.nearest(bundled, mnist, budget)
        assert {e.budget for e in chosen if e.source == "digits"} == {expected}, budget


def test_a_search_starts_from_the_nearest_entries_of_other_data(built, tmp_path):
    """Other data of the same task: the portfolio's best entry runs right after the probe, its knobs
    as the portfolio has them, not pruned; --no-portfolio leaves it out."""
    from autotransfer.features.demo import export_digits

    other = export_digits(str(tmp_path / "few"), per_class=20)  # 14 training images a class: not tiny
    entries = portfolio.load(built)
    out = tmp_path / "out"
    args = ["--n-trials", "4", "--max-epochs", "2", "--no-reference", *FAST]
    cli("search", other, "-o", out, "--portfolio", built, *args)
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    started = [t for t in trials if "portfolio" in t.user_attrs]
    assert len(started) == 1 and started[0].number == 1  # after the probe
    top = entries[0].params
    for key, value in top.items():
        if key != "epochs":
            assert started[0].params[key] == value, key
    assert started[0].params["epochs"] == min(2, top["epochs"])
    board = (out / "leaderboard.csv").read_text().splitlines()
    assert sum("portfolio (digits)" in line for line in board) == 1  # the origin column names it

    cli("search", other, "-o", tmp_path / "none", "--portfolio", built, "--no-portfolio", *args)
    study = optuna.load_study(
        study_name="autotransfer", storage=f"sqlite:///{tmp_path / 'none' / 'study.db'}"
    )
    assert not any("portfolio" in t.user_attrs for t in study.get_trials())


def test_entries_from_the_data_being_searched_are_left_out(digits, built, tmp_path):
    """The portfolio never hands a search its own data's results (a benchmark measures what other
    data taught)."""
    problem = problem_for(digits, tmp_path, image_size=64, backbones=["tf_efficientnet_lite0"])
    try:
        assert portfolio.nearest(portfolio.load(built), portfolio.problem_meta(problem)) == []
    finally:
        problem.close()


def test_an_entry_is_mapped_onto_this_searchs_choices(digits, tmp_path):
    """The nearest searched resolution and batch size, no more epochs than --max-epochs, knobs outside
    this space left to the sampler, a backbone or strategy not searched here: no trial."""
    problem = problem_for(digits, tmp_path, max_epochs=3, backbones=["tf_efficientnet_lite0"])
    try:
        meta = portfolio.Meta("image-classification", 10, 100.0, 32, "elsewhere")
        params = {
            "backbone": "tf_efficientnet_lite0",
            "strategy": "partial-finetune",
            "partial-finetune.lr": 1e-3,
            "partial-finetune.freeze_depth": 4,
            "epochs": 8,
            "batch_size": 100,
            "weight_decay": 1e-4,
            "image_size": 70,
            "augment": "no-such-augmentation",
            "lora.r": 8,
        }
        adapted = portfolio.adapt(problem, portfolio.Entry("x", meta, params, 0.9, 0), groups=7)
        sizes = problem.input_sizes
        assert adapted["image_size"] == min(sizes, key=lambda s: abs(s - 70) / s)
        assert adapted["image_size"] in sizes and adapted["epochs"] == 3
        assert adapted["batch_size"] in problem.batch_size_choices()
        assert "augment" not in adapted and "lora.r" not in adapted
        assert adapted["partial-finetune.freeze_depth"] == 4 and adapted["partial-finetune.lr"] == 1e-3
        elsewhere = portfolio.Entry("x", meta, {**params, "backbone": "no-such-net"}, 0.9, 0)
        assert portfolio.adapt(problem, elsewhere, groups=7) is None
    finally:
        problem.close()


def test_with_a_budget_the_portfolio_takes_at_most_its_room(digits, built, tmp_path):
    """Priced before they run: an entry gets the epochs that fit what is left of the portfolio's room
    (PORTFOLIO_SHARE of what the first trials leave), and none when not even one epoch fits."""
    from autotransfer.engine import pricing
    from autotransfer.engine.cost import CostModel

    problem = problem_for(digits, tmp_path, max_epochs=3, image_size=64, backbones=["tf_efficientnet_lite0"])
    try:
        cost = CostModel("cpu", {}, lambda key, value: None)
        pricing.prime(problem, cost)
        estimate = lambda params: pricing.estimate(problem, cost, params)  # noqa: E731
        entries = [
            portfolio.Entry(
                "x",
                portfolio.Meta("image-classification", 10, 5.0, 64, "elsewhere"),
                e.params,
                e.value,
                e.rank,
            )
            for e in portfolio.load(built)
        ]
        first = portfolio.adapt(problem, entries[0], None)
        one, two = (estimate({**first, "epochs": n}) for n in (1, 2))
        room = one + 0.5 * (two - one)  # an epoch and a half fits
        chosen = portfolio.portfolio_trials(problem, entries, estimate, room, None)
        assert chosen and chosen[0][0]["epochs"] == 1 and first["epochs"] > 1
        assert sum(estimate(p) for p, _ in chosen) <= room
        plenty = 100 * two  # the room takes them all, but no one entry may plan more than a trial may
        chosen = portfolio.portfolio_trials(problem, entries, estimate, plenty, None, each=room)
        assert chosen and chosen[0][0]["epochs"] == 1 and all(estimate(p) <= room for p, _ in chosen)
        adapted = [portfolio.adapt(problem, e, None) for e in entries]
        too_little = 0.9 * min(estimate({**p, "epochs": 1}) for p in adapted if p is not None)
        assert portfolio.portfolio_trials(problem, entries, estimate, too_little, None) == []
    finally:
        problem.close()


def test_the_bundled_portfolio_names_only_what_ships(tmp_path):
    """Every entry of the shipped portfolio names a registered backbone and strategy, and says where
    it came from."""
    from autotransfer.plugins import default_host

    registry = default_host([]).registry
    backbones, strategies = set(registry.names("backbones")), set(registry.names("strategies"))
    entries = portfolio.load(portfolio.BUNDLED)
    assert {e.meta.task for e in entries} >= {"image-classification"}
    for e in entries:
        assert e.params["backbone"] in backbones and e.params["strategy"] in strategies, e
        assert e.source and 0 < e.value <= 1


def test_bad_portfolio_sources_are_one_line_errors(digits, tmp_path):
    result = cli("portfolio", "build", tmp_path / "nowhere", expect=2)
    assert result.output.startswith("error: ") and "no such file or folder" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("portfolio", "build", tmp_path / "empty", expect=2)
    assert "no study.db" in result.output and len(result.output.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nothing": []}))
    result = cli(
        "search", digits, "-o", tmp_path / "o", "--portfolio", bad, "--n-trials", "1", *FAST, expect=2
    )
    assert result.output.startswith(f"error: --portfolio {bad}: not a portfolio file")


def test_an_entry_too_dear_at_its_resolution_runs_at_a_smaller_one(priced):
    """A cheaper fidelity of the same configuration: when not one epoch fits at the entry's
    resolution, the largest smaller searched resolution where one does."""
    problem, estimate = priced
    sizes = problem.input_sizes
    problem.dataset.input_size = sizes[-1]  # data as large as the backbone's own: no scale caps a fine-tune
    params = {
        "backbone": "tf_efficientnet_lite0",
        "strategy": "full-finetune",
        "epochs": 3,
        "batch_size": 32,
        "image_size": sizes[-1],
    }
    small = estimate({**params, "image_size": sizes[0], "epochs": 1})
    assert estimate({**params, "epochs": 1}) > 1.2 * small
    fitted, seconds = portfolio.within(problem, params, estimate, 1.1 * small)
    assert fitted["image_size"] < sizes[-1] and seconds <= 1.1 * small
    larger = [size for size in sizes if size > fitted["image_size"]]
    assert all(estimate({**params, "image_size": size, "epochs": 1}) > 1.1 * small for size in larger)
    assert portfolio.within(problem, params, estimate, 0.5 * small) == (None, 0.0)


def test_an_entry_skipped_once_built_is_queued_again_smaller(digits, tmp_path):
    """Priced when queued (before any trial taught the cost model), an entry may not fit once built:
    it runs again at the next smaller searched resolution, still named as the portfolio's."""
    from autotransfer.engine.objective import requeue_smaller

    problem = problem_for(digits, tmp_path, max_epochs=3, backbones=["tf_efficientnet_lite0"])
    try:
        sizes = problem.input_sizes
        study = optuna.create_study(direction="maximize")
        params = {
            "backbone": "tf_efficientnet_lite0",
            "strategy": "lora",
            "epochs": 1,
            "image_size": sizes[2],
        }
        study.enqueue_trial(params, user_attrs={"portfolio": "mnist"})
        trial = study.ask()
        for name, value in params.items():  # as the search's space suggests them
            trial.suggest_categorical(name, sizes if name == "image_size" else [value])
        assert requeue_smaller(problem, study, trial) == sizes[1]
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        again = study.ask()
        assert again.user_attrs["portfolio"] == "mnist"
        assert again.suggest_categorical("image_size", sizes) == sizes[1]
        assert trial.user_attrs["requeued_at"] == sizes[1]
        smallest = study.ask({"image_size": optuna.distributions.CategoricalDistribution(sizes)})
        assert requeue_smaller(problem, study, smallest) is None  # a sampler's trial is not queued again
    finally:
        problem.close()


def test_an_entry_takes_two_epochs_at_a_smaller_resolution_before_one_at_its_own(priced):
    """A fine-tune's first epoch is mostly warm-up: an entry that fits one epoch at its own resolution
    but two at a smaller one runs at the largest smaller resolution where two fit."""
    problem, estimate = priced
    sizes = problem.input_sizes
    problem.dataset.input_size = sizes[-1]  # data as large as the backbone's own: no scale caps a fine-tune
    params = {"backbone": "tf_efficientnet_lite0", "strategy": "lora", "epochs": 3, "batch_size": 32}
    params["image_size"] = sizes[-1]
    seconds = 1.05 * estimate({**params, "epochs": 1})
    assert estimate({**params, "epochs": 2}) > seconds  # one epoch fits at its own resolution
    fitted, spent = portfolio.within(problem, params, estimate, seconds)
    assert fitted["image_size"] < sizes[-1] and fitted["epochs"] >= 2 and spent <= seconds
    larger = [size for size in sizes if size > fitted["image_size"]]
    assert all(estimate({**params, "image_size": size, "epochs": 2}) > seconds for size in larger)


def test_a_fine_tune_entry_starts_at_the_datas_own_scale_a_probe_at_its_own(priced):
    """On 8 px digits, a fine-tune entry learned at 128 px runs at 32 px (the smallest searched
    resolution, which holds the data's own), however much room there is: its weights adapt to the
    data's scale, and a larger input only costs. Frozen features (a probe's, those under a partial
    fine-tune of the top groups) want the backbone's scale: they keep their resolution when it fits.
    Data as large as the backbone's own caps none."""
    problem, estimate = priced
    sizes = problem.input_sizes
    assert problem.dataset.input_size <= sizes[0] == portfolio.data_scale(problem)
    lora = {"backbone": "tf_efficientnet_lite0", "strategy": "lora", "epochs": 3, "batch_size": 16}
    lora["image_size"] = sizes[2]
    plenty = 100 * estimate({**lora, "epochs": 3})
    fitted, _ = portfolio.within(problem, lora, estimate, plenty)
    assert fitted["image_size"] == sizes[0] and fitted["epochs"] == 3
    probe = {**lora, "strategy": "linear-probe"}
    assert portfolio.within(problem, probe, estimate, plenty)[0]["image_size"] == sizes[2]
    top = {**lora, "strategy": "partial-finetune", "partial-finetune.freeze_depth": 5}  # frozen features
    assert portfolio.within(problem, top, estimate, plenty)[0]["image_size"] == sizes[2]
    stem = {**top, "partial-finetune.freeze_depth": 1}  # trains from the stem on
    assert portfolio.within(problem, stem, estimate, plenty)[0]["image_size"] == sizes[0]
    problem.dataset.input_size = sizes[-1]
    assert portfolio.data_scale(problem) == sizes[-1]
    assert portfolio.within(problem, lora, estimate, plenty)[0]["image_size"] == sizes[2]
