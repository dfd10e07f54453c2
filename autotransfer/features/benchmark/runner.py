"""Running a suite: every dataset, seed and method (at every training size and time budget the suite
asks for), each run's record kept in its folder's run.json, so a benchmark run again skips what it has."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import optuna

from ...config import SearchConfig
from .methods import METHODS
from .suite import Suite, size_label


def dataset_path(entry: dict, out: Path) -> str:
    if "path" in entry:
        return entry["path"]
    from ..demo import DATASETS

    # text demos are a CSV
    target = out / "data" / (entry["name"] + (".csv" if entry["demo"] == "bbc" else ""))
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        written = DATASETS[entry["demo"]](str(partial), per_class=entry["per_class"], seed=0)
        Path(written).replace(target)  # a demo cut short is never mistaken for a whole one
    return str(target)


def budget_label(seconds: float | None) -> str:
    return "suite budget" if seconds is None else f"{seconds:g}s"


def run_dir(out: Path, entry: dict, method: str, seed: int, size: dict | None, budget: float | None) -> Path:
    where = out / "runs" / entry["name"]
    if size:
        where = where / f"train-{size_label(size).replace('%', 'pct')}"
    if budget is not None:
        where = where / f"budget-{budget:g}s"
    return where / method / f"seed-{seed}"


def run_one(
    suite: Suite,
    entry: dict,
    method: str,
    seed: int,
    out: Path,
    *,
    device: str | None = None,
    quiet: bool = True,
    size: dict | None = None,
    budget: float | None = None,
) -> dict:
    """One search (or baseline) of one dataset and seed, on the whole training split or on ``size``
    of it, within the suite's budget or ``budget`` seconds; its record is kept in run.json."""
    folder = run_dir(out, entry, method, seed, size, budget)
    record_path = folder / "run.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    # a run cut short is started again from nothing: its time must be the whole run's
    shutil.rmtree(folder, ignore_errors=True)
    options = dict(suite.search) | ({"device": device} if device else {}) | (size or {})
    options.setdefault("reference", False)  # the random-init reference would spend the budget
    seconds = budget if budget is not None else suite.seconds
    base = SearchConfig(
        data=dataset_path(entry, out),
        output=str(folder),
        seed=seed,
        n_trials=None if budget is not None else suite.n_trials,
        budget=seconds,
        quiet=quiet,
        **options,
    )
    started_at, started = datetime.now(), time.time()
    outcome = METHODS[method].prepare(base, suite).run()
    record = _record(entry, method, seed, size, budget, outcome, time.time() - started, started_at)
    record["out_dir"] = str(folder.relative_to(out))
    record_path.write_text(json.dumps(record, indent=1))
    return record


def _record(entry, method, seed, size, budget, outcome, seconds: float, started_at: datetime) -> dict:
    best = outcome.best or {}
    trials = outcome.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    record = {
        "dataset": entry["name"],
        "method": method,
        "seed": seed,
        "seconds": round(seconds, 2),
        "size": size_label(size),
        "budget_s": budget,
        "n_train": outcome.n_train,
        "n_test": outcome.n_test,
        "backbone": best.get("backbone"),
        "strategy": best.get("strategy"),
        "metric": best.get("test_metric_name"),
        "val_metric": best.get("val_metric"),
        "test_metric": best.get("test_metric"),
        "trials": len(trials),
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "device": outcome.device,
        "history": [
            [round((t.datetime_complete - started_at).total_seconds(), 2), t.value]
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete
        ],
    }
    if outcome.study.user_attrs.get("ranking"):
        record["ranking"] = outcome.study.user_attrs["ranking"]
    return record


def planned_runs(suite: Suite) -> list[tuple[dict, int, str, dict | None, float | None]]:
    """(dataset, seed, method, size, budget) of every run the suite asks for."""
    runs = []
    if suite.main_budget is None:
        runs += [(e, s, m, None, None) for e in suite.datasets for s in suite.seeds for m in suite.methods]
    runs += [
        (e, s, m, size, None)
        for e in suite.datasets
        for s in suite.seeds
        for size in suite.sizes
        for m in suite.efficiency_methods
        if size is not None or m not in suite.methods
    ]
    runs += [
        (e, s, m, None, b)
        for e in suite.datasets
        for b in suite.budgets
        for s in suite.seeds
        for m in suite.methods
    ]
    return runs


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    device: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """Every run of the suite; data-efficiency runs come back with ``size`` other than 100%, anytime
    runs with their ``budget_s``."""
    from .stats import number

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = planned_runs(suite)
    records = []
    for entry, seed, method, size, budget in runs:
        record = run_one(
            suite, entry, method, seed, out, device=device, quiet=quiet, size=size, budget=budget
        )
        records.append(record)
        where = (f" at {size_label(size)}" if size else "") + (
            f" in {budget:g}s" if budget is not None else ""
        )
        log(
            f"[{len(records)}/{len(runs)}] {entry['name']} seed {seed} {method}{where}: "
            f"test {number(record['test_metric'])} in {record['seconds']:.0f}s"
        )
    return records


def size_of(record: dict) -> str:
    """The training-set size a run used (records written before sizes existed used all of it)."""
    return record.get("size", size_label(None))


def main_records(suite: Suite, records: list[dict]) -> list[dict]:
    """The runs the method comparison is about: the whole training split, the suite's budget (the
    largest time budget in a suite of time budgets alone)."""
    return [
        r
        for r in records
        if size_of(r) == size_label(None)
        and r["method"] in suite.methods
        and r.get("budget_s") == suite.main_budget
    ]
