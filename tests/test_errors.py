"""Bad input gets one clear line; failing trials are recorded and the search goes on; Ctrl-C keeps
everything."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import FAST, cli, cli_subprocess, interruptible, write_slow_plugin

TINY = ["--n-trials", "1", "--max-epochs", "1", "--no-reference", *FAST]


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_data_path(tmp_path):
    one_line_error(
        cli("search", tmp_path / "nope", "-o", tmp_path / "o", expect=None), str(tmp_path / "nope"), "no such"
    )


def test_no_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    one_line_error(
        cli("search", tmp_path / "flat", "-o", tmp_path / "o", "--task", "image-classification", expect=None),
        "no class folders",
    )


def test_empty_class(digits_copy, tmp_path):
    (digits_copy / "empty").mkdir()
    one_line_error(
        cli("search", digits_copy, "-o", tmp_path / "o", *TINY, expect=None),
        str(digits_copy / "empty"),
        "no image files",
    )


def test_single_class(digits_copy, tmp_path):
    import shutil

    for d in list(digits_copy.iterdir())[1:]:
        shutil.rmtree(d)
    one_line_error(cli("search", digits_copy, "-o", tmp_path / "o", *TINY, expect=None), "only one class")


def test_class_with_one_example(digits_copy, tmp_path):
    for f in sorted((digits_copy / "3").iterdir())[1:]:
        f.unlink()
    one_line_error(
        cli("search", digits_copy, "-o", tmp_path / "o", *TINY, expect=None), "'3'", "single example"
    )


def test_corrupt_image_is_named_and_skipped(digits_copy, tmp_path):
    bad = digits_copy / "4" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    result = cli("search", digits_copy, "-o", tmp_path / "o", *TINY)
    warnings = [l for l in result.output.splitlines() if l.startswith("warning:") and "broken.png" in l]
    assert len(warnings) == 1 and "skipped" in warnings[0]
    assert "1 of 301 image files skipped" in result.output
    split = (tmp_path / "o" / "split.json").read_text()
    assert "broken.png" not in split


@pytest.mark.parametrize(
    "option,name,kind",
    [
        ("--backbones", "resnet-nonexistent-xyz", "backbones"),
        ("--strategies", "fine-tune-everything", "strategies"),
    ],
)
def test_unknown_name_lists_the_valid_ones(digits, tmp_path, option, name, kind):
    args = ["search", digits, "-o", tmp_path / "o", "--n-trials", "1", "--image-size", "32"]
    line = one_line_error(cli(*args, option, name, expect=None), name, f"valid {kind}")
    valid = "tf_efficientnet_lite0" if kind == "backbones" else "linear-probe"
    assert valid in line


PLUGIN = """
from autotransfer import hookimpl
from autotransfer.specs import StrategySpec


def explode(model, params, context):
    raise RuntimeError("this strategy always fails")


def diverge(model, params, context):
    import torch
    from autotransfer.strategy import fine_tune_plan
    plan = fine_tune_plan(model, context.n_groups, {})
    # a buggy regulariser: the log of a negative number is NaN
    plan.extra_loss = lambda model, source, extras, progress: torch.log(-source.abs().mean() - 1)
    return plan


@hookimpl
def register_strategies(register):
    register(StrategySpec(name="explode", description="fails", prepare=explode))
    register(StrategySpec(name="diverge", description="a regulariser that yields NaN", prepare=diverge))
"""


@pytest.mark.parametrize(
    "strategy,reason", [("explode", "this strategy always fails"), ("diverge", "training loss became nan")]
)
def test_failing_trials_are_recorded_and_the_search_goes_on(digits, tmp_path, strategy, reason):
    plugin = tmp_path / "failing_strategies.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "o"
    result = cli(
        "--plugin",
        plugin,
        "search",
        digits,
        "-o",
        out,
        "--strategies",
        strategy,
        "--n-trials",
        "2",
        "--max-epochs",
        "1",
        "--no-reference",
        *FAST,
        expect=1,
    )
    assert "no trial completed" in result.output
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.state) == ["FAIL", "FAIL"]  # the second trial ran after the first failed
    assert all(reason in r.lower() for r in board.fail_reason.str.lower())
    assert "Traceback" in (out / "failures.log").read_text()  # the details are kept for debugging


def trials_when(storage: str, ready, deadline: float, every: float) -> list:
    """A running search's trials once ``ready(trials)`` holds, looked at every ``every`` seconds until
    ``deadline`` ([] when it never does)."""
    while time.time() < deadline:
        time.sleep(every)
        try:
            trials = optuna.load_study(study_name="autotransfer", storage=storage).trials
        except Exception:  # the search has not written its study yet
            continue
        if ready(trials):
            return trials
    return []


def test_ctrl_c_stops_cleanly_and_resume_keeps_finished_trials(digits, tmp_path):
    out = tmp_path / "o"
    # trials of the slow plugin's probe take seconds, so Ctrl-C lands inside one, not between two
    plugin = ["--plugin", str(write_slow_plugin(tmp_path / "slow_plugin.py", 0.004))]
    search = ["search", str(digits), "-o", str(out), "--strategies", "slow-probe", "--no-reference"]
    args = [sys.executable, "-m", "autotransfer.cli", *plugin, *search, "--n-trials", "40"]
    args += ["--max-epochs", "3", "--no-pruning", *FAST]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
    )
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.time() + 240
    state = optuna.trial.TrialState
    two_done = lambda trials: sum(t.state == state.COMPLETE for t in trials) >= 2  # noqa: E731
    assert trials_when(storage, two_done, deadline, every=1.0), "the search never finished two trials"
    trials_when(storage, lambda trials: any(t.state == state.RUNNING for t in trials), deadline, every=0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    before = {
        t.number: (t.value, t.params)
        for t in optuna.load_study(study_name="autotransfer", storage=storage).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert (out / "leaderboard.csv").is_file()
    n = len(optuna.load_study(study_name="autotransfer", storage=storage).trials)
    cli(*plugin, *search, "--n-trials", str(n + 1), "--max-epochs", "3", "--no-pruning", *FAST)
    after = optuna.load_study(study_name="autotransfer", storage=storage).trials
    for number, kept in before.items():
        assert (after[number].value, after[number].params) == kept
    assert after[-1].state == optuna.trial.TrialState.COMPLETE and len(after) > n
    # the trial Ctrl-C stopped ran again on resume, with the parameters it had (Ctrl-C may come while
    # it was still sampling: the rest are sampled again), like a killed worker's
    interrupted = [
        t for t in after[:n] if t.state == optuna.trial.TrialState.FAIL and "fail_reason" not in t.user_attrs
    ]
    assert interrupted, [(t.number, t.state) for t in after[:n]]
    for t in interrupted:
        again = [r for r in after if r.user_attrs.get("retry_of") == t.number]
        assert len(again) == 1 and again[0].state.is_finished()
        assert t.params.items() <= again[0].params.items()


OOM_PLUGIN = """
import torch
from autotransfer import hookimpl
from autotransfer.specs import StrategySpec


