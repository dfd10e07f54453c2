"""What a search leaves in its output folder: leaderboard.csv, best.json and model/."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import optuna

from . import __version__
from .export import CONFIG, WEIGHTS, load_model, write_model

LEADERBOARD_COLUMNS = [
    "number",
    "state",
    "backbone",
    "strategy",
    "value",
    "epochs_run",
    "duration_s",
    "params",
    "fail_reason",
    "reference",
]


def leaderboard_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        reason = t.user_attrs.get("fail_reason")
        if t.state == optuna.trial.TrialState.FAIL and reason is None:
            reason = "interrupted (Ctrl-C or the worker died)"
        if t.state == optuna.trial.TrialState.PRUNED and reason is None:
            reason = f"pruned after epoch {t.user_attrs.get('epochs_run', '?')}"
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "backbone": t.user_attrs.get("backbone", t.params.get("backbone")),
                "strategy": t.user_attrs.get("strategy", t.params.get("strategy")),
                "value": t.value
                if t.value is not None
                else (max(t.intermediate_values.values()) if t.intermediate_values else None),
                "epochs_run": t.user_attrs.get("epochs_run"),
                "duration_s": t.user_attrs.get("duration_s"),
                "params": json.dumps(t.params, sort_keys=True),
                "fail_reason": reason,
                "reference": bool(t.user_attrs.get("reference")),
            }
        )
    return rows


def write_leaderboard(study: optuna.Study, path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(leaderboard_rows(study), columns=LEADERBOARD_COLUMNS)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def transfer_verdict(study: optuna.Study) -> dict:
    """Did transfer beat the random-init reference on validation?"""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    scratch = [t.value for t in complete if t.user_attrs.get("reference")]
    transfer = [t.value for t in complete if not t.user_attrs.get("reference")]
    if not scratch or not transfer:
        return {
            "scratch_val_metric": max(scratch) if scratch else None,
            "transfer_helped": None,
            "verdict": "no random-init reference finished, so transfer was not checked against scratch",
        }
    best_scratch, best_transfer = max(scratch), max(transfer)
    helped = best_transfer > best_scratch
    margin = best_transfer - best_scratch
    verdict = (
        f"transfer helped: best transferred model {best_transfer:.4f} against {best_scratch:.4f} "
        f"from scratch (+{margin:.4f})"
        if helped
        else f"transfer did NOT help: training from scratch reached {best_scratch:.4f}, the best "
        f"transferred model {best_transfer:.4f}; prefer the scratch model or try other backbones"
    )
    return {"scratch_val_metric": best_scratch, "transfer_helped": helped, "verdict": verdict}


def finalize_best(search) -> dict | None:
    import torch

    from .train import count, take

    study, out = search.study, search.out
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    checkpoint = search.checkpoints / f"trial-{best.number}.safetensors"
    model_dir = out / "model"
    staging = out / "model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    if checkpoint.is_file():
        info = json.loads((search.checkpoints / f"trial-{best.number}.json").read_text())
        staging.mkdir(parents=True)
        shutil.copyfile(checkpoint, staging / WEIGHTS)
    else:
        # the best trial ran elsewhere (another worker): train its configuration again here
        fixed = optuna.trial.FixedTrial(best.params, number=best.number)
        trainer, info = search.build_trial(fixed, best.user_attrs.get("reference"))
        trainer.fit()
        model = trainer.plan.export(trainer.model) if trainer.plan.export else trainer.model
        write_model(staging, model, {})
    config = {
        "autotransfer_version": __version__,
        "backbone": info["backbone"],
        "strategy": info["strategy"],
        "task": search.task.name,
        "modality": search.modality,
        "classes": search.dataset.classes,
        "preprocessing": info["preprocessing"],
        "trial": best.number,
        "params": best.params,
    }
    (staging / CONFIG).write_text(json.dumps(config, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.replace(model_dir)

    loaded = load_model(str(model_dir), device=str(search.device), plugins=search.config.plugins)
    test_metric = None
    n_test = len(search.split["test"])
    if n_test:
        stream = search.streams(info["preprocessing"], names=("test",))["test"]
        correct = 0
        with torch.no_grad():
            for start in range(0, count(stream.inputs), 256):
                index = torch.arange(start, min(count(stream.inputs), start + 256), device=search.device)
                x = search.dataset.prepare(take(stream.inputs, index), info["preprocessing"], train=False)
                correct += (loaded.model(x).argmax(1) == stream.labels[index]).sum().item()
        test_metric = correct / n_test
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    result = {
        "trial": best.number,
        "backbone": info["backbone"],
        "strategy": info["strategy"],
        "params": best.params,
        "metric": search.metric,
        "val_metric": best.value,
        "test_metric": test_metric,
        "test_metric_name": search.task.metric,
        **{
            key: best.user_attrs[key]
            for key in ("source_val_accuracy", "target_im", "target_accuracy")
            if key in best.user_attrs
        },
        "n_train": len(search.split["train"]),
        "n_val": len(search.split["val"]),
        "n_test": n_test,
        **transfer_verdict(study),
        "trials": {s.lower(): states.count(s) for s in sorted(set(states))},
        "device": str(search.device),
        "environment": environment(search.device),
    }
    if not n_test:
        result["note"] = "no test split: every class has fewer than 3 examples"
    (out / "best.json").write_text(json.dumps(result, indent=2))
    for stale in search.checkpoints.glob("trial-*"):
        if not stale.name.startswith(f"trial-{best.number}."):
            stale.unlink(missing_ok=True)
    return result


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
