"""What a search's trials say, as a table and as a verdict: leaderboard.csv (one row a trial), and
whether transfer beat the random-init reference at equal cost."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import optuna

from .. import __version__

LEADERBOARD_COLUMNS = [
    "number",
    "state",
    "backbone",
    "strategy",
    "value",
    "epochs_run",
    "best_epoch",
    "duration_s",
    "predicted_s",
    "stopped",
    "params",
    "origin",
    "fail_reason",
    "reference",
]


def origin(attrs: dict) -> str:
    """Where a trial's parameters came from, when not from the sampler."""
    if attrs.get("portfolio"):
        return f"portfolio ({attrs['portfolio']})"
    if attrs.get("explore"):
        return "first look"
    if "promoted" in attrs:
        return f"next size up from #{attrs['promoted']}"
    return ""


def stated_reason(attrs: dict) -> str | None:
    """Why a trial ended without a result or early, where the trial said so itself (skipped before it
    ran, failed, stopped for not learning); the leaderboard and the progress line both show it."""
    return attrs.get("skipped") or attrs.get("fail_reason") or attrs.get("not_learning")


def _reason(t: optuna.trial.FrozenTrial) -> str | None:
    attrs = t.user_attrs
    reason = stated_reason(attrs)
    if t.state == optuna.trial.TrialState.FAIL and reason is None:
        reason = "interrupted (Ctrl-C or the worker died)"
    if t.state == optuna.trial.TrialState.PRUNED and reason is None:
        reason = (
            f"stopped by the budget before epoch {attrs.get('epochs_run', 0) + 1} ended"
            if attrs.get("stopped")
            else f"pruned after epoch {attrs.get('epochs_run', '?')}"
        )
    return reason


def leaderboard_rows(study: optuna.Study) -> list[dict]:
    """One row per trial that ran or was decided (trials still queued are not trials yet)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        attrs = t.user_attrs
        value = t.value
        if value is None and t.intermediate_values:
            value = max(t.intermediate_values.values())
        rows.append(
            {
                "number": t.number,
                "state": "SKIPPED" if attrs.get("skipped") else t.state.name,
                "backbone": attrs.get("backbone", t.params.get("backbone")),
                "strategy": attrs.get("strategy", t.params.get("strategy")),
                "value": value,
                "epochs_run": attrs.get("epochs_run"),
                "best_epoch": attrs.get("best_epoch"),
                "duration_s": attrs.get("duration_s"),
                "predicted_s": attrs.get("predicted_s"),
                "stopped": attrs.get("stopped"),
                "params": json.dumps(t.params, sort_keys=True),
                "origin": origin(attrs),
                "fail_reason": _reason(t),
                "reference": bool(attrs.get("reference")),
            }
        )
    return rows


def write_leaderboard(study: optuna.Study, path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(leaderboard_rows(study), columns=LEADERBOARD_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def transfer_verdict(study: optuna.Study) -> dict:
    """Did transfer beat the random-init reference on validation, at equal cost?"""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    references = [t for t in complete if t.user_attrs.get("reference")]
    transfer = [t for t in complete if not t.user_attrs.get("reference")]
    plan = study.user_attrs.get("reference") or {}
    if not references or not transfer:
        capped = [t for t in trials if t.user_attrs.get("reference") and t.user_attrs.get("stopped")]
        if plan.get("skipped"):
            why = f"no random-init reference ran: {plan['skipped']}"
        elif not (study.user_attrs.get("config") or {}).get("reference", True):
            why = "no random-init reference: turned off (--no-reference)"
        elif not transfer:
            why = "no transfer trial completed"
        elif capped:
            why = (
                f"the random-init reference was stopped by {capped[0].user_attrs['stopped']} "
                f"({plan.get('cap_s', 0.0):.1f} s) before its first epoch ended: no verdict at equal cost"
            )
        else:
            why = "no random-init reference finished (it runs after a few transfer trials, if time allows)"

        return {
            "scratch_val_metric": references[0].value if references else None,
            "transfer_helped": None,
            "verdict": why,
            "reference": plan or None,
        }
    best_scratch, best_transfer = max(t.value for t in references), max(t.value for t in transfer)
    seconds, ran = (references[0].user_attrs.get(key) for key in ("duration_s", "epochs_run"))
    # the median its allowance was planned from (finished transfer trials, pruned ones included)
    median = plan.get("median_transfer_s")
    if median is None:
        median = statistics.median(t.user_attrs.get("duration_s", 0.0) for t in transfer)
    allowance = f" of its allowance of {plan['cap_s']:.1f} s" if "cap_s" in plan else ""
    cost = (
        (
            f" at equal cost (the reference trained {ran} epoch{'' if ran == 1 else 's'} in "
            f"{seconds:.1f} s{allowance}; the median transfer trial took {median:.1f} s)"
        )
        if seconds is not None
        else ""
    )
    if best_transfer > best_scratch:
        verdict = (
            f"transfer helped: best transferred model {best_transfer:.4f} against {best_scratch:.4f} "
            f"from random weights (+{best_transfer - best_scratch:.4f}){cost}"
        )
    else:
        verdict = (
            f"transfer did NOT help: training from random weights reached {best_scratch:.4f}, the best "
            f"transferred model {best_transfer:.4f}{cost}; train from random weights or try other backbones"
        )
    return {
        "scratch_val_metric": best_scratch,
        "transfer_helped": best_transfer > best_scratch,
        "verdict": verdict,
        "reference": plan or None,
    }


def environment(device) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "autotransfer": __version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
