"""The numbers a benchmark report shows: per-dataset means and ranks, wins, ties and losses, accuracy
against labels used (data efficiency) and against time budget (anytime curves)."""

from __future__ import annotations

import math
import os
import platform

from .runner import size_of
from .suite import Suite, size_label


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def test_stats(runs: list[dict]) -> tuple[float | None, float | None]:
    """Mean and standard deviation (None below two runs) of the runs' test metric."""
    import statistics

    tests = [r["test_metric"] for r in runs if r["test_metric"] is not None]
    return (statistics.mean(tests) if tests else None), (statistics.stdev(tests) if len(tests) > 1 else None)


def compare(a: float | None, b: float | None, tolerance: float) -> int:
    """1 when ``a`` beats ``b``, 0 for a tie (within ``tolerance``), -1 when it loses; missing loses."""
    a, b = score(a), score(b)
    return 0 if a == b or abs(a - b) <= tolerance else (1 if a > b else -1)


def score(value: float | None) -> float:
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
            means[m], std = test_stats(runs)
            per_dataset.append(
                {
                    "dataset": name,
                    "method": m,
                    "runs": len(runs),
                    "test_mean": means[m],
                    "test_std": std,
                    "val_mean": mean([r["val_metric"] for r in runs]),
                    "seconds_mean": mean([r["seconds"] for r in runs]),
                    "trials_mean": mean([r["trials"] for r in runs]),
                }
            )
        for m, rank in ranks({m: score(means[m]) for m in methods}).items():
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
            outcome = compare(mine["test_metric"], theirs["test_metric"], tie_tolerance)
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
                    if r["dataset"] == entry["name"] and size_of(r) == label and r["method"] == method
                ]
                means[method], std = test_stats(runs)
                points.append(
                    {
                        "dataset": entry["name"],
                        "size": label,
                        "method": method,
                        "runs": len(runs),
                        "n_train": mean([r.get("n_train") for r in runs]),
                        "test_mean": means[method],
                        "test_std": std,
                    }
                )
            for other in suite.efficiency_methods:
                if other == subject:
                    continue
                outcome = compare(means[subject], means[other], suite.tie_tolerance)
                missing = math.isinf(score(means[subject])) or math.isinf(score(means[other]))
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


def baseline(method: str, subject: str) -> bool:
    """Whether ``method`` is one the subject's verdicts are against: not the subject, not an ablation."""
    from .methods import METHODS

    return method != subject and not METHODS[method].ablation


def reached(history: list, target: float) -> float | None:
    """The seconds into a run at which a finished trial's validation score first reached ``target``."""
    return next((at for at, value in sorted(history) if value is not None and value >= target), None)


#: the method the portfolio's head start is measured against
PORTFOLIO_ABLATION = "no-portfolio"


def time_to_target(records: list[dict], suite: Suite, ablation: str = PORTFOLIO_ABLATION) -> list[dict]:
    """Per dataset and budget: the best baseline's mean validation score (the target), and the median
    over seeds of the seconds the subject and ``ablation`` took to reach it (a finished trial at least
    that good; a run that never did counts as never). Holds when the subject's median is at most half
    the ablation's: the portfolio's head start."""
    import statistics

    subject = suite.subject
    if subject not in suite.methods or ablation not in suite.methods:
        return []
    rows = []
    for entry in suite.datasets:
        for budget in suite.budgets or [None]:
            runs = [r for r in records if r["dataset"] == entry["name"] and r.get("budget_s") == budget]
            vals = {
                m: mean([r["val_metric"] for r in runs if r["method"] == m])
                for m in suite.methods
                if baseline(m, subject)
            }
            vals = {m: v for m, v in vals.items() if v is not None}
            if not vals:
                continue
            best = max(vals, key=vals.get)
            row = {"dataset": entry["name"], "budget_s": budget, "target_method": best, "target": vals[best]}
            for m in (subject, ablation):
                times = [reached(r.get("history") or [], vals[best]) for r in runs if r["method"] == m]
                row[f"{m}_s"] = (
                    statistics.median(math.inf if t is None else t for t in times) if times else None
                )
                row[f"{m}_reached"] = sum(t is not None for t in times)
                row[f"{m}_runs"] = len(times)
            mine, theirs = row[f"{subject}_s"], row[f"{ablation}_s"]
            row["holds"] = mine is not None and theirs is not None and mine < math.inf and mine <= theirs / 2
            rows.append(row)
    return rows


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def machine(device: str) -> dict:
    import torch

    from ...engine.results import environment

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


def anytime(records: list[dict], suite: Suite) -> dict:
    """Accuracy against time budget: per dataset, budget and method, the mean and spread over seeds of
    the test metric and of the seconds taken; per dataset and budget, whether the subject reached the
    best other method's mean within one test example; and every run's overrun past its budget."""
    from ...engine.budget import grace

    if not suite.budgets:
        return {"points": [], "verdicts": [], "overruns": []}
    subject = suite.subject
    points, verdicts, overruns = [], [], []
    for entry in suite.datasets:
        for budget in suite.budgets:
            runs = [r for r in records if r["dataset"] == entry["name"] and r.get("budget_s") == budget]
            means = {}
            for method in suite.methods:
                mine = [r for r in runs if r["method"] == method]
                means[method], std = test_stats(mine)
                points.append(
                    {
                        "dataset": entry["name"],
                        "budget_s": budget,
                        "method": method,
                        "runs": len(mine),
                        "test_mean": means[method],
                        "test_std": std,
                        "seconds_mean": mean([r["seconds"] for r in mine]),
                    }
                )
            n_test = max([r.get("n_test") or 0 for r in runs] + [0])
            others = {m: v for m, v in means.items() if baseline(m, subject) and v is not None}
            if others and means.get(subject) is not None:
                best_other = max(others, key=others.get)
                tolerance = 1 / n_test if n_test else suite.tie_tolerance
                verdicts.append(
                    {
                        "dataset": entry["name"],
                        "budget_s": budget,
                        "method": subject,
                        "best_other": best_other,
                        "difference": means[subject] - others[best_other],
                        "holds": means[subject] >= others[best_other] - tolerance - 1e-12,
                    }
                )
            for r in runs:
                over = r["seconds"] - budget
                overruns.append(
                    {
                        "dataset": r["dataset"],
                        "budget_s": budget,
                        "method": r["method"],
                        "seed": r["seed"],
                        "seconds": r["seconds"],
                        "over_s": round(over, 2),
                        "within": over <= grace(budget),
                    }
                )
    return {"points": points, "verdicts": verdicts, "overruns": overruns}
