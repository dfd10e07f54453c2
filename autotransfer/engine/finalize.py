"""The end of a search, in steps: the best trial's model written to ``model/`` (from its
checkpoint, or trained again where the checkpoint is on another machine), tested once on the
held-out split, and ``best.json`` written; stale checkpoints removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna

from .. import __version__
from ..errors import UserError
from ..export import CONFIG, WEIGHTS, load_model, write_model
from .problem import Problem
from .results import environment, transfer_verdict
from .study import SearchStudy


def finalize(problem: Problem, study: SearchStudy) -> dict | None:
    """Export and test the study's best trial; None when no trial completed."""
    best = study.best()
    if best is None:
        return None
    out = problem.config.out_dir
    info = export_model(problem, best, out / "checkpoints", out / "model")
    test = test_metric(problem, out / "model", info["preprocessing"])
    record = best_record(problem, study.study, best, info, test)
    (out / "best.json").write_text(json.dumps(record, indent=2))
    remove_stale_checkpoints(out / "checkpoints", best.number)
    return record


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


def test_metric(problem: Problem, model_dir: Path, preprocessing: dict) -> float | None:
    """Accuracy of the exported model (as ``predict`` loads it) on the held-out test split."""
    from ..training.inference import infer
    from .streams import streams

    if not problem.split["test"]:
        return None
    loaded = load_model(str(model_dir), device=str(problem.device), host=problem.host)
    stream = streams(problem, preprocessing, names=("test",))["test"]
    prepare = problem.dataset.prepare
    logits = infer(
        lambda x: loaded.model(prepare(x, preprocessing, train=False)),
        stream.inputs,
        batch_size=256,
        device=problem.device,
    )
    return int((logits.argmax(1) == stream.labels).sum()) / len(stream.labels)


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


def remove_stale_checkpoints(checkpoints: Path, keep: int) -> None:
    for stale in checkpoints.glob("trial-*"):
        if not stale.name.startswith(f"trial-{keep}."):
            stale.unlink(missing_ok=True)
