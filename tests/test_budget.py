"""The budget is a promise: a search ends on time even when one trial alone would take longer, a
trial the budget stops keeps its best epoch, the reference stays within its share, resolution is a
searched and recorded parameter, and progress degrades to plain lines without a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import cli, interruptible, queued_search, read_json, write_slow_plugin

from autotransfer.engine.budget import DEFAULT_BUDGET_S, grace, parse_duration
from autotransfer.errors import UserError

LITE0 = ["--backbones", "tf_efficientnet_lite0", "--quiet"]
TINY = ["--image-size", "32", *LITE0]
PROBES = ["--strategies", "linear-probe", "--no-reference", *TINY]


def study_of(out):
    return optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")


def slow_search(digits, tmp_path, seconds_per_example: float, budget: int, after: int = 0):
    """The slow plugin's strategy searched on digits at 32 px under ``budget`` seconds, as a user runs
    it: (the output folder, the seconds the command took, its completed process)."""
    plugin = write_slow_plugin(tmp_path / "slow_plugin.py", seconds_per_example, after=after)
    out = tmp_path / "out"
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "autotransfer", "--plugin", str(plugin), "search", str(digits), "-o", str(out)]
        + ["--budget", f"{budget}s", "--strategies", "slow-probe", "--image-size", "32"]
        + ["--max-epochs", "10", "--no-reference", *LITE0],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, time.time() - started, result


def test_a_small_budget_ends_on_time_and_a_stopped_trial_keeps_its_best_epoch(digits, tmp_path):
    # 0.06 s an example: about 13 s an epoch on 220 training examples, which the search cannot know,
    # nor see in the trial's first batches: the machine gets that busy after them
    budget = 30  # room for start-up on a loaded 2-core machine; one trial alone would take longer
    out, took, result = slow_search(digits, tmp_path, 0.06, budget, after=8)
    assert result.returncode == 0, result.stderr
    # the first trial's epochs are fitted to a share of the budget at the predicted cost (a probe's, a
    # fraction of a second an epoch); at 13 s an epoch two of them outrun the budget. The whole command
    # ended within its budget
    assert took <= budget + grace(budget), took
    trials = [t for t in study_of(out).trials if t.state == optuna.trial.TrialState.COMPLETE]
    stopped = [t for t in trials if t.user_attrs.get("stopped") == "budget"]
    assert stopped, [(t.number, t.user_attrs) for t in study_of(out).trials]
    for t in stopped:
        assert t.user_attrs["epochs_run"] < t.params["epochs"]
        # its score is its best epoch's, and that epoch is the one recorded as kept
        assert t.value == max(t.intermediate_values.values())
        assert t.intermediate_values[t.user_attrs["best_epoch"]] == t.value
    board = pd.read_csv(out / "leaderboard.csv")
    assert "budget" in set(board.stopped.dropna())
    assert board.predicted_s.notna().all() and board.duration_s.notna().all()
    best = read_json(out / "best.json")
    assert best["single"]["val_metric"] == max(t.value for t in trials)


def test_a_trial_slower_than_its_price_ends_at_the_epochs_its_first_batches_say_fit(digits, tmp_path):
    # 0.06 s an example from the first batch: about 13 s an epoch where a probe's fraction of a second
    # was priced; ten epochs planned on that price, one fits the budget
    budget = 30
    out, took, result = slow_search(digits, tmp_path, 0.06, budget)
    assert result.returncode == 0, result.stderr
    assert took <= budget + grace(budget)
    first = study_of(out).trials[0]
    paced = first.user_attrs["paced"]
    # measured, not priced: the epoch took many times what its parts said
    assert paced["epoch_s"] > 10 * first.user_attrs["cost"]["epoch"]
    # it ended at the epochs that fit, whole, its schedule with them: not cut by the budget mid-epoch
    assert first.state == optuna.trial.TrialState.COMPLETE and not first.user_attrs.get("stopped")
    assert first.user_attrs["epochs_run"] == paced["epochs"] < first.params["epochs"] == paced["planned"]
    assert first.user_attrs["duration_s"] < 0.6 * budget


def test_a_trial_whose_first_epoch_cannot_end_is_skipped_on_its_first_batches(digits, tmp_path):
    # 0.15 s an example: about 33 s an epoch, priced at a fraction of a second; the budget is 30 s
    budget = 30
    out, took, _ = slow_search(digits, tmp_path, 0.15, budget)
    assert took <= budget + grace(budget)
    board = pd.read_csv(out / "leaderboard.csv")
    first = board.iloc[0]
    assert first.state == "SKIPPED" and "measured over its first" in first.fail_reason
    # stopped on its first batches, not at the deadline: its whole trial at that pace is its price
    assert first.duration_s < 0.7 * first.predicted_s
    paced = study_of(out).trials[0].user_attrs["paced"]
    assert paced["epoch_s"] > 20.0 and paced["actual"] > 10 * paced["predicted"]


def test_n_trials_ends_a_search_before_its_budget(digits, tmp_path):
    """--n-trials and --budget together: whichever comes first ends the search."""
    out = tmp_path / "out"
    started = time.time()
    cli("search", digits, "-o", out, "--budget", "10m", "--n-trials", "3", *PROBES)
    took = time.time() - started
    counted = [
        t
        for t in study_of(out).trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        and not t.user_attrs.get("skipped")
    ]
    assert len(counted) == 3 and took < 300
    assert read_json(out / "best.json")["test_metric"] is not None


def test_the_reference_stays_within_its_share_at_the_best_trials_resolution(digits, tmp_path):
    out = tmp_path / "out"
    budget = 90
    cli(
        "search",
        digits,
        "-o",
        out,
        "--budget",
        f"{budget}s",
        "--n-trials",  # the reference is planned after three transfer trials: five end the search sooner
        "5",
        "--max-epochs",
        "4",
        "--strategies",
        "linear-probe,full-finetune",
        "--no-ensemble",
        *LITE0,
    )
    study = study_of(out)
    plan = study.user_attrs["reference"]
    references = [t for t in study.trials if t.user_attrs.get("reference")]
    if plan.get("skipped"):  # one epoch did not fit its allowance: then it must not have run
        assert not references
        assert "no random-init reference ran" in read_json(out / "best.json")["verdict"]
        return
    assert len(references) == 1
    reference = references[0]
    cap = reference.user_attrs["cost_cap_s"]
    # the median transfer trial's cost, raised to 5% of the budget at least, 10% at most
    assert cap <= 0.1 * budget + 1e-6 and cap <= max(plan["median_transfer_s"], 0.05 * budget) + 1e-6
    # stopped at the next batch after its cap: a batch and the bookkeeping after it, no more
    assert reference.user_attrs["duration_s"] <= cap * 1.15 + 1.0
    transfer = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("reference")
    ]
    best_transfer = max(transfer, key=lambda t: t.value)
    assert reference.params["image_size"] == best_transfer.params["image_size"]
    verdict = read_json(out / "best.json")["verdict"]
    if reference.state == optuna.trial.TrialState.COMPLETE:
        assert "at equal cost" in verdict and f"allowance of {plan['cap_s']:.1f} s" in verdict
    else:  # its allowance ended before its first epoch did
        assert "stopped by the reference's cap" in verdict


def test_scratch_named_by_the_user_is_searched_not_bounded(digits, tmp_path):
    """--strategies scratch: training from random weights searched like any strategy, with the
    search's trials and epochs, not the bounded reference."""
    out = tmp_path / "out"
    cli("search", digits, "-o", out, "--strategies", "scratch", "--n-trials", "2", "--max-epochs", "2", *TINY)
    study = study_of(out)
    assert [t.params["strategy"] for t in study.trials] == ["scratch", "scratch"]
    assert not any(t.user_attrs.get("reference") or t.user_attrs.get("cost_cap_s") for t in study.trials)
    assert "reference" not in study.user_attrs  # no reference planned beside it