def needs_small_batches(model, params, context):
    from autotransfer.strategy import fine_tune_plan
    plan = fine_tune_plan(model, context.n_groups, {})

    def extra_loss(model, source, extras, progress):
        if len(source) > 16:  # what a GPU does when a batch does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return source.sum() * 0

    plan.extra_loss = extra_loss
    return plan


@hookimpl
def register_strategies(register):
    register(StrategySpec(name="small-batches", description="fits 16 examples", prepare=needs_small_batches))
"""


@pytest.mark.parametrize("batch,state", [(32, "COMPLETE"), (64, "FAIL")])
def test_out_of_memory_retries_once_with_half_the_micro_batch(digits, tmp_path, batch, state):
    from autotransfer.config import SearchConfig
    from autotransfer.engine import run_search

    plugin = tmp_path / "oom_strategy.py"
    plugin.write_text(OOM_PLUGIN)
    out = tmp_path / "o"
    run_search(
        SearchConfig(
            data=str(digits),
            output=str(out),
            plugins=[str(plugin)],
            strategies=["small-batches"],
            backbones=["tf_efficientnet_lite0"],
            image_size=32,
            n_trials=1,
            max_epochs=1,
            batch_sizes=(batch,),
            reference=False,
            quiet=True,
        )
    )
    trial = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}").trials[0]
    assert trial.state.name == state
    assert trial.user_attrs["oom_retry_micro_batch"] == batch // 2
    assert trial.params.get("batch_size", batch) == batch  # the same batch, accumulated over two halves
    if state == "FAIL":
        assert trial.user_attrs["fail_reason"].startswith("out of memory even at half the micro-batch")
    else:
        assert trial.user_attrs["micro_batch"] == batch // 2


@pytest.mark.parametrize(
    "args,words,command",
    [
        (["search", "DATA", "--n-trials", "abc"], ["--n-trials", "'abc'", "integer"], "search"),
        (["search", "DATA", "--no-such-option"], ["--no-such-option"], "search"),
        (["search", "DATA", "--n-trial", "3"], ["--n-trial", "did you mean", "'--n-trials'"], "search"),
        (["search", "DATA", "--n-trials"], ["--n-trials", "requires an argument"], "search"),
        (["search"], ["missing argument", "DATA"], "search"),
        (["search", "DATA", "--heartbeat", "1"], ["--heartbeat", "1"], "search"),
        (["serach", "DATA"], ["serach", "did you mean 'search'"], ""),
        (["--no-such-option", "search", "DATA"], ["--no-such-option"], ""),
        (["demo", "cifar", "out"], ["cifar", "digits"], "demo"),
    ],
    ids=[
        "wrong type",
        "unknown option",
        "misspelt option",
        "no value",
        "no argument",
        "out of range",
        "misspelt command",
        "unknown group option",
        "not a choice",
    ],
)
def test_usage_mistakes_are_one_error_line_with_exit_code_2(args, words, command):
    """click's own errors (a value of the wrong type, an unknown option or command, a missing
    argument) print as one line that points to --help, as every other mistake does: no Usage block."""
    result = cli_subprocess(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert lines[0].endswith(f"autotransfer.cli{' ' * bool(command)}{command} --help')"), lines[0]
    assert "Usage" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["search", "--help"], ["predict", "-h"]])
def test_help_still_shows_usage(args):
    result = cli_subprocess(*args, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: ") and "Options:" in result.stdout
    if "search" in args:
        assert "--n-trials" in result.stdout and "--budget" in result.stdout


def test_no_command_shows_the_help():
    result = cli_subprocess(timeout=60)
    assert "Usage: " in result.stderr + result.stdout and "Commands:" in result.stderr + result.stdout
    assert "error" not in result.stderr
