"""The end of a search, in steps: the best trial's model written to ``model/`` (from its
checkpoint, or trained again where the checkpoint is on another machine), tested once on the
held-out split, and ``best.json`` written; stale checkpoints removed."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from .. import __version__
from ..errors import UserError
from ..export import CONFIG, WEIGHTS, load_model, write_model
from .problem import Problem
from .results import environment, transfer_verdict
from .study import SearchStudy


def finalize(
    problem: Problem,
    study: SearchStudy,
    seconds: float | None = None,
    price: Callable[[optuna.trial.FrozenTrial], float] | None = None,
) -> dict | None:
    """Export and test the study's best trial (with --ensemble, the ensemble of the best trials when
    it beats it on validation, and when its other members' exports, ``price(trial)`` seconds each,
    fit in what is left of ``seconds``); None when no trial completed."""
    started = time.time()
    best = study.best()
    if best is None:
        return None
    out = problem.config.out_dir
    info = export_model(problem, best, out / "checkpoints", out / "model")
    probs = test_probs(problem, out / "model")
    record = best_record(problem, study.study, best, info, accuracy(problem, probs))
    # the best trial's own numbers, whether or not an ensemble replaces them at the top level
    record["single"] = {k: record[k] for k in ("trial", "val_metric", "test_metric")}
    keep = {best.number}
    if problem.config.ensemble:
        left = None if seconds is None else seconds - (time.time() - started)
        chosen = export_ensemble(problem, study, best, probs, out, left, price)
        if chosen is not None:
            record.update(chosen)
            keep |= {m["trial"] for m in chosen["ensemble"].get("members", [])}
    (out / "best.json").write_text(json.dumps(record, indent=2))
    remove_stale_checkpoints(out / "checkpoints", keep)
    return record


def export_ensemble(
    problem: Problem, study: SearchStudy, best, best_probs, out: Path, seconds: float | None, price
) -> dict | None:
    """The greedy ensemble of the best trials, written over ``model/`` when its validation accuracy is
    above the best trial's; what best.json then says (None: no ensemble, and ``model/`` stays the best
    trial)."""
    from . import ensemble

    if problem.inputs.target is not None:  # trials are scored without target labels: not an accuracy
        return {"ensemble": {"exported": False, "why": "trials are scored on a label-free criterion"}}
    members = ensemble.library(study.trials(states=(optuna.trial.TrialState.COMPLETE,)), out / "checkpoints")
    if seconds is not None and price is not None:  # the members whose export fits what is left
        members = ensemble.affordable(members, best.number, seconds, price)
    if not members or members[0].trial.number != best.number:
        why = (
            "the best trial's weights and validation outputs are not on this machine (another worker ran it)"
        )
        return {"ensemble": {"exported": False, "why": why}}
    if len(members) < 2:
        return {"ensemble": {"exported": False, "why": "fewer than two trials to choose from"}}
    chosen, val = ensemble.select(members, split_labels(problem, "val"))
    # above on accuracy: ensembles that only tied it (a higher likelihood) tested no better (README)
    if len(chosen) < 2 or not val > best.value:
        return {
            "ensemble": {
                "exported": False,
                "why": f"no ensemble beat the best trial on validation accuracy ({val:.4f})",
            }
        }

    rows, total = write_ensemble(problem, chosen, best.number, best_probs, out)
    return {
        "val_metric": val,
        "test_metric": accuracy(problem, total),
        "ensemble": {
            "exported": True,
            "members": [
                {
                    "trial": number,
                    "weight": weight,
                    "backbone": info["backbone"],
                    "strategy": info["strategy"],
                }
                for _, weight, number, info in rows
            ],
        },
    }


def write_ensemble(problem: Problem, chosen: list, best_number: int, best_probs, out: Path):
    """``model/`` replaced by the ensemble of ``chosen`` (each member exported and tested); returns
    the rows (folder, weight, trial, record) and the ensemble's test probabilities."""
    from . import ensemble

    staging = out / "model.ensemble.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    total, rows = None, []
    for member in chosen:
        folder = f"member-{member.trial.number}"
        if member.trial.number == best_number:
            shutil.copytree(out / "model", staging / folder)
            info, probs = json.loads((out / "model" / CONFIG).read_text()), best_probs
        else:
            info = export_model(problem, member.trial, out / "checkpoints", staging / folder)
            probs = test_probs(problem, staging / folder)
        if probs is not None:
            total = member.weight * probs if total is None else total + member.weight * probs
        rows.append((folder, round(member.weight, 4), member.trial.number, info))
    ensemble.write_config(  # the best trial's fields (its first member), and the members
        staging,
        [(folder, weight, number) for folder, weight, number, _ in rows],
        json.loads((out / "model" / CONFIG).read_text()),
    )
    shutil.rmtree(out / "model", ignore_errors=True)
    staging.replace(out / "model")
    return rows, total


