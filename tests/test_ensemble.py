"""Ensembles (the default; --no-ensemble): a greedy ensemble of the best trials, exported when it
beats the single best's validation accuracy, and predicted with as any exported model is."""

from __future__ import annotations

import torch
from conftest import cli, read_json

from autotransfer.engine import ensemble


def _member(number: int, probs: list[list[float]]) -> ensemble.Member:
    import optuna

    trial = optuna.trial.create_trial(params={}, distributions={}, value=0.0)
    trial.number = number
    return ensemble.Member(trial, torch.tensor(probs))


def test_greedy_selection_combines_members_that_err_on_different_examples():
    """Two members each wrong on a different example: together they are right on all; a copy of the
    best adds nothing and is not chosen over them."""
    labels = torch.tensor([0, 1, 0, 1])
    best = _member(0, [[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7]])  # wrong on example 2
    other = _member(1, [[0.8, 0.2], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])  # wrong on example 1
    chosen, accuracy = ensemble.select([best, other], labels)
    assert accuracy == 1.0 and {m.trial.number for m in chosen} == {0, 1}
    assert abs(sum(m.weight for m in chosen) - 1.0) < 1e-9
    alone, accuracy = ensemble.select([best, _member(2, best.probs.tolist())], labels)
    assert accuracy == 0.75 and [m.trial.number for m in alone] == [0]


def test_an_ensemble_as_accurate_as_the_best_and_more_sure_of_it_is_chosen():
    """On a small validation set the best trials often tie on accuracy (digits' at 1.000): greedy
    selection then goes by likelihood (the export still needs a higher accuracy)."""
    labels = torch.tensor([0, 1, 0, 1])
    best = _member(0, [[0.6, 0.4], [0.4, 0.6], [0.55, 0.45], [0.45, 0.55]])  # right, barely
    sure = _member(1, [[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])  # right, surely
    chosen, accuracy = ensemble.select([best, sure], labels)
    assert accuracy == 1.0 and {m.trial.number for m in chosen} == {0, 1}
    worse = _member(2, [[0.7, 0.3], [0.5, 0.5], [0.4, 0.6], [0.6, 0.4]])  # wrong on three
    alone, _ = ensemble.select([best, worse], labels)
    assert [m.trial.number for m in alone] == [0]


def test_a_search_exports_an_ensemble_that_predict_uses(digits, tmp_path):
    """Where the ensemble beats the best trial on validation, model/ is the ensemble: predict on the
    test split gives the accuracy best.json reports, and best.json keeps the best single trial's."""
    out = tmp_path / "out"
    args = ["--n-trials", "6", "--max-epochs", "3", "--strategies", "linear-probe", "--image-size", "64"]
    backbones = ["--backbones", "tf_efficientnet_lite0,tf_efficientnet_lite1"]  # unlike errors
    result = cli("search", digits, "-o", out, *args, *backbones, "--quiet")
    best = read_json(out / "best.json")
    assert best["ensemble"]["exported"], best["ensemble"]
    members = best["ensemble"]["members"]
    assert len(members) >= 2 and abs(sum(m["weight"] for m in members) - 1) < 1e-3
    assert best["val_metric"] > best["single"]["val_metric"]
    assert best["single"]["trial"] == best["trial"] == members[0]["trial"]
    assert "ensemble" in result.output.splitlines()[-1]
    config = read_json(out / "model" / "config.json")
    assert [m["trial"] for m in config["ensemble"]] == [m["trial"] for m in members]
    for m in config["ensemble"]:
        assert (out / "model" / m["path"] / "model.safetensors").is_file()

    split = read_json(out / "split.json")
    files = [str(digits / item) for item in split["test"]]
    lines = cli("predict", out / "model", *files).output.strip().splitlines()
    correct = sum(line.split("\t")[1] == item.split("/")[0] for line, item in zip(lines, split["test"]))
    assert len(lines) == len(files) and abs(correct / len(files) - best["test_metric"]) < 1e-9
    # the members' checkpoints stay (export again), the others go
    kept = {p.name.split(".")[0] for p in (out / "checkpoints").iterdir()}
    assert kept == {f"trial-{m['trial']}" for m in members}


def test_no_ensemble_exports_the_best_trial_alone(digits, tmp_path):
    out = tmp_path / "out"
    args = ["--n-trials", "4", "--max-epochs", "2", "--strategies", "linear-probe", "--image-size", "64"]
    backbones = ["--backbones", "tf_efficientnet_lite0,tf_efficientnet_lite1"]
    cli("search", digits, "-o", out, "--no-ensemble", *args, *backbones, "--quiet")
    best = read_json(out / "best.json")
    assert "ensemble" not in best
    assert best["single"] == {k: best[k] for k in ("trial", "val_metric", "test_metric")}
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert not list((out / "checkpoints").glob("*.val.safetensors"))
