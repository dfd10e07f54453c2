"""Several workers on one study: separate processes (as on separate machines) on PostgreSQL, and
``--devices`` on one machine. The workers together run exactly the trials asked for, number them
once, agree on the split, and the best model reaches the output folder."""

from __future__ import annotations

import subprocess
import sys
import uuid

import optuna
import pytest
from conftest import cli, read_json

from autotransfer.config import with_driver

# linear probes that recompute the frozen backbone (--no-cache): a few seconds a trial on a small CPU
SMALL = [
    "--image-size",
    "32",
    "--backbones",
    "tf_efficientnet_lite0",
    "--strategies",
    "linear-probe",
    "--no-cache",
    "--max-epochs",
    "2",
    "--no-reference",
    "--no-rank",
    "--quiet",
]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    from autotransfer.features.demo import export_digits

    return export_digits(str(tmp_path_factory.mktemp("data") / "digits"), per_class=12)


def search_process(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autotransfer.cli", "search", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_one_study(storage: str, name: str, n_trials: int, n_workers: int) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=with_driver(storage))
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))  # every number once
    assert all(t.state in FINISHED for t in trials), [t.state.name for t in trials]  # nothing left RUNNING
    counted = [
        t
        for t in trials
        if (t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs)
        and "skipped" not in t.user_attrs
    ]
    assert len(counted) == n_trials  # exactly the trials asked for, together
    # two workers that each saw one trial left may both start one: the later is recorded as not run
    surplus = [t for t in trials if "reached --n-trials" in t.user_attrs.get("skipped", "")]
    assert len(trials) == n_trials + len(surplus) and len(surplus) < n_workers
    assert len({t.user_attrs["worker"] for t in trials}) == n_workers  # every worker took its share
    return study


def test_two_workers_join_one_postgres_study(small_digits, postgres_url, tmp_path):
    name = f"test-{uuid.uuid4().hex[:12]}"
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    try:
        procs = [
            search_process(
                small_digits,
                "-o",
                out,
                "--storage",
                postgres_url,
                "--study-name",
                name,
                "--n-trials",
                "5",
                *SMALL,
            )
            for out in outs
        ]
        results = [p.communicate(timeout=400) for p in procs]
        for p, (_stdout, stderr) in zip(procs, results):
            assert p.returncode == 0, stderr
        study = check_one_study(postgres_url, name, 5, 2)
        # one split, made once and shared through the study
        assert read_json(outs[0] / "split.json") == read_json(outs[1] / "split.json")
        assert read_json(outs[0] / "split.json") == read_json_text(study.user_attrs["split"])
        # the worker that finished last exported the study's one best trial
        last = max(outs, key=lambda out: (out / "best.json").stat().st_mtime)
        assert read_json(last / "best.json")["trial"] == study.best_trial.number
        # and so does `export`, on a third machine that has neither checkpoint: it retrains the best
        exported = tmp_path / "machine-c"
        cli("export", exported, "--storage", postgres_url, "--study-name", name, "--device", "cpu")
        best = read_json(exported / "best.json")
        assert (best["trial"], best["val_metric"]) == (study.best_trial.number, study.best_value)
        assert 0 <= best["test_metric"] <= 1
        prediction = cli("predict", exported / "model", small_digits / "3").output.splitlines()
        assert len(prediction) == len(list((small_digits / "3").iterdir()))
    finally:
        try:
            optuna.delete_study(study_name=name, storage=with_driver(postgres_url))
        except KeyError:
            pass


def read_json_text(text: str):
    import json

    return json.loads(text)


def test_devices_runs_one_worker_per_device_on_one_study(small_digits, tmp_path):
    out = tmp_path / "out"
    proc = search_process(small_digits, "-o", out, "--devices", "cpu,cpu", "--n-trials", "5", *SMALL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr
    study = check_one_study(f"sqlite:///{out / 'study.db'}", "autotransfer", 5, 2)
    best = read_json(out / "best.json")
    assert best["trial"] == study.best_trial.number and best["single"]["val_metric"] == study.best_value
    assert list((out / "model").rglob("model.safetensors"))
    # the parent exported from the shared checkpoints; only the best's (and an ensemble's members') stay
    exported = {best["trial"]} | {m["trial"] for m in best.get("ensemble", {}).get("members", [])}
    assert {p.name.split(".")[0] for p in (out / "checkpoints").iterdir()} == {f"trial-{n}" for n in exported}
    assert (out / "checkpoints" / f"trial-{best['trial']}.safetensors").is_file()


def test_devices_and_heartbeat_are_checked(small_digits, tmp_path):
    result = cli("search", small_digits, "-o", tmp_path / "o", "--devices", "gpu0", *SMALL, expect=2)
    assert "--devices gpu0" in result.output and "cpu,cpu" in result.output
    result = cli("search", small_digits, "-o", tmp_path / "o", "--heartbeat", "1", *SMALL, expect=2)
    assert "--heartbeat" in result.output
