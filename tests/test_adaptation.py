"""Domain adaptation digits -> MNIST, label-free selection, multi-task, the negative-transfer guard."""

from __future__ import annotations

import shutil

import optuna
import pytest
from conftest import cli, problem_for, read_json

from autotransfer.engine.first_trials import EXPLORE_LR

ADAPT = [
    "--image-size",
    "32",
    "--backbones",
    "tf_efficientnet_lite0",
    "--max-epochs",
    "2",
    "--quiet",
    "--no-reference",
    "--no-pruning",
]


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    from autotransfer.features.demo import export_mnist

    return export_mnist(str(tmp_path_factory.mktemp("data") / "mnist"), per_class=20)


def trials(out):
    return optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}").trials


@pytest.mark.parametrize("strategy", ["dann", "cdan", "coral", "mmd", "mcc"])
def test_adaptation_strategy_searches_digits_to_mnist(strategy, digits, mnist, tmp_path):
    out = tmp_path / "out"
    cli(
        "search",
        digits,
        "--target-unlabeled",
        mnist,
        "--target-eval",
        mnist,
        "-o",
        out,
        "--strategies",
        strategy,
        "--n-trials",
        "2",
        *ADAPT,
    )
    done = trials(out)
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 2
    # the strategy asked for starts with a fair look: every epoch, a brisk learning rate
    assert done[0].params["epochs"] == 2
    assert done[0].params[f"{strategy}.lr"] == pytest.approx(1e-5 * 1e3**EXPLORE_LR)
    for t in done:
        assert t.user_attrs["strategy"] == strategy
        assert 0 <= t.user_attrs["source_val_accuracy"] <= 1
        # the objective is the documented label-free score
        assert t.value == pytest.approx((t.user_attrs["source_val_accuracy"] + t.user_attrs["target_im"]) / 2)
        assert 0 <= t.user_attrs["target_accuracy"] <= 1
        assert {f"{strategy}.weight", f"{strategy}.freeze_depth"} <= set(t.params)
    best = read_json(out / "best.json")
    assert best["metric"] == "label-free score" and "target_accuracy" in best
    # the exported model is a plain classifier (no discriminator) that predicts
    cli("predict", out / "model", next((mnist / "7").iterdir()))


def test_objective_reads_no_target_label(digits, mnist, tmp_path):
    """Scrambling every target label (the folders of --target-unlabeled and of --target-eval) leaves
    every trial's objective unchanged; only the reported target accuracy moves."""
    scrambled = tmp_path / "scrambled"
    names = sorted(p.name for p in mnist.iterdir())
    for i, name in enumerate(names):  # each class's files now sit under another class's name
        shutil.copytree(mnist / name, scrambled / names[(i + 1) % len(names)] / "x")
    # keep the walk order identical: the unlabelled target is the original folder renamed
    renamed = tmp_path / "renamed"
    for i, name in enumerate(names):
        shutil.copytree(mnist / name, renamed / f"unknown-{i}")
    common = ["--strategies", "coral", "--n-trials", "2", *ADAPT]
    cli("search", digits, "--target-unlabeled", mnist, "--target-eval", mnist, "-o", tmp_path / "a", *common)
    cli(
        "search",
        digits,
        "--target-unlabeled",
        renamed,
        "--target-eval",
        scrambled,
        "-o",
        tmp_path / "b",
        *common,
    )
    a, b = trials(tmp_path / "a"), trials(tmp_path / "b")
    assert [t.value for t in a] == [t.value for t in b]
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.user_attrs["target_accuracy"] for t in a] != [t.user_attrs["target_accuracy"] for t in b]


def test_target_streams_carry_no_labels(digits, mnist, tmp_path):
    from autotransfer.engine.streams import streams

    problem = problem_for(
        digits, tmp_path, target_unlabeled=str(mnist), backbones=["tf_efficientnet_lite0"], image_size=32
    )
    made = streams(problem, {"image_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3})
    assert made["target"].labels is None and made["target_val"].labels is None
    assert problem.inputs.target.labels is None


def test_multitask_trains_aux_heads_and_exports_plain_model(digits, mnist, tmp_path):
    out = tmp_path / "out"
    cli(
        "search",
        digits,
        "--aux-task",
        mnist,
        "-o",
        out,
        "--strategies",
        "multitask",
        "--n-trials",
        "2",
        *ADAPT,
    )
    done = trials(out)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert all("multitask.weight.0" in t.params for t in done)
    from safetensors import safe_open

    exported = list((out / "model").rglob("model.safetensors"))  # the best trial, or each member
    for weights in exported:
        with safe_open(str(weights), "pt") as f:
            keys = list(f.keys())
        assert not any(k.startswith("aux_heads") for k in keys) and "head.weight" in keys
    assert exported


def test_adaptation_needs_target_data(digits, tmp_path):
    result = cli("search", digits, "-o", tmp_path / "o", "--strategies", "dann", expect=2)
    assert "--target-unlabeled" in result.output
    result = cli("search", digits, "-o", tmp_path / "o", "--strategies", "multitask", expect=2)
    assert "--aux-task" in result.output


def test_verdict_says_plainly_when_transfer_did_not_help():
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from autotransfer.engine.results import transfer_verdict

    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    study.add_trial(
        create_trial(value=0.9, params={"x": 0.1}, distributions=dist, user_attrs={"reference": "scratch"})
    )
    study.add_trial(create_trial(value=0.7, params={"x": 0.2}, distributions=dist))
    verdict = transfer_verdict(study)
    assert verdict["transfer_helped"] is False and "did NOT help" in verdict["verdict"]
    study.add_trial(create_trial(value=0.95, params={"x": 0.3}, distributions=dist))
    assert transfer_verdict(study)["transfer_helped"] is True


def test_augmentation_is_searched_and_changes_inputs(digits_search):
    import json

    import pandas as pd
    import torch

    from autotransfer_image import augment_batch

    board = pd.read_csv(digits_search / "leaderboard.csv")
    trained_below_head = [
        json.loads(p)
        for p, s in zip(board.params, board.strategy)
        if s in ("full-finetune", "partial-finetune", "scratch")
    ]
    assert trained_below_head and all(p["augment"] in ("off", "light", "strong") for p in trained_below_head)
    x = torch.rand(4, 3, 32, 32)
    for strong in (False, True):
        y = augment_batch(x.clone(), strong=strong)
        assert y.shape == x.shape and not torch.allclose(x, y) and y.min() >= 0 and y.max() <= 1
