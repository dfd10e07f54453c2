"""A benchmark's report (one HTML page and its Markdown twin) and the CSVs beside it."""

from __future__ import annotations

import json
from pathlib import Path

from .. import plots
from ..page import Section, esc, image, md_table, render, render_markdown, table
from .methods import METHODS
from .runner import main_records, size_of
from .stats import PORTFOLIO_ABLATION, anytime, efficiency, mean, summarise, time_to_target
from .suite import Suite, size_label

RUN_COLUMNS = [
    "dataset",
    "seed",
    "method",
    "budget_s",
    "size",
    "n_train",
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
DIGITS = {
    "seconds": 1,
    "seconds_mean": 1,
    "trials_mean": 1,
    "rank": 1,
    "mean_rank": 2,
    "budget_s": 0,
    "over_s": 1,
}


def section(
    key: str, title: str, text: str, rows: list[dict], columns: list[str], extra_html: str = "", **options
) -> Section:
    """A section with a sentence and a table, in HTML (with ``extra_html`` before the table) and Markdown."""
    return Section(
        key,
        title,
        f"<p>{esc(text)}</p>" + extra_html + table(rows, columns, **options),
        text + "\n\n" + md_table(rows, columns, **options),
    )


def write_csvs(out: Path, records: list[dict], summary: dict, curves: dict, timed: dict) -> list[Path]:
    import pandas as pd

    history = [
        {
            "dataset": r["dataset"],
            "size": size_of(r),
            "budget_s": r.get("budget_s"),
            "seed": r["seed"],
            "method": r["method"],
            "elapsed_s": t,
            "val_metric": v,
        }
        for r in records
        for t, v in r["history"]
    ]
    frames = {
        "runs.csv": pd.DataFrame(records, columns=RUN_COLUMNS),
        "per_dataset.csv": pd.DataFrame(summary["per_dataset"]),
        "mean_rank.csv": pd.DataFrame(summary["mean_rank"]),
        "wins_ties_losses.csv": pd.DataFrame(summary["wins_ties_losses"]),
        "history.csv": pd.DataFrame(
            history, columns=["dataset", "size", "budget_s", "seed", "method", "elapsed_s", "val_metric"]
        ),
    }
    if curves["points"]:
        frames["data_efficiency.csv"] = pd.DataFrame(curves["points"])
        frames["data_efficiency_verdicts.csv"] = pd.DataFrame(curves["verdicts"])
    if timed["points"]:
        frames["anytime.csv"] = pd.DataFrame(timed["points"])
        frames["anytime_verdicts.csv"] = pd.DataFrame(timed["verdicts"])
        frames["anytime_overruns.csv"] = pd.DataFrame(timed["overruns"])
    if timed.get("head_start"):
        frames["head_start.csv"] = pd.DataFrame(timed["head_start"])
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
    return [out / name for name in frames]


def setup_text(suite: Suite, methods: list[dict]) -> str:
    budget = " and ".join(
        filter(
            None,
            [
                f"{suite.n_trials} trials" if suite.n_trials else "",
                f"{suite.seconds:g} s" if suite.seconds else "",
            ],
        )
    )
    recipes = [m for m in ("default-recipe", "top-ranked") if m in suite.methods]
    text = (
        f"Datasets: {len(suite.datasets)}; seeds: {', '.join(map(str, suite.seeds))}; methods: "
        f"{len(methods)}. "
        + (
            f"Budget per search: {budget or 'the default'}"
            if suite.main_budget is None
            else f"Budget per search: each time budget below; ranks and wins at the largest, "
            f"{suite.main_budget:g} s"
        )
        + (f"; the fixed recipes run one trial of {suite.recipe_epochs} epochs" if recipes else "")
        + f". Search options: {json.dumps(suite.search)}. Every method but plain-loop runs through the same "
        "engine on the same files, split (per seed) and device; the test split is held out and used once per "
        "run. Metric: test accuracy of the run's best configuration."
    )
    if suite.sizes:
        text += (
            f" Data efficiency: {', '.join(suite.efficiency_methods)} also run on "
            f"{', '.join(size_label(s) for s in suite.sizes)} of each training split (stratified, seeded; "
            "validation and test stay the full split's)."
        )
    if suite.budgets:
        text += (
            f" Anytime curves: {', '.join(suite.methods)} also run with each time budget of "
            f"{', '.join(f'{b:g}' for b in suite.budgets)} seconds, the whole command (start-up, every trial "
            "and the final test) timed."
        )
    return text


def report_sections(
    suite: Suite, records: list[dict], summary: dict, env: dict, curves: dict, timed: dict
) -> list[Section]:
    methods = [
        {"method": m, "what": METHODS[m].description}
        for m in dict.fromkeys(suite.methods + suite.efficiency_methods)
    ]
    out = [section("setup", "Setup", setup_text(suite, methods), methods, ["method", "what"])]
    comparison = main_records(suite, records)
    if suite.methods and comparison:
        out += rank_sections(suite, summary)
        out += [dataset_section(suite, entry, comparison, summary) for entry in suite.datasets]
    if timed["points"]:
        out += anytime_sections(suite, timed)
    if timed.get("head_start"):
        out.append(head_start_section(suite, timed["head_start"]))
    if curves["points"]:
        out += efficiency_sections(suite, curves)
    files = (
        "runs.csv (one row a run), per_dataset.csv, mean_rank.csv, wins_ties_losses.csv, history.csv (every "
        "completed trial's validation metric against time)"
        + (", data_efficiency.csv and data_efficiency_verdicts.csv (the curves)" if suite.sizes else "")
        + (", anytime.csv, anytime_verdicts.csv and anytime_overruns.csv" if suite.budgets else "")
        + (", head_start.csv (the portfolio's head start)" if timed.get("head_start") else "")
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


def rank_sections(suite: Suite, summary: dict) -> list[Section]:
    rank_text = (
        "Methods ranked per dataset by mean test metric over seeds (1 is best, ties share), then "
        "averaged across datasets."
    )
    wtl_text = (
        f"{suite.subject} against each other method, one comparison per dataset and seed, on test "
        f"metric (a tie within {suite.tie_tolerance})."
    )
    return [
        section(
            "mean-rank",
            "Mean rank across datasets",
            rank_text,
            summary["mean_rank"],
            ["method", "mean_rank", "datasets"],
            headers=["method", "mean rank", "datasets"],
            digits=DIGITS,
        ),
        section(
            "wins-ties-losses",
            "Wins, ties and losses",
            wtl_text,
            summary["wins_ties_losses"],
            ["against", "wins", "ties", "losses"],
        ),
    ]


def dataset_section(suite: Suite, entry: dict, records: list[dict], summary: dict) -> Section:
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
    return Section(
        f"dataset-{name}",
        f"Dataset: {name}",
        body,
        where + "\n\n" + md_table(rows, DATASET_COLUMNS, headers=DATASET_HEADERS, digits=DIGITS),
    )


def shown(point: dict) -> str:
    if point["test_mean"] is None:
        return "-"
    return f"{point['test_mean']:.4f}" + (
        f" ± {point['test_std']:.4f}" if point["test_std"] is not None else ""
    )


def curve(points: list[dict], methods: list[str], x: str, draw, name: str, against: str) -> str:
    """One dataset's test accuracy (mean ± std over seeds) for each method against ``x``, drawn."""
    series = {m: [(p[x], p["test_mean"], p["test_std"]) for p in points if p["method"] == m] for m in methods}
    return image(draw(series, "test accuracy", name), f"{name}: accuracy against {against}")


def anytime_sections(suite: Suite, timed: dict) -> list[Section]:
    """Per dataset: best test accuracy against the time budget given, a line per method; a table per
    budget with the subject's verdict; then every run's time against its budget."""
    out = []
    for entry in suite.datasets:
        name = entry["name"]
        points = [p for p in timed["points"] if p["dataset"] == name]
        verdicts = {v["budget_s"]: v for v in timed["verdicts"] if v["dataset"] == name}
        rows = []
        for budget in suite.budgets:
            at = {p["method"]: p for p in points if p["budget_s"] == budget}
            row = {"budget_s": budget, **{m: shown(at[m]) for m in suite.methods if m in at}}
            verdict = verdicts.get(budget)
            if verdict:
                row["verdict"] = (
                    f"{'holds' if verdict['holds'] else 'FAILS'} "
                    f"({verdict['difference']:+.4f} against {verdict['best_other']})"
                )
            rows.append(row)
        text = (
            f"Test accuracy (mean ± std over seeds {', '.join(map(str, suite.seeds))}) of the best "
            "model each "
            f"method found when given each time budget. Verdict: {suite.subject}'s mean is at least the best "
            "other method's (an ablation aside), within one test example."
        )
        plot = curve(points, suite.methods, "budget_s", plots.accuracy_against_budget, name, "time")
        out.append(
            section(
                f"anytime-{name}",
                f"Anytime: {name}",
                text,
                rows,
                ["budget_s", *suite.methods, "verdict"],
                extra_html=plot,
                digits=DIGITS,
            )
        )
    return [*out, overrun_section(timed["overruns"])]


def head_start_section(suite: Suite, rows: list[dict]) -> Section:
    """The portfolio's head start: how soon the search, with and without it, reached the best
    baseline's validation score."""
    subject, ablation = suite.subject, PORTFOLIO_ABLATION

    def seconds(row: dict, method: str) -> str:
        value = row[f"{method}_s"]
        if value is None:  # no run of it at this dataset and budget
            return "-"
        shown = "never" if value == float("inf") else f"{value:.1f} s"
        return f"{shown} ({row[f'{method}_reached']} of {row[f'{method}_runs']})"

    shown_rows = [
        {
            "dataset": r["dataset"],
            "budget_s": "-" if r["budget_s"] is None else f"{r['budget_s']:g}",
            "target": f"{r['target']:.4f} ({r['target_method']})",
            subject: seconds(r, subject),
            ablation: seconds(r, ablation),
            "verdict": "holds" if r["holds"] else "FAILS",
        }
        for r in rows
    ]
    text = (
        "Seconds into the run (median over seeds; how many runs reached it) until a finished trial's "
        "validation score first reached the target: the best baseline's mean validation score at that "
        f"budget. Verdict: {subject} takes at most half the time of the same search without the portfolio."
    )
    return section(
        "head-start",
        "The portfolio's head start",
        text,
        shown_rows,
        ["dataset", "budget_s", "target", subject, ablation, "verdict"],
    )


def overrun_section(overruns: list[dict]) -> Section:
    """How well every anytime run kept its budget, and the runs that did not."""
    late = [r for r in overruns if not r["within"]]
    worst = max(overruns, key=lambda r: r["over_s"]) if overruns else None
    text = (
        f"{len(overruns) - len(late)} of {len(overruns)} runs ended within their budget plus max(5%, 15 s)"
        + (
            f"; the largest overrun: {worst['over_s']:+.1f} s ({worst['method']}, {worst['dataset']}, "
            f"{worst['budget_s']:g} s budget)"
            if worst
            else ""
        )
        + (". Runs over it:" if late else ".")
    )
    if not late:
        return Section("anytime-overruns", "Anytime: time kept", f"<p>{esc(text)}</p>", text)
    return section(
        "anytime-overruns",
        "Anytime: time kept",
        text,
        late,
        ["dataset", "budget_s", "method", "seed", "seconds", "over_s"],
        digits=DIGITS,
    )


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
            row = {"size": label, "labels": mean([p["n_train"] for p in at.values()])}
            row |= {m: shown(at[m]) for m in methods}
            row |= {f"vs {v['against']}": v["verdict"] for v in verdicts if v["size"] == label}
            rows.append(row)
        columns = [
            "size",
            "labels",
            *methods,
            *[f"vs {m}" for m in methods if any(v["against"] == m for v in verdicts)],
        ]
        subject = verdicts[0]["method"] if verdicts else methods[0]
        text = (
            f"Test accuracy (mean ± std over seeds {', '.join(map(str, suite.seeds))}) against the number of "
            f"labelled training examples; validation and test sets are the same at every size. 'vs' columns: "
            f"{subject}'s mean against that method's (a tie within {suite.tie_tolerance})."
        )
        plot = curve(points, methods, "n_train", plots.accuracy_against_labels, name, "labels")
        out.append(
            section(
                f"efficiency-{name}",
                f"Data efficiency: {name}",
                text,
                rows,
                columns,
                extra_html=plot,
                digits={"labels": 0},
            )
        )
    return out


def write_benchmark_report(
    suite: Suite, out: str | Path, records: list[dict], env: dict
) -> tuple[Path, Path]:
    out = Path(out)
    summary = summarise(main_records(suite, records), suite.methods, suite.subject, suite.tie_tolerance)
    curves, timed = efficiency(records, suite), anytime(records, suite)
    timed["head_start"] = time_to_target(records, suite)
    write_csvs(out, records, summary, curves, timed)
    (out / "machine.json").write_text(json.dumps(env, indent=2))
    parts = report_sections(suite, records, summary, env, curves, timed)
    title = f"autotransfer benchmark: {suite.name}"
    where = env.get("gpu") or f"{env.get('cpu', env.get('platform'))}, {env.get('cpu_count')} cores"
    described = suite.description + " " if suite.description else ""
    subtitle = f"{described}{len(records)} runs on {env['device']} ({where})"
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render(title, subtitle, parts), encoding="utf-8")
    md_path.write_text(render_markdown(title, subtitle, parts), encoding="utf-8")
    return html_path, md_path
