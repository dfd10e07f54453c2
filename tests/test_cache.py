"""Frozen-prefix cache: the right hits and misses, the same results with and without it, spilling."""

from __future__ import annotations

import optuna
import pytest
import torch
from conftest import problem_for, trainer_for

from autotransfer.training import cache

LP = {"strategy": "linear-probe", "linear-probe.lr": 0.03}
PARTIAL = {
    "strategy": "partial-finetune",
    "partial-finetune.lr": 1e-3,
    "partial-finetune.layer_decay": 1.0,
    "partial-finetune.head_lr_mult": 10.0,
    "partial-finetune.warmup": 0.0,
    "partial-finetune.schedule": "cosine",
    "partial-finetune.label_smoothing": 0.0,
    "augment": "off",
}


def make_problem(digits, tmp_path, **overrides):
    options = {"backbones": ["tf_efficientnet_lite0"], "image_size": 32} | overrides
    return problem_for(digits, tmp_path, **options)


def run(problem, params, epochs=3):
    base = {"backbone": "tf_efficientnet_lite0", "batch_size": 32, "weight_decay": 1e-4, "epochs": epochs}
    trainer = trainer_for(problem, base | params)
    return trainer, trainer.fit()


def test_hits_and_misses(digits, tmp_path):
    problem = make_problem(digits, tmp_path, image_size=None)  # the resolution is searched
    activations = problem.caches.activations
    run(problem, LP | {"image_size": 32})
    assert (activations.hits, activations.misses) == (0, 2)  # train and val computed once
    run(problem, LP | {"image_size": 32, "linear-probe.lr": 0.01})
    assert (activations.hits, activations.misses) == (2, 2)  # another trial reuses them
    run(problem, PARTIAL | {"image_size": 32, "partial-finetune.freeze_depth": 4})
    assert activations.misses == 4  # another depth misses
    run(problem, PARTIAL | {"image_size": 32, "partial-finetune.freeze_depth": 4})
    assert (activations.hits, activations.misses) == (4, 4)
    run(problem, LP | {"image_size": 64})
    assert activations.misses == 6  # another resolution misses
    run(problem, PARTIAL | {"image_size": 32, "partial-finetune.freeze_depth": 4, "augment": "light"})
    assert activations.misses == 6 and activations.hits == 4  # augmenting never caches
    # another split is another search, with caches of its own: nothing leaks between searches
    other = make_problem(digits, tmp_path / "seed", seed=1)
    run(other, LP)
    assert (other.caches.activations.hits, other.caches.activations.misses) == (0, 2)
    assert (activations.hits, activations.misses) == (4, 6)


@pytest.mark.parametrize(
    "params", [LP, PARTIAL | {"partial-finetune.freeze_depth": 5}], ids=["linear-probe", "partial"]
)
def test_same_results_with_and_without_cache(params, digits, tmp_path):
    cached, metric_cached = run(make_problem(digits, tmp_path / "a"), params)
    plain, metric_plain = run(make_problem(digits, tmp_path / "b", cache=False), params)
    assert cached.cached_depth > 0 and plain.cached_depth == 0
    assert metric_cached == pytest.approx(metric_plain, abs=1.5 / len(cached.val.labels))
    assert torch.allclose(cached.model.head.weight, plain.model.head.weight, atol=1e-3)


def test_spills_to_disk_past_the_memory_cap(tmp_path):
    store = cache.Cache(max_bytes=5000, spill_dir=tmp_path / "spill")
    a, b = torch.randn(1000), torch.randn(1000)  # 4000 bytes each: one fits in memory
    assert torch.equal(store.get("a", lambda: a), a)
    store.get("b", lambda: b)
    assert list(store.entries) == ["b"] and len(list((tmp_path / "spill").iterdir())) == 1
    again = store.get("a", lambda: pytest.fail("recomputed a spilled entry"))
    assert torch.equal(again, a) and store.disk_hits == 1
    store.clear()
    assert not list((tmp_path / "spill").iterdir())


def test_rank_orders_backbones_and_seeds_the_first_trials(digits, tmp_path):
    from conftest import cli

    result = cli(
        "rank",
        digits,
        "--image-size",
        "32",
        "--backbones",
        "tf_efficientnet_lite0,tf_efficientnet_lite1",
        "--json",
    )
    import json

    ranking = json.loads(result.output)
    assert {r["backbone"] for r in ranking} == {"tf_efficientnet_lite0", "tf_efficientnet_lite1"}
    assert ranking[0]["logme"] >= ranking[1]["logme"]
    out = tmp_path / "out"
    cli(
        "search",
        digits,
        "-o",
        out,
        "--image-size",
        "32",
        "--backbones",
        "tf_efficientnet_lite0,tf_efficientnet_lite1",
        "--n-trials",
        "2",
        "--max-epochs",
        "2",
        "--no-reference",
        "--quiet",
    )
    trials = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.params["backbone"] for t in trials] == [r["backbone"] for r in ranking]
    assert all(t.params["strategy"] == "linear-probe" for t in trials)


def test_logme_prefers_informative_features():
    import numpy as np

    from autotransfer.engine.rank import logme

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(3)[labels] * 3 + rng.normal(size=(300, 3))
    informative = np.hstack([informative, rng.normal(size=(300, 20))])
    noise = rng.normal(size=(300, 23))
    assert logme(informative, labels) > logme(noise, labels)
