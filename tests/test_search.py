"""A real search on exported digits: every output, predict round trip, resume, pretrained vs random."""

from __future__ import annotations

import optuna
import pandas as pd
from conftest import FAST, cli, read_json


def test_search_writes_every_output(digits_search):
    out = digits_search
    for name in (
        "study.db",
        "leaderboard.csv",
        "best.json",
        "split.json",
        "model/config.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "model").rglob("model.safetensors"))  # the best trial's, or each member's
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board[~board.reference]) == 6  # --n-trials counts searched trials; the reference is extra
    assert board.reference.sum() == 1
    assert set(board.columns) >= {"number", "state", "backbone", "strategy", "value", "duration_s", "params"}
    best = read_json(out / "best.json")
    assert best["backbone"] == "tf_efficientnet_lite0"
    assert 0.0 <= best["test_metric"] <= 1.0
    assert best["single"]["val_metric"] == board[board.state == "COMPLETE"].value.max()
    # the study is an ordinary Optuna study
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    assert study.best_trial.number == best["trial"]
    assert {t.user_attrs["strategy"] for t in study.trials} >= {"linear-probe", "scratch"}
    # a pruned trial stopped before its last epoch: a trial that trained to the end is never thrown away
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["epochs_run"] < t.params["epochs"], t.number


def test_split_is_stratified_and_disjoint(digits_search):
    split = read_json(digits_search / "split.json")
    sets = {name: set(items) for name, items in split.items()}
    assert (
        not (sets["train"] & sets["val"])
        and not (sets["train"] & sets["test"])
        and not (sets["val"] & sets["test"])
    )
    assert sum(len(s) for s in sets.values()) == 300
    for name in ("val", "test"):
        classes = {item.split("/")[0] for item in split[name]}
        assert classes == {str(d) for d in range(10)}, name


def test_exported_model_predicts_test_split_with_reported_accuracy(digits_search, digits):
    split = read_json(digits_search / "split.json")
    files = [str(digits / item) for item in split["test"]]
    result = cli("predict", digits_search / "model", *files)
    lines = result.output.strip().splitlines()
    assert len(lines) == len(files)
    correct = 0
    for line, item in zip(lines, split["test"]):
        path, label, probability = line.split("\t")
        assert path.endswith(item)
        correct += label == item.split("/")[0]
    assert abs(correct / len(files) - read_json(digits_search / "best.json")["test_metric"]) < 1e-9


def test_resume_adds_trials_without_repeating(digits, tmp_path):
    out = tmp_path / "out"
    cli("search", digits, "-o", out, "--n-trials", "3", "--max-epochs", "2", *FAST)
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="autotransfer", storage=storage)
    first = study.trials
    # timed batches of each backbone and size, the optimiser's step: measured once, kept in the study
    measured = {
        k: v
        for k, v in study.user_attrs.items()
        if k.startswith("cost|") and k.split("|")[2] in ("rates", "optimizer")
    }
    assert any("|rates|" in k for k in measured) and any(k.endswith("|optimizer") for k in measured)
    cli("search", digits, "-o", out, "--n-trials", "5", "--max-epochs", "2", *FAST)
    study = optuna.load_study(study_name="autotransfer", storage=storage)
    after = study.trials
    # the resumed search priced its trials from them rather than timing the batches again
    assert {k: study.user_attrs[k] for k in measured} == measured
    searched = [t for t in after if not t.user_attrs.get("reference")]
    assert [t.number for t in after] == list(range(len(after))) and len(searched) == 5
    assert sum(bool(t.user_attrs.get("reference")) for t in after) <= 1  # the reference runs once at most
    for old, new in zip(first, after[: len(first)]):
        assert (old.state, old.value, old.params, old.datetime_start) == (
            new.state,
            new.value,
            new.params,
            new.datetime_start,
        )
    # the same command again has nothing left to do and keeps everything
    cli("search", digits, "-o", out, "--n-trials", "5", "--max-epochs", "2", *FAST)
    assert len(optuna.load_study(study_name="autotransfer", storage=storage).trials) == len(after)


def test_pretrained_linear_probe_beats_random_weights(digits, tmp_path):
    args = ["--strategies", "linear-probe", "--n-trials", "1", "--max-epochs", "5", "--no-reference", *FAST]
    cli("search", digits, "-o", tmp_path / "pre", *args)
    cli("search", digits, "-o", tmp_path / "rand", "--random-init", *args)
    pretrained = read_json(tmp_path / "pre" / "best.json")
    random = read_json(tmp_path / "rand" / "best.json")
    assert pretrained["strategy"] == random["strategy"] == "linear-probe"
    assert pretrained["params"] == random["params"]
    assert pretrained["test_metric"] > random["test_metric"] + 0.2


def test_timm_backbone_from_a_local_weights_file(digits, tmp_path):
    """Offline users name any timm model with a local weights file: NAME@PATH."""
    from safetensors.torch import save_file

    from autotransfer_timm import lite_state_dict

    weights = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite_state_dict("tf_efficientnet_lite0").items()}, str(weights))
    name = f"tf_efficientnet_lite0@{weights}"
    out = tmp_path / "out"
    cli(
        "search",
        digits,
        "-o",
        out,
        "--backbones",
        name,
        "--strategies",
        "linear-probe",
        "--n-trials",
        "1",
        "--max-epochs",
        "3",
        "--image-size",
        "64",
        "--no-reference",
        "--quiet",
    )
    best = read_json(out / "best.json")
    assert best["backbone"] == name and best["test_metric"] > 0.5  # pretrained features, not random ones
    weights.unlink()  # the exported model carries its own weights
    result = cli("predict", out / "model", next((digits / "2").iterdir()))
    assert result.output.count("\t") == 2
