"""Figures for the reports, drawn with matplotlib's Agg backend and returned as PNG data URIs, so a
report is one file that fetches nothing."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence

STATE_COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728"}
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a window, never a display
    import matplotlib.pyplot as plt

    return plt


def data_uri(fig) -> str:
    """The figure as a base64 PNG data URI; the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def history(points: Sequence[dict], metric: str) -> str:
    """Every trial's value against the time it finished, coloured by state, and the best so far.

    ``points``: dicts with ``elapsed_s``, ``value`` (None when failed), ``state``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for state, colour in STATE_COLOURS.items():
        chosen = [p for p in points if p["state"] == state and p["value"] is not None]
        if chosen:
            ax.scatter(
                [p["elapsed_s"] for p in chosen],
                [p["value"] for p in chosen],
                s=22,
                color=colour,
                label=state.lower(),
                alpha=0.8,
                zorder=3,
            )
    xs, best = best_so_far((p["elapsed_s"], p["value"]) for p in points if p["state"] == "COMPLETE")
    if xs:
        ax.step(xs, best, where="post", color="black", linewidth=1.5, label="best so far (complete)")
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the search started")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return data_uri(fig)


def best_so_far(pairs: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Running maximum of ``(time, value)`` pairs sorted by time."""
    xs, ys, best = [], [], float("-inf")
    for x, y in sorted(pairs):
        best = max(best, y)
        xs.append(x)
        ys.append(best)
    return xs, ys


def importances(values: dict[str, float]) -> str:
    plt = _pyplot()
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color=PALETTE[0])
    ax.set_xlabel("importance (fANOVA, share of the validation metric's variance)")
    ax.grid(axis="x", alpha=0.3)
    return data_uri(fig)


def by_group(groups: dict[str, list[tuple[float, str]]], label: str, metric: str) -> str:
    """One column per group: every trial's value (jittered), coloured by state, and the group's best.

    ``groups``: name -> [(value, state), ...]."""
    plt = _pyplot()
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) + 2), 3.6))
    seen = set()
    for i, name in enumerate(names):
        values = groups[name]
        for j, (value, state) in enumerate(values):
            offset = ((j * 0.618) % 1 - 0.5) * 0.35  # a deterministic jitter
            ax.scatter(
                i + offset,
                value,
                s=22,
                color=STATE_COLOURS.get(state, "grey"),
                alpha=0.8,
                zorder=3,
                label=state.lower() if state not in seen else None,
            )
            seen.add(state)
        ax.hlines(max(v for v, _ in values), i - 0.3, i + 0.3, color="black", linewidth=1.5, zorder=4)
    crowded = len(names) > 3
    ax.set_xticks(
        range(len(names)), names, rotation=20 if crowded else 0, ha="right" if crowded else "center"
    )
    ax.set_xlabel(f"{label} (bar: best)")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return data_uri(fig)


def accuracy_against_time(curves: dict[str, list[dict]], metric: str, title: str) -> str:
    """Benchmark: per method, best validation so far against elapsed seconds (a line per seed) and the
    test metric at the end (a cross at the run's total time).

    ``curves``: method -> [{"points": [(elapsed, value)], "seconds": total, "test": test or None}]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (method, runs) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        for k, run in enumerate(runs):
            xs, ys = best_so_far(run["points"])
            if xs:
                ax.step(
                    xs + [run["seconds"]],
                    ys + [ys[-1]],
                    where="post",
                    color=colour,
                    alpha=0.8,
                    label=method if k == 0 else None,
                )
            if run["test"] is not None:
                ax.scatter(
                    [run["seconds"]],
                    [run["test"]],
                    marker="x",
                    s=45,
                    color=colour,
                    zorder=4,
                    label=None if xs or k else method,
                )
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds (wall clock, whole run)")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: lines = best validation so far, x = test at the end", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return data_uri(fig)


def accuracy_against_labels(series: dict[str, list[tuple]], metric: str, title: str) -> str:
    """Data efficiency: per method, the metric (mean, with the spread over seeds as error bars)
    against the number of labelled training examples, on a log axis.

    ``series``: method -> [(n_train, mean or None, std or None)]."""
    return metric_against(
        series, metric, "labelled training examples (log scale)", f"{title}: how much labelled data is needed"
    )


def accuracy_against_budget(series: dict[str, list[tuple]], metric: str, title: str) -> str:
    """Anytime curves: per method, the metric (mean, spread over seeds) against the time budget each
    run was given, on a log axis. ``series``: method -> [(seconds, mean or None, std or None)]."""
    return metric_against(
        series,
        metric,
        "time budget per search, seconds (log scale)",
        f"{title}: best model found against time given",
    )


def metric_against(series: dict[str, list[tuple]], metric: str, xlabel: str, title: str) -> str:
    """Per method, the metric's mean with its spread over seeds as error bars, on a log x axis."""

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (method, points) in enumerate(series.items()):
        points = sorted(p for p in points if p[0] is not None and p[1] is not None)
        if not points:
            continue
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] or 0 for p in points],
            color=PALETTE[i % len(PALETTE)],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)

    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return data_uri(fig)