def reference_study(tmp_path, reference_state, reference_attrs: dict):
    """A study as a search leaves it: three transfer trials (10, 30 and 10 s), one pruned (40 s), and
    the reference, planned from the median of all four (20 s; of the completed ones alone, 10 s)."""
    tmp_path.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    for value, seconds in ((0.9, 10.0), (0.8, 30.0), (0.85, 10.0)):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"duration_s": seconds}))
    study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"duration_s": 40.0})
    )
    if reference_state is None:  # a search run with --no-reference
        study.set_user_attr("config", {"reference": False})
        return study
    study.set_user_attr("reference", {"cap_s": 20.0, "median_transfer_s": 20.0, "epochs": 2})
    attrs = {"reference": "scratch", "cost_cap_s": 20.0, **reference_attrs}
    value = 0.5 if reference_state == optuna.trial.TrialState.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=reference_state, value=value, user_attrs=attrs))
    return study


def test_the_verdict_states_the_references_allowance_or_that_it_ran_out(tmp_path):
    from autotransfer.engine.results import transfer_verdict

    done = {"duration_s": 19.8, "epochs_run": 2}
    verdict = transfer_verdict(reference_study(tmp_path / "a", optuna.trial.TrialState.COMPLETE, done))
    assert verdict["transfer_helped"] is True
    assert (
        "2 epochs in 19.8 s of its allowance of 20.0 s; the median transfer trial took 20.0 s"
        in (verdict["verdict"])
    )
    one = {"duration_s": 9.5, "epochs_run": 1}
    verdict = transfer_verdict(reference_study(tmp_path / "one", optuna.trial.TrialState.COMPLETE, one))
    assert "the reference trained 1 epoch in 9.5 s of its allowance" in verdict["verdict"]
    capped = {"duration_s": 20.1, "stopped": "the reference's cap"}
    verdict = transfer_verdict(reference_study(tmp_path / "b", optuna.trial.TrialState.PRUNED, capped))
    assert verdict["transfer_helped"] is None
    assert "stopped by the reference's cap (20.0 s) before its first epoch ended" in verdict["verdict"]
    off = transfer_verdict(reference_study(tmp_path / "c", None, {}))
    assert off["verdict"] == "no random-init reference: turned off (--no-reference)"


