"""Benchmarks: the search against baselines, on several datasets and seeds, under one budget.

Every method but ``plain-loop`` (a hand-written loop, the reference) runs through the same engine, on
the same files, split and device; only the settings differ. A method is one entry in ``METHODS``;
adding one (or a suite naming it) is all a new baseline takes.

A suite is YAML::

    name: cpu-small
    datasets:                       # a demo (digits, mnist, bbc) or a path (relative to the suite)
      - {demo: digits, per_class: 30}
      - {path: data/flowers, name: flowers}
    seeds: [0, 1]
    budget: {n_trials: 8, time: 10m}   # per search; every method gets the same
    budgets: [30, 60, 120]          # optional: anytime curves, every method again at each time budget
    methods: [autotransfer, default-recipe, probe, random-search, top-ranked, from-scratch, plain-loop]
    recipe: {strategy: full-finetune, lr: 1e-4, batch_size: 32, weight_decay: 0.01}   # the default
    recipe_epochs: 10               # the fixed recipe's epochs
    search: {image_size: 64, max_epochs: 5, backbones: [tf_efficientnet_lite0]}   # SearchConfig fields
    compare: autotransfer           # wins, ties and losses are this method's against each other
    tie_tolerance: 0.0              # test metrics closer than this are a tie
    data_efficiency:                # optional: accuracy against labels used ("how much data do I need?")
      fractions: [0.1, 0.25, 0.5, 1.0]          # of the training split per class, or shots: [1, 5, 10]
      methods: [autotransfer, probe, from-scratch]   # the default

With ``data_efficiency`` every dataset, seed and method of that list also runs on a stratified, seeded
subset of the training split at each size; the validation and test splits are the full data's, the
same at every size (the split is drawn before the training part is shrunk), and a smaller subset is
part of every larger one. A fraction of 1.0 is the full run (shared with ``methods`` when both list
the method). ``methods: []`` runs the curves alone.

With ``budgets`` every dataset, seed and method also runs with each time budget (``budget: time`` is
ignored there): the report draws best test accuracy against the time given, says whether the subject
(``compare``) reached the best other method within one test example at each, and how far each run
went past its budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .methods import METHODS
from .render import write_benchmark_report
from .runner import run_suite
from .stats import anytime, efficiency, machine, ranks, summarise
from .suite import Suite, load_suite


def run_benchmark(
    suite_path: str | Path,
    out: str | Path | None = None,
    *,
    device: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Path, Path]:
    suite = load_suite(suite_path)
    out = Path(out or Path("benchmark-out") / suite.name)
    records = run_suite(suite, out, device=device, quiet=quiet, log=log)
    from ...engine.devices import resolve_device

    env = machine(str(resolve_device(device or suite.search.get("device", "auto"))))
    return write_benchmark_report(suite, out, records, env)


__all__ = ["METHODS", "Suite", "anytime", "efficiency", "load_suite", "ranks", "run_benchmark", "summarise"]
