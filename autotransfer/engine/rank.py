"""Rank candidate backbones before training with LogME (You et al., 2021).

LogME is the log marginal evidence of a Bayesian linear model from a backbone's frozen features to
one-hot labels, maximised over its prior and noise precisions: cheap (one forward pass over the
training split, whose features the probe trials then reuse from the cache) and a fair guide
to which backbone transfers best. The search uses it to order its first trials, never to filter:
such scores disagree across setups.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """Mean over classes of the per-sample log evidence; higher is better."""
    f = features.astype(np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        projected = u.T @ y
        projected_sq = projected**2
        residual_base = (y**2).sum() - projected_sq.sum()
        for _ in range(max_iter):
            gamma = (beta * sigma / (alpha + beta * sigma)).sum()
            m_sq = (beta**2 * sigma * projected_sq / (alpha + beta * sigma) ** 2).sum()
            residual = (alpha**2 * projected_sq / (alpha + beta * sigma) ** 2).sum() + residual_base
            new_alpha = gamma / (m_sq + 1e-12)
            new_beta = (n - gamma) / (residual + 1e-12)
            converged = abs(new_alpha - alpha) / alpha < 1e-5 and abs(new_beta - beta) / beta < 1e-5
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - n / 2 * np.log(2 * np.pi)
            - beta / 2 * residual
            - alpha / 2 * m_sq
            - 0.5 * np.log(alpha + beta * sigma).sum()
        )
        if d > n:  # singular directions contribute the prior only
            evidence -= 0.5 * (d - n) * np.log(alpha)
        evidences.append(evidence / n)
    return float(np.mean(evidences))


@dataclass
class Ranked:
    backbone: str
    logme: float
    seconds: float
    n: int


def rank_backbones(problem, probe, size=None, max_examples: int = 2000) -> list[Ranked]:
    """LogME of every candidate backbone on the problem's training split, best first: pooled features
    through ``probe`` (the probe strategy's frozen backbone), at ``size`` when resolution is searched.
    The features land in the search's activation cache, where the probe trials reuse them."""
    import optuna

    from ..specs import PROBE
    from .first_trials import warm_params
    from .trial import build_trial

    out = []
    for spec in problem.backbones:
        started = time.time()
        params = warm_params(problem, probe, spec.name, size, epochs=1)
        params |= {f"{probe.name}.lr": probe.lr_range[0], "batch_size": max(problem.batch_size_choices())}
        if problem.input_sizes and problem.task.size_key not in params:
            params[problem.task.size_key] = problem.input_sizes[0]
        trainer, _ = build_trial(problem, optuna.trial.FixedTrial(params), role=PROBE)
        features = trainer.pooled_features(trainer.train)
        labels = trainer.train.labels
        features, labels = features[:max_examples].float().cpu().numpy(), labels[:max_examples].cpu().numpy()
        out.append(Ranked(spec.name, logme(features, labels), round(time.time() - started, 2), len(labels)))
    return sorted(out, key=lambda r: r.logme, reverse=True)
