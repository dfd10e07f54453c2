"""Ensembles of the best trials (``--ensemble``): greedy forward selection with replacement on the
validation predictions (Caruana et al., "Ensemble selection from libraries of models", ICML 2004, as
AutoGluon and Auto-sklearn use it). The library is the ENSEMBLE_LIBRARY best completed trials whose
checkpoints this machine holds; each keeps its best epoch's validation probabilities beside its
weights, so choosing costs no inference. The ensemble is exported only when it beats the single best
trial's validation accuracy; ``predict`` averages its members' probabilities with the chosen weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import optuna

#: the best trials an ensemble is chosen from (their checkpoints are kept while the search runs)
ENSEMBLE_LIBRARY = 5
#: with a budget, the most of it kept back for exporting and testing the ensemble's further members
ENSEMBLE_SHARE = 0.1
#: greedy steps (a member may be added more than once: its weight is how often it was)
ENSEMBLE_ROUNDS = 20


@dataclass
class Member:
    trial: optuna.trial.FrozenTrial
    probs: object  # torch.Tensor (n_val, classes)
    weight: float = 0.0


def outputs_path(checkpoints: Path, number: int) -> Path:
    return checkpoints / f"trial-{number}.val.safetensors"


def save_outputs(checkpoints: Path, number: int, val_logits) -> None:
    """A trial's validation probabilities at its best epoch, beside its checkpoint."""
    from safetensors.torch import save_file

    tmp = outputs_path(checkpoints, number).with_suffix(".tmp")
    save_file({"probs": val_logits.float().softmax(1).contiguous().cpu()}, str(tmp))
    tmp.replace(outputs_path(checkpoints, number))


def library(complete: list[optuna.trial.FrozenTrial], checkpoints: Path) -> list[Member]:
    """The best completed trials whose weights and validation probabilities are here, best first."""
    from safetensors.torch import load_file

    members = []
    for trial in sorted(complete, key=lambda t: -t.value):
        weights = checkpoints / f"trial-{trial.number}.safetensors"
        outputs = outputs_path(checkpoints, trial.number)
        if weights.is_file() and outputs.is_file() and (checkpoints / f"trial-{trial.number}.json").is_file():
            members.append(Member(trial, load_file(str(outputs))["probs"]))
        if len(members) == ENSEMBLE_LIBRARY:
            break
    return members


def affordable(members: list[Member], best: int, seconds: float, price) -> list[Member]:
    """The members, best first, whose exports (``price(trial)`` seconds each; the best trial's is
    done already) fit in ``seconds``."""
    fitting, spent = [], 0.0
    for member in members:
        cost = 0.0 if member.trial.number == best else price(member.trial)
        if spent + cost <= seconds:
            fitting.append(member)
            spent += cost
    return fitting


def _score(probs, labels) -> tuple[float, float]:
    """Accuracy, then the mean log-likelihood (ties of accuracy are common on a small validation set)."""
    import torch

    accuracy = int((probs.argmax(1) == labels).sum()) / max(1, len(labels))
    likelihood = torch.log(probs[torch.arange(len(labels)), labels].clamp_min(1e-12)).mean().item()
    return accuracy, likelihood


def select(members: list[Member], labels, rounds: int = ENSEMBLE_ROUNDS) -> tuple[list[Member], float]:
    """Greedy selection with replacement, starting from the best member: each round adds the member
    that most improves the averaged probabilities' score; the best ensemble seen is kept. Returns the
    members with weight > 0 (weights sum to 1) and its validation accuracy. More than one member
    only when the ensemble's score (accuracy, then likelihood) is above the first member's alone."""
    counts = [0] * len(members)
    counts[0] = 1
    total = members[0].probs.clone()
    best_counts, best_score = list(counts), _score(total, labels)
    for step in range(2, rounds + 1):
        scores = [_score((total + m.probs) / step, labels) for m in members]
        pick = max(range(len(members)), key=lambda i: scores[i])
        total, counts[pick] = total + members[pick].probs, counts[pick] + 1
        if scores[pick] > best_score:
            best_counts, best_score = list(counts), scores[pick]
    n = sum(best_counts)
    chosen = [Member(m.trial, m.probs, c / n) for m, c in zip(members, best_counts) if c]
    return chosen, best_score[0]


def write_config(model_dir: Path, members: list[tuple[str, float, int]], base: dict) -> None:
    """The ensemble's config.json: ``members`` (folder, weight, trial), and what predict needs."""
    config = {
        **base,
        "ensemble": [{"path": path, "weight": weight, "trial": trial} for path, weight, trial in members],
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
