"""Benchmarks: the search against baselines, on several datasets and seeds, under one budget.

Every method runs through the same engine (``Search``), on the same files, split and device; only
the settings differ. A method is a small function in ``METHODS``; adding one (or a suite naming
it) is all a new baseline takes.

A suite is YAML::

    name: cpu-small
    datasets:                       # a demo (digits, mnist, bbc) or a path (relative to the suite)
      - {demo: digits, per_class: 30}
      - {path: data/flowers, name: flowers}
    seeds: [0, 1]
    budget: {n_trials: 8, timeout: 600}   # per search; every searching method gets the same
    methods: [autotransfer, default-recipe, linear-probe, random-search, top-ranked]
    recipe_epochs: 10               # the fixed recipe's epochs
    search: {image_size: 64, max_epochs: 5, backbones: [tf_efficientnet_lite0]}   # SearchConfig fields
    compare: autotransfer           # wins, ties and losses are this method's against each other
    tie_tolerance: 0.0              # test metrics closer than this are a tie
    data_efficiency:                # optional: accuracy against labels used ("how much data do I need?")
      fractions: [0.1, 0.25, 0.5, 1.0]          # of the training split per class, or shots: [1, 5, 10]
      methods: [autotransfer, linear-probe, scratch]   # the default

With ``data_efficiency`` every dataset, seed and method of that list also runs on a stratified, seeded
subset of the training split at each size; the validation and test splits are the full data's, the
same at every size (the split is drawn before the training part is shrunk), and a smaller subset is
part of every larger one. A fraction of 1.0 is the full run (shared with ``methods`` when both list
the method). ``methods: []`` runs the curves alone.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna

from . import plots
from .config import SearchConfig
from .errors import UserError
from .page import Section, esc, image, md_table, render, render_markdown, table

# what a suite's `search:` may not set: the benchmark owns these per run
RUN_FIELDS = {"data", "output", "seed", "n_trials", "timeout", "storage", "study_name", "quiet"}
SEARCH_FIELDS = {f.name for f in fields(SearchConfig)} - RUN_FIELDS
SUITE_KEYS = {
    "name",
    "description",
    "datasets",
    "seeds",
    "budget",
    "methods",
    "recipe_epochs",
    "search",
    "compare",
    "tie_tolerance",
    "data_efficiency",
}
EFFICIENCY_METHODS = ["autotransfer", "linear-probe", "scratch"]


@dataclass
class Suite:
    name: str
    datasets: list[dict]
    seeds: list[int] = field(default_factory=lambda: [0])
    n_trials: int | None = 10
    timeout: float | None = None
    methods: list[str] = field(
        default_factory=lambda: [
            "autotransfer",
            "default-recipe",
            "linear-probe",
            "random-search",
            "top-ranked",
        ]
    )
    recipe_epochs: int = 10
    search: dict = field(default_factory=dict)
    compare: str | None = None
    tie_tolerance: float = 0.0
    description: str = ""
    root: Path = Path(".")
    #: data efficiency: the training-set sizes, each {"train_fraction": f} or {"shots": n}; None is all
    sizes: list[dict | None] = field(default_factory=list)
    efficiency_methods: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.compare or (self.methods or self.efficiency_methods)[0]


def load_suite(path: str | Path) -> Suite:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such suite file; see benchmarks/suites/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a suite is a mapping with keys {', '.join(sorted(SUITE_KEYS))}")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise UserError(
            f"{path}: unknown keys {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SUITE_KEYS))}"
        )
    budget = raw.get("budget") or {}
    if set(budget) - {"n_trials", "timeout"} or not budget:
        raise UserError(f"{path}: budget takes n_trials and/or timeout (seconds per search)")
    search = raw.get("search") or {}
    wrong = set(search) - SEARCH_FIELDS
    if wrong:
        raise UserError(
            f"{path}: search: {', '.join(sorted(wrong))} cannot be set here; "
            f"valid: {', '.join(sorted(SEARCH_FIELDS))}"
        )
    datasets = [_dataset(d, path) for d in raw.get("datasets") or []]
    if not datasets:
        raise UserError(f"{path}: list at least one dataset (a demo name or a path)")
    names = [d["name"] for d in datasets]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: dataset names repeat ({', '.join(names)}); give each a distinct name")
    sizes, efficiency_methods = _sizes(raw.get("data_efficiency"), path)
    suite = Suite(
        name=str(raw.get("name") or path.stem),
        datasets=datasets,
        seeds=list(raw.get("seeds") or [0]),
        n_trials=budget.get("n_trials"),
        timeout=budget.get("timeout"),
        search=search,
        recipe_epochs=int(raw.get("recipe_epochs", 10)),
        compare=raw.get("compare"),
        tie_tolerance=float(raw.get("tie_tolerance", 0.0)),
        description=str(raw.get("description", "")),
        root=path.parent,
        sizes=sizes,
        efficiency_methods=efficiency_methods,
        **({"methods": list(raw["methods"])} if raw.get("methods") is not None else {}),
    )
    if not suite.methods and not suite.sizes:
        raise UserError(f"{path}: methods is empty and there is no data_efficiency: nothing to run")
    for name in suite.methods + suite.efficiency_methods + ([suite.subject] if suite.methods else []):
        if name not in METHODS:
            raise UserError(f"{path}: unknown method {name!r}; valid: {', '.join(METHODS)}")
    return suite


def _sizes(spec: Any, suite_path: Path) -> tuple[list[dict | None], list[str]]:
    """``data_efficiency:`` -> the training-set sizes (smallest first; None is the whole split) and
    the methods to run at each."""
    if spec is None:
        return [], []
    where = f"{suite_path}: data_efficiency"
    if (
        not isinstance(spec, dict)
        or set(spec) - {"fractions", "shots", "methods"}
        or ("fractions" in spec) == ("shots" in spec)
    ):
        raise UserError(
            f"{where} takes fractions: [0.1, 0.5, 1.0] or shots: [1, 5, 10] (one of them), "
            f"and optionally methods: [...]"
        )
    key = "fractions" if "fractions" in spec else "shots"
    values = spec[key]
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: {key} is a non-empty list, e.g. {key}: [0.1, 0.5, 1.0]")
    sizes: list[dict | None] = []
    for value in sorted(set(values)):
        if key == "fractions":
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise UserError(f"{where}: fraction {value!r} is not in (0, 1]")
            sizes.append(None if value == 1 else {"train_fraction": float(value)})
        else:
            if not isinstance(value, int) or value < 1:
                raise UserError(
                    f"{where}: shots {value!r} is not a whole number of examples per class (>= 1)"
                )
            sizes.append({"shots": value})
    methods = list(spec.get("methods") or EFFICIENCY_METHODS)
    return sizes, methods


def size_label(size: dict | None) -> str:
    if size is None:
        return "100%"
    if "shots" in size:
        return f"{size['shots']}-shot"
    return f"{size['train_fraction'] * 100:g}%"


def _dataset(entry: Any, suite_path: Path) -> dict:
    from .demo import DATASETS

    if isinstance(entry, str):
        entry = {"demo": entry} if entry in DATASETS else {"path": entry}
    if not isinstance(entry, dict) or ("demo" in entry) == ("path" in entry):
        raise UserError(
            f"{suite_path}: each dataset is a demo name ({', '.join(DATASETS)}) or has exactly one of "
            f"demo: or path: (got {entry!r})"
        )
    if "demo" in entry and entry["demo"] not in DATASETS:
        raise UserError(f"{suite_path}: unknown demo {entry['demo']!r}; valid: {', '.join(DATASETS)}")
    if "path" in entry:
        resolved = (suite_path.parent / entry["path"]).resolve()
        if not resolved.exists():
            raise UserError(f"{suite_path}: dataset path {entry['path']} ({resolved}) does not exist")
        return {"name": entry.get("name") or resolved.name, "path": str(resolved)}
    per_class = entry.get("per_class")
    name = entry.get("name") or (entry["demo"] + (f"-{per_class}pc" if per_class else ""))
    return {"name": name, "demo": entry["demo"], "per_class": per_class}


# the methods ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    description: str
    #: (base config, suite) -> a Search ready to run (study opened, any fixed trial enqueued)
    prepare: Callable[[SearchConfig, Suite], Any]


def _search(config: SearchConfig):
    from .engine import Search

    return Search(config)


def _recipe(config: SearchConfig, suite: Suite, backbone: str | None = None):
    """The fixed default recipe: one full fine-tune, AdamW at 1e-4, cosine, no augmentation."""
    config = replace(
        config,
        strategies=["full-finetune"],
        n_trials=1,
        timeout=None,
        pruning=False,
        reference=False,
        rank=False,
        max_epochs=suite.recipe_epochs,
        backbones=[backbone] if backbone else config.backbones,
    )
    search = _search(config)
    sizes = search.batch_size_choices()
    p = "full-finetune"
    search.study.enqueue_trial(
        {
            "backbone": search.backbones[0].name,
            "strategy": p,
            f"{p}.lr": 1e-4,
            "epochs": suite.recipe_epochs,
            "batch_size": 32 if 32 in sizes else min(sizes),
            "weight_decay": 0.01,
            f"{p}.layer_decay": 1.0,
            f"{p}.head_lr_mult": 1.0,
            f"{p}.warmup": 0.0,
            f"{p}.schedule": "cosine",
            f"{p}.label_smoothing": 0.0,
            "augment": "off",
        }
    )
    return search


def _top_ranked(config: SearchConfig, suite: Suite):
    """LogME ranks the candidate backbones on the training split; the recipe trains the top one."""
    from .engine import Search
    from .rank import rank_backbones

    ranker = Search(replace(config, strategies=["linear-probe"]), open_study=False)
    names = [b.name for b in ranker.backbones]
    ranking = rank_backbones(ranker) if len(names) > 1 else []
    search = _recipe(config, suite, backbone=ranking[0].backbone if ranking else names[0])
    search.study.set_user_attr("ranking", [[r.backbone, r.logme] for r in ranking])
    return search


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "autotransfer",
            "the search as shipped: TPE over backbone, strategy and knobs, Hyperband pruning, "
            "linear-probe warm start",
            lambda config, suite: _search(config),
        ),
        Method(
            "default-recipe",
            "a fixed recipe, no search: full fine-tune of the first backbone, AdamW lr 1e-4, "
            "cosine, batch 32, weight decay 0.01, recipe_epochs epochs; one trial",
            lambda config, suite: _recipe(config, suite),
        ),
        Method(
            "linear-probe",
            "the search restricted to linear probes (frozen backbone, trained head)",
            lambda config, suite: _search(replace(config, strategies=["linear-probe"], reference=False)),
        ),
        Method(
            "random-search",
            "Optuna random search over the same space, no pruning, no warm start",
            lambda config, suite: _search(
                replace(config, sampler="random", pruning=False, reference=False, rank=False)
            ),
        ),
        Method(
            "top-ranked",
            "the backbone LogME ranks first (transferability, before training), trained with the "
            "default recipe; one trial plus the ranking",
            _top_ranked,
        ),
        Method(
            "scratch",
            "the search restricted to the scratch reference: the same architectures from random "
            "weights, every layer trained",
            lambda config, suite: _search(replace(config, strategies=["scratch"], reference=False)),
        ),
    )
}


# running -------------------------------------------------------------------------------------
def dataset_path(entry: dict, out: Path) -> str:
    if "path" in entry:
        return entry["path"]
    from .demo import DATASETS

    target = (
        out / "data" / (entry["name"] + (".csv" if entry["demo"] == "bbc" else ""))
    )  # text demos are a CSV
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        written = DATASETS[entry["demo"]](str(partial), per_class=entry["per_class"], seed=0)
        Path(written).replace(target)  # a demo cut short is never mistaken for a whole one
    return str(target)


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
) -> dict:
    """One search (or baseline) of one dataset and seed, on the whole training split or on ``size``
    of it; its record is kept in run.json, so a benchmark run again skips what it has."""
    from . import cache

    where = (
        f"train-{size_label(size).replace('%', 'pct')}" if size else "."
    )  # the full split: where it always was
    run_dir = out / "runs" / entry["name"] / where / method / f"seed-{seed}"
    record_path = run_dir / "run.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    # a run cut short is started again from nothing: its time must be the whole run's
    shutil.rmtree(run_dir, ignore_errors=True)
    options = dict(suite.search) | ({"device": device} if device else {}) | (size or {})
    options.setdefault("reference", False)  # the scratch reference would spend a trial of the budget
    base = SearchConfig(
        data=dataset_path(entry, out),
        output=str(run_dir),
        seed=seed,
        n_trials=suite.n_trials,
        timeout=suite.timeout,
        quiet=quiet,
        **options,
    )
    cache.activations.clear()  # no method starts with what another one computed
    started_at, started = datetime.now(), time.time()
    search = METHODS[method].prepare(base, suite)
    result = search.run()
    seconds = time.time() - started
    best = result.best or {}
    trials = search.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    record = {
        "dataset": entry["name"],
        "method": method,
        "seed": seed,
        "seconds": round(seconds, 2),
        "size": size_label(size),
        "n_train": len(search.split["train"]),
        "backbone": best.get("backbone"),
        "strategy": best.get("strategy"),
        "metric": best.get("test_metric_name"),
        "val_metric": best.get("val_metric"),
        "test_metric": best.get("test_metric"),
        "trials": len(trials),
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "device": str(search.device),
        "out_dir": str(run_dir.relative_to(out)),
        "history": [
            [round((t.datetime_complete - started_at).total_seconds(), 2), t.value]
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete
        ],
    }
    if search.study.user_attrs.get("ranking"):
        record["ranking"] = search.study.user_attrs["ranking"]
    record_path.write_text(json.dumps(record, indent=1))
    return record


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    device: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """Every run of the suite; the data-efficiency runs come back with ``size`` other than 100%
    (see ``main_records``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [
        (entry, seed, method, None)
        for entry in suite.datasets
        for seed in suite.seeds
        for method in suite.methods
    ]
    runs += [
        (entry, seed, method, size)
        for entry in suite.datasets
        for seed in suite.seeds
        for size in suite.sizes
        for method in suite.efficiency_methods
        if size is not None or method not in suite.methods
    ]
    records = []
    for entry, seed, method, size in runs:
        record = run_one(suite, entry, method, seed, out, device=device, quiet=quiet, size=size)
        records.append(record)
        log(
            f"[{len(records)}/{len(runs)}] {entry['name']} seed {seed} {method}"
            f"{' at ' + size_label(size) if size else ''}: test {_num(record['test_metric'])} "
            f"in {record['seconds']:.0f}s"
        )
    return records


def _size(record: dict) -> str:
    """The training-set size a run used (records written before sizes existed used all of it)."""
    return record.get("size", size_label(None))


def main_records(suite: Suite, records: list[dict]) -> list[dict]:
    """The runs the method comparison is about: the whole training split, the suite's methods."""
    return [r for r in records if _size(r) == size_label(None) and r["method"] in suite.methods]


# the numbers ---------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _test_stats(runs: list[dict]) -> tuple[float | None, float | None]:
    """Mean and standard deviation (None below two runs) of the runs' test metric."""
    import statistics

    tests = [r["test_metric"] for r in runs if r["test_metric"] is not None]
    return (statistics.mean(tests) if tests else None), (statistics.stdev(tests) if len(tests) > 1 else None)


def _outcome(a: float | None, b: float | None, tolerance: float) -> int:
    """1 when ``a`` beats ``b``, 0 for a tie (within ``tolerance``), -1 when it loses; missing loses."""
    a, b = _score(a), _score(b)
    return 0 if a == b or abs(a - b) <= tolerance else (1 if a > b else -1)


def _score(value: float | None) -> float:
    """Missing results (no trial completed) rank last."""
    return float("-inf") if value is None or (isinstance(value, float) and math.isnan(value)) else value


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """1 is best; tied scores share the mean of the ranks they span."""
    ordered = sorted(scores, key=lambda m: -scores[m])
    out, i = {}, 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and scores[ordered[j + 1]] == scores[ordered[i]]:
            j += 1
        for m in ordered[i : j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


def summarise(records: list[dict], methods: list[str], subject: str, tie_tolerance: float = 0.0) -> dict:
    """Per dataset: each method's mean test metric over seeds and its rank; across datasets: mean rank;
    and the subject's wins, ties and losses against every other method, per dataset and seed."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    per_dataset, rank_rows = [], {m: [] for m in methods}
    for name in datasets:
        mine = [r for r in records if r["dataset"] == name]
        means = {}
        for m in methods:
            runs = [r for r in mine if r["method"] == m]
            means[m], std = _test_stats(runs)
            per_dataset.append(
                {
                    "dataset": name,
                    "method": m,
                    "runs": len(runs),
                    "test_mean": means[m],
                    "test_std": std,
                    "val_mean": _mean([r["val_metric"] for r in runs]),
                    "seconds_mean": _mean([r["seconds"] for r in runs]),
                    "trials_mean": _mean([r["trials"] for r in runs]),
                }
            )
        for m, rank in ranks({m: _score(means[m]) for m in methods}).items():
            rank_rows[m].append(rank)
            next(row for row in per_dataset if row["dataset"] == name and row["method"] == m)["rank"] = rank
    mean_rank = sorted(
        ({"method": m, "mean_rank": sum(v) / len(v), "datasets": len(v)} for m, v in rank_rows.items() if v),
        key=lambda r: r["mean_rank"],
    )
    by_key = {(r["dataset"], r["seed"], r["method"]): r for r in records}
    wtl = []
    for other in methods:
        if other == subject:
            continue
        tally = {"wins": 0, "ties": 0, "losses": 0}
        for (name, seed, method), mine in by_key.items():
            theirs = by_key.get((name, seed, other))
            if method != subject or theirs is None:
                continue
            outcome = _outcome(mine["test_metric"], theirs["test_metric"], tie_tolerance)
            tally[{1: "wins", 0: "ties", -1: "losses"}[outcome]] += 1
        wtl.append({"method": subject, "against": other, **tally})
    return {"per_dataset": per_dataset, "mean_rank": mean_rank, "wins_ties_losses": wtl}


def efficiency(records: list[dict], suite: Suite) -> dict:
    """Accuracy against labels used: per dataset, size and method, the mean and spread over seeds of
    the test metric; and per dataset and size, how the searched recipe (``autotransfer``, else the
    first method) does against each other method (better, tie, worse, on the means)."""
    if not suite.sizes:
        return {"points": [], "verdicts": []}
    labels = [size_label(s) for s in suite.sizes]
    points, verdicts = [], []
    subject = "autotransfer" if "autotransfer" in suite.efficiency_methods else suite.efficiency_methods[0]
    for entry in suite.datasets:
        for label in labels:
            means = {}
            for method in suite.efficiency_methods:
                runs = [
                    r
                    for r in records
                    if r["dataset"] == entry["name"] and _size(r) == label and r["method"] == method
                ]
                means[method], std = _test_stats(runs)
                points.append(
                    {
                        "dataset": entry["name"],
                        "size": label,
                        "method": method,
                        "runs": len(runs),
                        "n_train": _mean([r.get("n_train") for r in runs]),
                        "test_mean": means[method],
                        "test_std": std,
                    }
                )
            for other in suite.efficiency_methods:
                if other == subject:
                    continue
                outcome = _outcome(means[subject], means[other], suite.tie_tolerance)
                missing = math.isinf(_score(means[subject])) or math.isinf(_score(means[other]))
                verdicts.append(
                    {
                        "dataset": entry["name"],
                        "size": label,
                        "method": subject,
                        "against": other,
                        "verdict": {1: "better", 0: "tie", -1: "worse"}[outcome],
                        "difference": None if missing else means[subject] - means[other],
                    }
                )
    return {"points": points, "verdicts": verdicts}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def machine(device: str) -> dict:
    import torch

    from .results import environment

    info = environment(torch.device(device))
    info |= {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu"] = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return info


# the report ----------------------------------------------------------------------------------
RUN_COLUMNS = [
    "dataset",
    "seed",
    "method",
    "backbone",
    "strategy",
    "val_metric",
    "test_metric",
    "seconds",
    "trials",
    "complete",
    "pruned",
    "failed",
    "device",
    "out_dir",
]
DATASET_COLUMNS = [
    "method",
    "runs",
    "test_mean",
    "test_std",
    "val_mean",
    "seconds_mean",
    "trials_mean",
    "rank",
]
DATASET_HEADERS = [
    "method",
    "runs",
    "test (mean)",
    "test (std)",
    "val (mean)",
    "seconds (mean)",
    "trials (mean)",
    "rank",
]
DIGITS = {"seconds": 1, "seconds_mean": 1, "trials_mean": 1, "rank": 1, "mean_rank": 2}


def write_csvs(out: Path, records: list[dict], summary: dict, curves: dict | None = None) -> list[Path]:
    import pandas as pd

    history = [
        {
            "dataset": r["dataset"],
            "size": _size(r),
            "seed": r["seed"],
            "method": r["method"],
            "elapsed_s": t,
            "val_metric": v,
        }
        for r in records
        for t, v in r["history"]
    ]
    frames = {
        "runs.csv": pd.DataFrame(records, columns=RUN_COLUMNS + ["size", "n_train"]),
        "per_dataset.csv": pd.DataFrame(summary["per_dataset"]),
        "mean_rank.csv": pd.DataFrame(summary["mean_rank"]),
        "wins_ties_losses.csv": pd.DataFrame(summary["wins_ties_losses"]),
        "history.csv": pd.DataFrame(
            history, columns=["dataset", "size", "seed", "method", "elapsed_s", "val_metric"]
        ),
    }
    if curves and curves["points"]:
        frames["data_efficiency.csv"] = pd.DataFrame(curves["points"])
        frames["data_efficiency_verdicts.csv"] = pd.DataFrame(curves["verdicts"])
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
    return [out / name for name in frames]


def report_sections(
    suite: Suite, records: list[dict], summary: dict, env: dict, curves: dict | None = None
) -> list[Section]:
    methods = [
        {"method": m, "what": METHODS[m].description}
        for m in dict.fromkeys(suite.methods + suite.efficiency_methods)
    ]
    budget = (f"{suite.n_trials} trials" if suite.n_trials else "") + (
        f"{' and ' if suite.n_trials else ''}{suite.timeout:.0f} s" if suite.timeout else ""
    )
    recipes = [m for m in ("default-recipe", "top-ranked") if m in suite.methods]
    setup = (
        f"Datasets: {len(suite.datasets)}; seeds: {', '.join(map(str, suite.seeds))}; methods: "
        f"{len(methods)}. Budget per search: {budget}"
        + (f"; the fixed recipes run one trial of {suite.recipe_epochs} epochs" if recipes else "")
        + f". Search options: {json.dumps(suite.search)}. Each method runs through "
        "the same engine on the same files, split (per seed) and device; the test split is held out and "
        "used once per run. Metric: test accuracy of the run's best configuration."
    )
    if suite.sizes:
        setup += (
            f" Data efficiency: {', '.join(suite.efficiency_methods)} also run on "
            f"{', '.join(size_label(s) for s in suite.sizes)} of each training split (stratified, seeded; "
            "validation and test stay the full split's)."
        )
    out = [
        Section(
            "setup",
            "Setup",
            f"<p>{esc(setup)}</p>" + table(methods, ["method", "what"]),
            setup + "\n\n" + md_table(methods, ["method", "what"]),
        )
    ]
    if suite.methods:
        out += comparison_sections(suite, main_records(suite, records), summary)
    if curves and curves["points"]:
        out += efficiency_sections(suite, curves)
    files = (
        "runs.csv (one row a run), per_dataset.csv, mean_rank.csv, wins_ties_losses.csv, history.csv (every "
        "completed trial's validation metric against time)"
        + (", data_efficiency.csv and data_efficiency_verdicts.csv (the curves)" if suite.sizes else "")
        + "; each run's search folder is under runs/."
    )
    out.append(Section("files", "Files", f"<p>{esc(files)}</p>", files))
    facts = [{"what": k, "value": v} for k, v in env.items()]
    out.append(
        Section(
            "environment",
            "Machine",
            table(facts, ["what", "value"], code=("value",)),
            md_table(facts, ["what", "value"]),
        )
    )
    return out


def comparison_sections(suite: Suite, records: list[dict], summary: dict) -> list[Section]:
    out = []
    rank_text = (
        "Methods ranked per dataset by mean test metric over seeds (1 is best, ties share), then "
        "averaged across datasets."
    )
    out.append(
        Section(
            "mean-rank",
            "Mean rank across datasets",
            f"<p>{rank_text}</p>"
            + table(
                summary["mean_rank"],
                ["method", "mean_rank", "datasets"],
                headers=["method", "mean rank", "datasets"],
                digits=DIGITS,
            ),
            rank_text
            + "\n\n"
            + md_table(
                summary["mean_rank"],
                ["method", "mean_rank", "datasets"],
                headers=["method", "mean rank", "datasets"],
                digits=DIGITS,
            ),
        )
    )
    wtl_text = (
        f"{suite.subject} against each other method, one comparison per dataset and seed, on test "
        f"metric (a tie within {suite.tie_tolerance})."
    )
    wtl_columns = ["against", "wins", "ties", "losses"]
    out.append(
        Section(
            "wins-ties-losses",
            "Wins, ties and losses",
            f"<p>{esc(wtl_text)}</p>" + table(summary["wins_ties_losses"], wtl_columns),
            wtl_text + "\n\n" + md_table(summary["wins_ties_losses"], wtl_columns),
        )
    )
    for entry in suite.datasets:
        name = entry["name"]
        rows = [r for r in summary["per_dataset"] if r["dataset"] == name]
        mine = [r for r in records if r["dataset"] == name]
        curves = {
            m: [
                {"points": r["history"], "seconds": r["seconds"], "test": r["test_metric"]}
                for r in mine
                if r["method"] == m
            ]
            for m in suite.methods
        }
        where = entry.get("path") or f"demo {entry['demo']}, {entry['per_class'] or 'all'} per class"
        picks = [
            {
                "seed": r["seed"],
                "method": r["method"],
                "backbone": r["backbone"],
                "strategy": r["strategy"],
                "test": r["test_metric"],
                "seconds": r["seconds"],
            }
            for r in mine
        ]
        body = (
            f"<p>{esc(where)}</p>"
            + table(rows, DATASET_COLUMNS, headers=DATASET_HEADERS, digits=DIGITS)
            + image(plots.accuracy_against_time(curves, "accuracy", name), f"{name}: accuracy against time")
            + "<h3>Every run</h3>"
            + table(picks, ["seed", "method", "backbone", "strategy", "test", "seconds"], digits=DIGITS)
        )
        out.append(
            Section(
                f"dataset-{name}",
                f"Dataset: {name}",
                body,
                where + "\n\n" + md_table(rows, DATASET_COLUMNS, headers=DATASET_HEADERS, digits=DIGITS),
            )
        )
    return out


def efficiency_sections(suite: Suite, curves: dict) -> list[Section]:
    """Per dataset: test accuracy against training labels, a line per method, and a table with the
    searched recipe's verdict against each other method at each size."""
    out = []
    methods = suite.efficiency_methods
    for entry in suite.datasets:
        name = entry["name"]
        points = [p for p in curves["points"] if p["dataset"] == name]
        verdicts = [v for v in curves["verdicts"] if v["dataset"] == name]
        rows = []
        for label in dict.fromkeys(p["size"] for p in points):
            at = {p["method"]: p for p in points if p["size"] == label}
            row = {"size": label, "labels": _mean([p["n_train"] for p in at.values()])}
            for m in methods:
                p = at[m]
                row[m] = (
                    "-"
                    if p["test_mean"] is None
                    else (
                        f"{p['test_mean']:.4f}"
                        + (f" ± {p['test_std']:.4f}" if p["test_std"] is not None else "")
                    )
                )
            for v in verdicts:
                if v["size"] == label:
                    row[f"vs {v['against']}"] = v["verdict"]
            rows.append(row)
        columns = (
            ["size", "labels"]
            + methods
            + [f"vs {m}" for m in methods if any(v["against"] == m for v in verdicts)]
        )
        subject = verdicts[0]["method"] if verdicts else methods[0]
        text = (
            f"Test accuracy (mean ± std over seeds {', '.join(map(str, suite.seeds))}) against the number of "
            f"labelled training examples; validation and test sets are the same at every size. 'vs' columns: "
            f"{subject}'s mean against that method's (a tie within {suite.tie_tolerance})."
        )
        series = {
            m: [(p["n_train"], p["test_mean"], p["test_std"]) for p in points if p["method"] == m]
            for m in methods
        }
        body = (
            f"<p>{esc(text)}</p>"
            + image(
                plots.accuracy_against_labels(series, "test accuracy", name),
                f"{name}: accuracy against labels used",
            )
            + table(rows, columns, digits={"labels": 0})
        )
        out.append(
            Section(
                f"efficiency-{name}",
                f"Data efficiency: {name}",
                body,
                text + "\n\n" + md_table(rows, columns, digits={"labels": 0}),
            )
        )
    return out


def write_benchmark_report(
    suite: Suite, out: str | Path, records: list[dict], env: dict
) -> tuple[Path, Path]:
    out = Path(out)
    summary = summarise(main_records(suite, records), suite.methods, suite.subject, suite.tie_tolerance)
    curves = efficiency(records, suite)
    write_csvs(out, records, summary, curves)
    (out / "machine.json").write_text(json.dumps(env, indent=2))
    parts = report_sections(suite, records, summary, env, curves)
    title = f"autotransfer benchmark: {suite.name}"
    where = env.get("gpu") or f"{env.get('cpu', env.get('platform'))}, {env.get('cpu_count')} cores"
    described = suite.description + " " if suite.description else ""
    subtitle = f"{described}{len(records)} runs on {env['device']} ({where})"
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render(title, subtitle, parts), encoding="utf-8")
    md_path.write_text(render_markdown(title, subtitle, parts), encoding="utf-8")
    return html_path, md_path


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
    from .engine import resolve_device

    env = machine(str(resolve_device(device or suite.search.get("device", "auto"))))
    return write_benchmark_report(suite, out, records, env)
