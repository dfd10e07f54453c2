"""Model selection without target labels, for searches given unlabelled target-domain data.

The score of every trial in such a search (adapted or not, so they compare) is

    score = (source validation accuracy + IM) / 2,   IM = [H(mean p) - mean H(p)] / log C

where p are the model's predicted class distributions on unlabelled target inputs and H is
entropy. IM (information maximisation) is high when target predictions are confident *and*
spread over the classes; it falls when the model is unsure on the target or collapses onto a few
classes, the two usual failures of adaptation. Source accuracy keeps the task honest. Neither
term reads a target label; ``--target-eval`` labels are reported beside, never optimised.
"""

from __future__ import annotations

import math

import torch


def information_maximization(logits: torch.Tensor) -> float:
    probs = logits.float().softmax(1)
    n_classes = probs.shape[1]
    eps = 1e-8
    mean_entropy = -(probs * (probs + eps).log()).sum(1).mean()
    marginal = probs.mean(0)
    marginal_entropy = -(marginal * (marginal + eps).log()).sum()
    return ((marginal_entropy - mean_entropy) / math.log(n_classes)).item()


def label_free_score(source_accuracy: float, target_logits: torch.Tensor) -> tuple[float, dict]:
    im = information_maximization(target_logits)
    return (source_accuracy + im) / 2, {"target_im": im}


METRIC = "label-free score"
