"""kill -9, at the worst moments, on SQLite and PostgreSQL: the same command resumes, every trial
that finished is kept as it was, the killed trial is failed by its missing heartbeat and run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import read_json, write_slow_plugin

from autotransfer.config import with_driver

ARGS = [
    "--image-size",
    "32",
    "--backbones",
    "tf_efficientnet_lite0",
    "--strategies",
    "slow-probe",  # batches that take time: a kill lands mid-trial, not between trials
    "--no-cache",
    "--max-epochs",
    "2",
    "--no-reference",
    "--no-rank",
    "--heartbeat",
    "3",
    "--quiet",
]
N_TRIALS = 4


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    from autotransfer.features.demo import export_digits

    return export_digits(str(tmp_path_factory.mktemp("data") / "digits"), per_class=12)


def kill_when(
    command: list[str], storage: str, name: str, ready, timeout: float = 240
) -> list[optuna.trial.FrozenTrial]:
    """Start ``command``, kill -9 it as soon as ``ready(trials)``; the trials at that moment."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    study, deadline = None, time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                study = study or optuna.load_study(study_name=name, storage=with_driver(storage))
            except KeyError:  # not created yet
                pass
            if study is not None and ready(study.get_trials()):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return study.get_trials()
            time.sleep(0.05)
        states = [(t.number, t.state.name) for t in study.get_trials()] if study else None
        raise AssertionError(
            f"never ready; the search exited with {proc.poll()}, trials {states}: {proc.stderr.read()}"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def mid_trial(trial) -> bool:
    """Running, and past its first epoch or its first seconds (a batch takes a second here)."""
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    return bool(trial.intermediate_values) or time.time() - started > 1.5


def counted(trials) -> int:
    return sum(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        or (t.state == optuna.trial.TrialState.FAIL and "fail_reason" in t.user_attrs)
        for t in trials
    )


def snapshot(trials) -> dict:
    return {
        t.number: (t.state, t.value, t.params, t.intermediate_values, t.datetime_start, t.datetime_complete)
        for t in trials
        if t.state.is_finished()
    }


@pytest.mark.parametrize("shared_study", ["sqlite", "postgres"], indirect=True)
def test_kill_9_mid_trial_then_in_the_export_resumes_with_every_trial_intact(
    small_digits, shared_study, tmp_path
):
    storage, name = shared_study
    out = tmp_path / "out"
    plugin = write_slow_plugin(tmp_path / "slow_plugin.py", 0.06)  # ~1 s a batch of 16

    command = [
        sys.executable,
        "-m",
        "autotransfer.cli",
        "--plugin",
        str(plugin),
        "search",
        str(small_digits),
        "-o",
        str(out),
        "--storage",
        storage,
        "--study-name",
        name,
        "--n-trials",
        str(N_TRIALS),
        *ARGS,
    ]

    # 1. killed mid-trial, with a trial finished
    before = kill_when(
        command,
        storage,
        name,
        lambda trials: counted(trials) >= 1 and any(mid_trial(t) for t in trials),
    )
    killed = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1

    # 2. the same command resumes; killed again once every trial is done (while it exports the best)
    after = kill_when(command, storage, name, lambda trials: counted(trials) >= N_TRIALS)
    study = optuna.load_study(study_name=name, storage=with_driver(storage))
    trials = study.trials
    assert {n: v for n, v in snapshot(trials).items() if n in snapshot(before)} == snapshot(before)
    victim = trials[killed[0].number]
    assert victim.state == optuna.trial.TrialState.FAIL and "fail_reason" not in victim.user_attrs
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params and retried[0].state.is_finished()
    assert snapshot(after) == snapshot(trials)

    # 3. and once more: nothing left to run, the best model is exported
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name=name, storage=with_driver(storage)).trials
    assert snapshot(trials) == snapshot(after)  # nothing redone, nothing lost
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state.is_finished() for t in trials) and counted(trials) == N_TRIALS
    best = read_json(out / "best.json")
    assert best["trial"] == study.best_trial.number and list((out / "model").rglob("model.safetensors"))
