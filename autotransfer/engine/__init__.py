"""The search machinery, one job a module:

- ``problem``: the task, its data and split, the candidates, the encoded streams (no study)
- ``candidates``: which backbones and strategies a search considers, checked before any trial
- ``study``: the Optuna study: storage, the saved split and settings, trial counts
- ``space`` and ``trial``: sampled parameters to a ready trainer (no study)
- ``cost``, ``budget`` and ``sampler``: what a trial costs, the clock, cost-aware sampling
- ``first_trials``: warm starts and the bounded random-init reference
- ``objective``: one trial inside the study (predict, shrink or skip, train, record)
- ``finalize``, ``results``: the best model exported and tested once; leaderboard and verdict
- ``progress``: what the user sees; ``rank``: LogME; ``workers``: several processes on one study
- ``run``: the search, put together
"""

from __future__ import annotations


def __getattr__(name: str):
    # `from autotransfer.engine import run_search` without importing Optuna when config imports budget
    if name in ("run_search", "SearchResult", "Search"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