def test_the_eta_of_a_trial_count_comes_from_trials_that_ran(tmp_path):
    """With --n-trials and no budget the ETA is the trials left times recent trials' predicted cost:
    a skipped trial (its whole price recorded, nothing run) or the reference does not count."""
    import io

    from autotransfer.engine.budget import Clock
    from autotransfer.engine.progress import Progress

    stream = io.StringIO()
    progress = Progress(clock=Clock.start(None), metric="accuracy", quiet=False, total=6, stream=stream)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    finished = [
        (0.8, {"predicted_s": 10.0, "duration_s": 9.0}),
        (None, {"predicted_s": 900.0, "skipped": "one epoch is predicted to take 450 s"}),
        (0.5, {"predicted_s": 300.0, "duration_s": 290.0, "reference": "scratch"}),
        (0.9, {"predicted_s": 20.0, "duration_s": 21.0}),
    ]
    for number, (value, attrs) in enumerate(finished):
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
        trial = optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)
        trial.number = number
        progress.trial_finished(study, trial)
    last = stream.getvalue().strip().splitlines()[-1]
    assert last.startswith("[trial 3 2/6]")
    assert last.endswith("ETA 0:01:20")  # 4 trials left x the median of 10 s and 20 s


def test_a_stopped_trials_line_says_what_stopped_it(tmp_path):
    """The budget or the reference's cap: the trial's line names which, in words."""
    import io

    from autotransfer.engine.budget import Clock
    from autotransfer.engine.progress import Progress

    stream = io.StringIO()
    progress = Progress(clock=Clock.start(None), metric="accuracy", quiet=False, total=4, stream=stream)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    for number, stopped in enumerate(["budget", "the reference's cap"]):
        attrs = {"stopped": stopped, "epochs_run": 2, "predicted_s": 10.0, "duration_s": 9.0}
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, value=0.5, user_attrs=attrs)
        trial.number = number
        progress.trial_finished(study, trial)
    budget, cap = stream.getvalue().strip().splitlines()[-2:]
    assert "(stopped by the budget after epoch 2)" in budget
    assert "(stopped by the reference's cap after epoch 2)" in cap


def test_resolution_is_searched_and_recorded(digits, tmp_path):
    out = tmp_path / "out"
    cli("search", digits, "-o", out, "--n-trials", "5", "--max-epochs", "2", "--no-reference", *LITE0)
    study = study_of(out)
    sizes = study.user_attrs["input_sizes"]
    # digits are 8 px: from the smallest useful size up to EfficientNet-Lite0's own 224
    assert sizes[0] == 32 and sizes[-1] == 224 and len(sizes) >= 3
    finished = [t for t in study.trials if t.state.is_finished()]
    assert all(t.params["image_size"] in sizes for t in finished)
    best = read_json(out / "best.json")
    config = read_json(out / "model" / "config.json")
    assert config["preprocessing"]["image_size"] == best["params"]["image_size"]
    assert '"image_size"' in pd.read_csv(out / "leaderboard.csv").params[0]


