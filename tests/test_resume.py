"""Resuming, as users run it: settings that change what a trial means are refused by name, a
finished search leaves no queued row behind, a killed worker's trial is said to be waiting for its
heartbeat, and ranking sees pooled features whatever the cache setting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import cli, read_json, write_slow_plugin

TINY = ["--max-epochs", "1", "--no-reference", "--quiet"]
LITE0 = ["--backbones", "tf_efficientnet_lite0"]


def test_ranking_with_the_cache_off_sees_pooled_features(digits, tmp_path):
    out = tmp_path / "out"
    cli(
        "search",
        digits,
        "-o",
        out,
        "--strategies",
        "linear-probe",
        "--no-cache",
        "--n-trials",
        "2",
        "--image-size",
        "32",
        "--backbones",
        "tf_efficientnet_lite0,tf_efficientnet_lite1",
        *TINY,
    )
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.user_attrs["ranking"]) == 2
    assert read_json(out / "best.json")["test_metric"] is not None


@pytest.mark.parametrize(
    "first, again, named",
    [
        (["--image-size", "32"], ["--image-size", "64"], "--image-size 32, not 64"),
        (["--image-size", "32"], [], "--image-size 32, not (not given)"),
        (
            ["--image-size", "32", "--max-epochs", "1"],
            ["--image-size", "32", "--max-epochs", "3"],
            "--max-epochs 1",
        ),
    ],
)
def test_resuming_with_settings_that_change_trials_is_refused_by_name(digits, tmp_path, first, again, named):
    out = tmp_path / "out"
    base = ["search", digits, "-o", out, "--n-trials", "1", "--no-reference", "--quiet", *LITE0]
    cli(*base, *(first if "--max-epochs" in first else [*first, "--max-epochs", "1"]))
    result = cli(*base, *(again if "--max-epochs" in again else [*again, "--max-epochs", "1"]), expect=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output


def test_resuming_with_other_candidates_is_refused_by_name(digits, tmp_path):
    out = tmp_path / "out"
    cli("search", digits, "-o", out, "--n-trials", "1", "--image-size", "32", *LITE0, *TINY)
    result = cli(
        "search",
        digits,
        "-o",
        out,
        "--n-trials",
        "2",
        "--image-size",
        "32",
        *TINY,
        "--backbones",
        "tf_efficientnet_lite0,tf_efficientnet_lite1",
        expect=2,
    )
    assert (
        "--backbones tf_efficientnet_lite0" in result.output and len(result.output.strip().splitlines()) == 1
    )


def test_a_finished_search_leaves_no_queued_row(digits, tmp_path):
    """Three probes are queued first, one trial is asked for: the two never run are no rows."""
    out = tmp_path / "out"
    cli("search", digits, "-o", out, "--n-trials", "1", "--image-size", "32", "--no-rank", *TINY)
    board = pd.read_csv(out / "leaderboard.csv")
    assert "WAITING" not in set(board.state) and len(board) == 1
    assert "waiting" not in read_json(out / "best.json")["trials"]


def test_a_killed_workers_trial_is_said_to_wait_for_its_heartbeat(digits, tmp_path):
    plugin = write_slow_plugin(tmp_path / "slow_plugin.py", 0.06)  # ~1 s a batch of 16
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "autotransfer",
        "--plugin",
        str(plugin),
        "search",
        str(digits),
        "-o",
        str(out),
        "--n-trials",
        "2",
        "--strategies",
        "slow-probe",
        "--image-size",
        "32",
        "--heartbeat",
        "60",
        "--max-epochs",
        "1",
        "--no-reference",
        *LITE0,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="autotransfer", storage=storage).trials
        except Exception:
            continue
        if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert "still RUNNING" in again.stderr and "no heartbeat came for 60 s" in again.stderr, again.stderr
    json.loads(again.stdout.strip().splitlines()[-1])  # and the search went on to a result