def export_model(
    problem: Problem, best: optuna.trial.FrozenTrial, checkpoints: Path, model_dir: Path
) -> dict:
    """``model_dir`` holds the best trial's weights and config, replaced atomically; returns the
    trial's record (backbone, strategy, preprocessing)."""
    checkpoint = checkpoints / f"trial-{best.number}.safetensors"
    staging = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if checkpoint.is_file():
        info = json.loads((checkpoints / f"trial-{best.number}.json").read_text())
        staging.mkdir(parents=True)
        shutil.copyfile(checkpoint, staging / WEIGHTS)
    else:
        info = retrain(problem, best, staging)
    config = {
        "autotransfer_version": __version__,
        "backbone": info["backbone"],
        "backbone_plugin": problem.host.backbone_owner(info["backbone"]),
        "strategy": info["strategy"],
        "task": problem.task.name,
        "modality": problem.modality,
        "classes": problem.dataset.classes,
        "preprocessing": info["preprocessing"],
        "trial": best.number,
        "params": best.params,
    }
    (staging / CONFIG).write_text(json.dumps(config, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.replace(model_dir)
    return info


def retrain(problem: Problem, best: optuna.trial.FrozenTrial, staging: Path) -> dict:
    """The best trial ran elsewhere (another worker): train its configuration again here."""
    from ..specs import REFERENCE
    from .trial import build_trial

    role = REFERENCE if best.user_attrs.get("reference") else ""
    registered = problem.host.registry.items["strategies"]
    wanted = best.user_attrs.get("strategy") or best.params.get("strategy")
    loaded = wanted in problem.strategy_by_name or (role and problem.role(role) is not None)
    if wanted not in registered or not loaded:
        raise UserError(
            f"the best trial (#{best.number}) used strategy {wanted!r}, which no loaded plugin "
            "registers here; "
            "load the plugin that registers it (see `autotransfer plugins`) to train its model again"
        )

    trainer, info = build_trial(problem, optuna.trial.FixedTrial(best.params, number=best.number), role)
    trainer.config.epochs = best.user_attrs.get("epochs_run") or trainer.config.epochs
    trainer.fit()
    model = trainer.plan.export(trainer.model) if trainer.plan.export else trainer.model
    write_model(staging, model, {})
    return {"backbone": info.backbone, "strategy": info.strategy, "preprocessing": info.preprocessing}


def split_labels(problem: Problem, name: str):
    """The labels of one split ("val", "test"), in the split's order."""
    import torch

    return torch.tensor(problem.inputs.dataset.labels)[torch.tensor(problem.split[name], dtype=torch.long)]


def accuracy(problem: Problem, probs) -> float | None:
    """Accuracy on the held-out test split of its predicted probabilities (None: no test split)."""
    if probs is None:
        return None
    labels = split_labels(problem, "test")
    return int((probs.argmax(1).cpu() == labels).sum()) / len(labels)


def test_probs(problem: Problem, model_dir: Path):
    """Probabilities of the exported model (as ``predict`` loads it) on the held-out test split, only
    its examples decoded (the search's decoded inputs are gone by now)."""
    test = problem.split["test"]
    if not test:
        return None
    loaded = load_model(str(model_dir), device=str(problem.device), host=problem.host)
    return loaded.probabilities(problem.dataset, test).cpu()


def best_record(
    problem: Problem, study: optuna.Study, best: optuna.trial.FrozenTrial, info: dict, test: float | None
) -> dict:
    """What best.json says."""
    states = [
        t.state.name for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING
    ]
    n_test = len(problem.split["test"])
    record = {
        "trial": best.number,
        "backbone": info["backbone"],
        "strategy": info["strategy"],
        "params": best.params,
        "metric": problem.metric,
        "val_metric": best.value,
        "test_metric": test,
        "test_metric_name": problem.task.metric,
        **{
            key: best.user_attrs[key]
            for key in ("source_val_accuracy", "target_im", "target_accuracy", "best_epoch")
            if key in best.user_attrs
        },
        "n_train": len(problem.split["train"]),
        "n_val": len(problem.split["val"]),
        "n_test": n_test,
        **transfer_verdict(study),
        "trials": {s.lower(): states.count(s) for s in sorted(set(states))},
        "device": str(problem.device),
        "environment": environment(problem.device),
    }
    if not n_test:
        record["note"] = "no test split: every class has fewer than 3 examples"
    return record


def remove_stale_checkpoints(checkpoints: Path, keep: set[int]) -> None:
    for stale in checkpoints.glob("trial-*"):
        if not any(stale.name.startswith(f"trial-{number}.") for number in keep):
            stale.unlink(missing_ok=True)