def test_progress_is_plain_lines_without_a_terminal(digits, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autotransfer",
            "search",
            str(digits),
            "-o",
            str(tmp_path / "out"),
            "--n-trials",
            "2",
            "--image-size",
            "32",
            "--max-epochs",
            "2",
            "--no-reference",
            "--backbones",
            "tf_efficientnet_lite0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr  # nothing redrawn
    trial_lines = [line for line in result.stderr.splitlines() if line.startswith("[trial ")]
    assert len(trial_lines) == 2
    assert all("predicted" in line and "elapsed" in line for line in trial_lines)
    assert "no time budget: the search ends after 2 trials" in result.stderr


def test_progress_draws_a_live_line_inside_trials_on_a_terminal(digits, tmp_path):
    """On a terminal a trial shows its epoch, batch, throughput, time left and the budget left."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, COLUMNS="220", TERM="xterm")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autotransfer",
            "search",
            str(digits),
            "-o",
            str(tmp_path / "out"),
            "--budget",
            "40s",
            "--image-size",
            "64",
            "--strategies",
            "full-finetune",
            "--max-epochs",
            "3",
            "--no-reference",
            "--backbones",
            "tf_efficientnet_lite0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    screen = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(controller)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen).decode("utf-8", "replace")
    assert proc.returncode == 0, text[-2000:]
    live = [line for line in re.split(r"[\r\n]", text) if "ex/s" in line]
    assert live, text[-2000:]
    assert any("epoch" in line and "batch" in line and "left" in line and "budget" in line for line in live)


@pytest.mark.parametrize("value", ["0", "-5", "10x", "5 minutes", "nan"])
def test_bad_budgets_are_one_line_errors(digits, tmp_path, value):
    result = cli("search", digits, "-o", tmp_path / "out", "--budget", value, *LITE0, expect=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --budget") and "Traceback" not in result.output


@pytest.mark.parametrize("given, said", [("60", "--budget 60s"), ("10m", "--budget 10m")])
def test_timeout_is_replaced_by_budget(digits, tmp_path, given, said):
    result = cli("search", digits, "-o", tmp_path / "out", "--timeout", given, expect=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(said)


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1.5m", 90), (45, 45)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    with pytest.raises(UserError):
        parse_duration("h")


def test_the_default_budget_is_said_at_the_start(digits, tmp_path):
    """Neither --budget nor --n-trials: the default budget is printed first (then Ctrl-C keeps all)."""
    import signal

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autotransfer",
            "search",
            str(digits),
            "-o",
            str(tmp_path / "out"),
            "--image-size",
            "32",
            "--backbones",
            "tf_efficientnet_lite0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=interruptible,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip().startswith("budget"):
            break

    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    minutes = int(DEFAULT_BUDGET_S // 60)
    assert any(f"budget 0:{minutes:02d}:00 (the default" in line for line in seen), seen


def test_a_skipped_trial_says_what_it_may_plan_of_the_time_left():
    """A user reading "40.7 s predicted, 45.6 s left" would not see why it was skipped: the reason
    names the part of the time left a trial may plan on and the margin kept back."""
    from autotransfer.engine.objective import SAFETY, too_dear

    skipped = too_dear(40.7, 45.6, SAFETY, 40.7)
    assert str(skipped) == (
        "skipped: one epoch is predicted to take 40.7 s, more than the 36.5 s it may plan of the "
        "45.6 s left for it (20% kept back for the prediction's error)"
    )
    assert skipped.predicted == 40.7
    assert "more than the 0.0 s it may plan of the 0.0 s left" in str(too_dear(3.0, -2.0, SAFETY, 3.0))


def test_a_trial_that_cannot_finish_its_epochs_is_shrunk_to_the_epochs_that_fit(digits, tmp_path):
    from autotransfer.engine.budget import TRIAL_SHARE

    budget = 40
    common = {"backbone": "tf_efficientnet_lite0", "image_size": 64, "batch_size": 32, "weight_decay": 1e-4}
    # a brisk probe first, then thirty epochs of a full fine-tune: far more than one trial may take of
    # a 40 s budget once something is found
    queued = [
        {**common, "strategy": "linear-probe", "linear-probe.lr": 0.03, "epochs": 1},
        {**common, "strategy": "full-finetune", "full-finetune.lr": 1e-3, "epochs": 30},
    ]
    started = time.time()
    _, result = queued_search(
        digits,
        tmp_path,
        queued,
        strategies=["linear-probe", "full-finetune"],
        image_size=64,
        budget=budget,
        n_trials=2,
        max_epochs=30,
    )
    assert time.time() - started <= budget + grace(budget)
    _, tune = sorted(result.study.trials, key=lambda t: t.number)[:2]
    attrs = tune.user_attrs
    # predicted before it ran: shrunk from the thirty drawn to the epochs its price fits in its share
    assert tune.params["epochs"] == attrs["epochs_shrunk_from"] == 30
    assert attrs["predicted_s"] <= TRIAL_SHARE * budget
    planned = attrs.get("continued", {}).get("from", attrs["epochs_run"])
    assert 1 <= planned < 30
    # it ran those epochs whole, its own schedule ending there: not cut off by the budget
    assert tune.state == optuna.trial.TrialState.COMPLETE and not attrs.get("stopped")
    assert sorted(tune.intermediate_values) == list(range(1, attrs["epochs_run"] + 1))
