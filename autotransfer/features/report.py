"""The report of one search: what a user forwards to a colleague. One self-contained HTML page and a
Markdown summary, written beside the search's outputs, read from the study itself (so it works on
any finished or interrupted search) and from best.json when the search got that far."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..engine.results import leaderboard_rows, transfer_verdict
from ..errors import UserError
from . import plots
from .page import Section, cards, esc, fmt, image, md_table, render, render_markdown, table

COMPLETE = optuna.trial.TrialState.COMPLETE
SECTIONS = (
    "best",
    "verdict",
    "leaderboard",
    "history",
    "importance",
    "by-backbone",
    "by-strategy",
    "pruned-failed",
    "environment",
)


@dataclass
class Searched:
    """A finished (or interrupted) search, as its output folder holds it."""

    out_dir: Path
    study: optuna.Study
    storage: str
    best: dict | None
    rows: list[dict]

    @property
    def metric(self) -> str:
        return (self.best or {}).get("metric", "accuracy")


def open_study(out_dir: Path, storage: str | None, study_name: str) -> tuple[optuna.Study, str]:
    if storage is None:
        db = out_dir / "study.db"
        if not db.is_file():
            raise UserError(f"{out_dir}: no study.db; give the folder a search wrote (or --storage URL)")
        storage = f"sqlite:///{db.resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as exc:
        raise UserError(f"--storage {storage}: cannot open ({type(exc).__name__}: {exc})") from exc
    if study_name not in names:
        raise UserError(
            f"{storage}: no study named {study_name!r}; it holds {', '.join(names) or 'none'} "
            "(pass --study-name)"
        )
    return optuna.load_study(study_name=study_name, storage=storage), storage


def load(out_dir: str | Path, *, storage: str | None = None, study_name: str = "autotransfer") -> Searched:
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out}: no such folder; give the --output folder of a search")
    study, url = open_study(out, storage, study_name)
    best_path = out / "best.json"
    best = json.loads(best_path.read_text()) if best_path.is_file() else None
    return Searched(out, study, url, best, leaderboard_rows(study))


# the numbers behind the sections ----------------------------------------------------------------
def history_points(study: optuna.Study) -> list[dict]:
    """Each finished trial: seconds from the study's first start to its end, its value and state."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return []
    start = min(t.datetime_start for t in trials)
    points = []
    for t in trials:
        value = (
            t.value
            if t.value is not None
            else (max(t.intermediate_values.values()) if t.intermediate_values else None)
        )
        points.append(
            {
                "number": t.number,
                "elapsed_s": (t.datetime_complete - start).total_seconds(),
                "value": value,
                "state": t.state.name,
            }
        )
    return sorted(points, key=lambda p: p["elapsed_s"])


def parameter_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances over the completed trials (the random-init reference left out), or why not."""
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if not t.user_attrs.get("reference")
    ]
    if len(complete) < 2:
        return None, (
            f"Parameter importances need at least 2 completed trials (the random-init reference not "
            f"counted); this search has {len(complete)}. Run more trials (or --no-pruning) to see them."
        )
    shared = set.intersection(*(set(t.params) for t in complete))
    varying = sorted(p for p in shared if len({repr(t.params[p]) for t in complete}) > 1)
    if not varying:
        return (
            None,
            "Parameter importances need a parameter that varies across the completed trials; none did.",
        )
    if len({t.value for t in complete}) == 1:
        return None, (
            f"Parameter importances need completed trials whose validation results differ; all "
            f"{len(complete)} reached {fmt(complete[0].value)}, so no parameter made a difference to measure."
        )
    sub = optuna.create_study(direction="maximize")
    sub.add_trials(complete)
    try:
        values = optuna.importance.get_param_importances(
            sub, params=varying, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (RuntimeError, ValueError) as exc:  # fANOVA refuses data it cannot split; the rest still renders
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"Parameter importances could not be computed for these trials (fANOVA: {reason})."
    return dict(values), (
        f"fANOVA over {len(complete)} completed trials, on the parameters every one of them "
        "has; a strategy's own knobs show once enough trials of it complete."
    )


def groups_of(rows: list[dict], key: str) -> dict[str, list[tuple[float, str]]]:
    """Trial values grouped by ``key``; the random-init reference is its own strategy, no backbone's."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for row in rows:
        if row["value"] is None or row[key] is None or (key == "backbone" and row["reference"]):
            continue
        name = f"{row[key]} (reference)" if row["reference"] and key == "strategy" else row[key]
        groups.setdefault(name, []).append((row["value"], row["state"]))
    return groups


def group_summary(groups: dict[str, list[tuple[float, str]]]) -> list[dict]:
    return sorted(
        (
            {
                "name": name,
                "trials": len(values),
                "complete": sum(s == "COMPLETE" for _, s in values),
                "best": max(v for v, _ in values),
                "median": statistics.median(v for v, _ in values),
            }
            for name, values in groups.items()
        ),
        key=lambda r: -r["best"],
    )


def compact_params(params: str) -> str:
    """The leaderboard's params without what has its own column, as ``name=value`` pairs."""
    values = json.loads(params) if params else {}
    return ", ".join(
        f"{k}={fmt(v, 3 if isinstance(v, float) else 4)}"
        for k, v in values.items()
        if k not in ("backbone", "strategy")
    )


# the sections ------------------------------------------------------------------------------------
def _best_so_far(s: Searched) -> Section:
    """An unfinished search (interrupted, or still running elsewhere): its best trial so far, no
    test metric."""
    if not s.study.get_trials(deepcopy=False, states=(COMPLETE,)):
        text = (
            "No trial completed, so there is no best configuration and no test metric; the reasons are "
            "under Pruned and failed trials."
        )
        return Section("best", "Best configuration", f'<p class="note">{esc(text)}</p>', text)
    t = s.study.best_trial
    items = [
        (f"validation {s.metric}", t.value),
        ("backbone", t.user_attrs.get("backbone")),
        ("strategy", t.user_attrs.get("strategy")),
        ("trial", t.number),
    ]
    text = (
        "The search has not finished (no best.json): this is its best trial so far. The held-out test metric "
        "and the exported model come when it finishes: run the same search command again."
    )
    params = [{"parameter": k, "value": v} for k, v in t.params.items()]
    body = cards(items) + f'<p class="note">{esc(text)}</p>' + table(params, ["parameter", "value"])
    return Section(
        "best",
        "Best configuration",
        body,
        md_table([dict(items)], [label for label, _ in items]) + f"\n\n{text}",
    )


def _best(s: Searched) -> Section:
    if s.best is None:
        return _best_so_far(s)
    b = s.best
    items = [
        (f"test {b.get('test_metric_name', s.metric)}", b.get("test_metric")),
        (f"validation {b['metric']}", b.get("val_metric")),
        ("backbone", b["backbone"]),
        ("strategy", b["strategy"]),
        ("trial", b["trial"]),
    ]
    if "target_accuracy" in b:
        items.append(("target accuracy (reported, not optimised)", b["target_accuracy"]))
    params = [{"parameter": k, "value": v} for k, v in b["params"].items()]
    split = f"train / validation / test: {b.get('n_train')} / {b.get('n_val')} / {b.get('n_test')} examples"
    note = b.get("note", "The test split was held out from the search and used once, on this configuration.")
    body = cards(items) + f"<p>{esc(split)}. {esc(note)}</p>" + table(params, ["parameter", "value"])
    md = (
        md_table([dict(items)], [label for label, _ in items])
        + f"\n\n{split}. {note}\n\n"
        + md_table(params, ["parameter", "value"])
    )
    return Section("best", "Best configuration", body, md)


def _verdict(s: Searched) -> Section:
    verdict = {k: s.best[k] for k in ("transfer_helped", "verdict")} if s.best else transfer_verdict(s.study)
    helped = verdict.get("transfer_helped")
    kind = "unknown" if helped is None else ("" if helped else "bad")
    said = verdict["verdict"]
    text = (
        f"{said[:1].upper()}{said[1:]}. The reference is the same architecture trained from random weights "
        "(the reference strategy), at most at the cost of the median transfer trial."
    )
    return Section("verdict", "Did transfer help?", f'<p class="verdict {kind}">{esc(text)}</p>', text)


DIGITS = {"duration_s": 1}
LEADERBOARD_VIEW = [
    "number",
    "state",
    "backbone",
    "strategy",
    "value",
    "epochs_run",
    "duration_s",
    "knobs",
    "reason",
]


def _leaderboard(s: Searched) -> Section:
    rows = sorted(s.rows, key=lambda r: (r["value"] is None, -(r["value"] or 0), r["number"]))
    view = [
        r
        | {
            "knobs": compact_params(r["params"]),
            "reason": r["fail_reason"] or "",
            "strategy": f"{r['strategy']} (reference)" if r["reference"] else r["strategy"],
        }
        for r in rows
    ]
    headers = [
        "trial",
        "state",
        "backbone",
        "strategy",
        f"val {s.metric}",
        "epochs",
        "seconds",
        "parameters",
        "why it stopped",
    ]
    note = (
        f"<p>{len(rows)} trials, best first. A pruned trial's value is its best epoch before it was stopped. "
        f"The same rows are in <code>leaderboard.csv</code>.</p>"
    )
    md_rows = view[:15]
    md = md_table(md_rows, LEADERBOARD_VIEW[:7], headers=headers[:7], digits=DIGITS)
    if len(view) > len(md_rows):
        md += f"\n\n(top {len(md_rows)} of {len(view)}; all in leaderboard.csv and report.html)"
    body = note + table(view, LEADERBOARD_VIEW, headers=headers, code=("knobs",), digits=DIGITS)
    return Section("leaderboard", "Leaderboard", body, md)


def _history(s: Searched) -> Section:
    points = history_points(s.study)
    if not points:
        text = "No trial has finished yet."
        return Section("history", "Optimisation history", f'<p class="note">{text}</p>', text)
    span = points[-1]["elapsed_s"]
    text = (
        f"{len(points)} trials over {span:.0f} seconds; each point is a trial at the time it ended, the line "
        "the best completed trial so far."
    )
    return Section(
        "history",
        "Optimisation history",
        f"<p>{esc(text)}</p>" + image(plots.history(points, s.metric), "optimisation history"),
        text,
    )


def _importance(s: Searched) -> Section:
    values, note = parameter_importances(s.study)
    if values is None:
        return Section("importance", "Parameter importances", f'<p class="note">{esc(note)}</p>', note)
    rows = [{"parameter": k, "importance": v} for k, v in values.items()]
    return Section(
        "importance",
        "Parameter importances",
        f"<p>{esc(note)}</p>"
        + image(plots.importances(values), "parameter importances")
        + table(rows, ["parameter", "importance"]),
        note + "\n\n" + md_table(rows, ["parameter", "importance"]),
    )


def _by(s: Searched, key: str) -> Section:
    groups = groups_of(s.rows, key)
    title = f"Accuracy by {key}"
    if not groups:
        text = f"No trial has a value yet, so there is nothing to compare by {key}."
        return Section(f"by-{key}", title, f'<p class="note">{text}</p>', text)
    summary = group_summary(groups)
    columns = ["name", "trials", "complete", "best", "median"]
    headers = [key, "trials", "complete", f"best val {s.metric}", "median"]
    text = "Every trial with a value (pruned ones at their best epoch); the bar marks each group's best."
    if key == "backbone":
        text += " The random-init reference is left out: it does not use the pretrained weights."
    body = (
        f"<p>{esc(text)}</p>"
        + image(plots.by_group(groups, key, s.metric), title)
        + table(summary, columns, headers=headers)
    )
    return Section(f"by-{key}", title, body, md_table(summary, columns, headers=headers))


def _stopped(s: Searched) -> Section:
    rows = [r for r in s.rows if r["state"] in ("PRUNED", "FAIL")]
    if not rows:
        text = "None: every trial ran to its last epoch."
        return Section("pruned-failed", "Pruned and failed trials", f"<p>{text}</p>", text)
    columns = ["number", "state", "backbone", "strategy", "epochs_run", "value", "fail_reason"]
    headers = ["trial", "state", "backbone", "strategy", "epochs run", f"best val {s.metric}", "reason"]
    counts = {state: sum(r["state"] == state for r in rows) for state in ("PRUNED", "FAIL")}
    text = (
        f"{counts['PRUNED']} pruned (stopped early by the pruner: poor validation {s.metric} at an epoch), "
        f"{counts['FAIL']} failed (an error, recorded with its reason; the search went on)."
    )
    if (s.out_dir / "failures.log").is_file():
        text += " Failed trials' tracebacks are in failures.log."
    return Section(
        "pruned-failed",
        "Pruned and failed trials",
        f"<p>{esc(text)}</p>" + table(rows, columns, headers=headers),
        text + "\n\n" + md_table(rows, columns, headers=headers),
    )


def _environment(s: Searched) -> Section:
    env = dict((s.best or {}).get("environment") or {})
    facts = [{"what": k, "value": v} for k, v in env.items()]
    if not env:
        facts.append({"what": "environment", "value": "not recorded (the search wrote no best.json)"})
    attrs = s.study.user_attrs
    facts += [
        {"what": "study", "value": f"{s.study.study_name} in {s.storage}"},
        {"what": "data", "value": attrs.get("data", "-")},
        {"what": "task", "value": attrs.get("task", "-")},
        {"what": "classes", "value": len(attrs.get("classes", [])) or "-"},
    ]
    body = table(facts, ["what", "value"], code=("value",))
    md = md_table(facts, ["what", "value"])
    ranking = attrs.get("ranking")
    if ranking:
        ranked = [{"rank": i, "backbone": name, "LogME": score} for i, (name, score) in enumerate(ranking, 1)]
        body += "<h3>Backbones ranked by LogME before training</h3>" + table(
            ranked, ["rank", "backbone", "LogME"]
        )
        md += "\n\nBackbones ranked by LogME before training:\n\n" + md_table(
            ranked, ["rank", "backbone", "LogME"]
        )
    return Section("environment", "Environment", body, md)


def sections(s: Searched) -> list[Section]:
    return [
        _best(s),
        _verdict(s),
        _leaderboard(s),
        _history(s),
        _importance(s),
        _by(s, "backbone"),
        _by(s, "strategy"),
        _stopped(s),
        _environment(s),
    ]


def write_report(
    out_dir: str | Path, *, storage: str | None = None, study_name: str = "autotransfer"
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns their paths."""
    searched = load(out_dir, storage=storage, study_name=study_name)
    parts = sections(searched)
    data = searched.study.user_attrs.get("data", str(out_dir))
    title = f"autotransfer report: {Path(data).name}"
    best = searched.best
    subtitle = f"{len(searched.rows)} trials on {data}" + (
        f"; best {best['backbone']} / {best['strategy']}, test "
        f"{best.get('test_metric_name', searched.metric)} "
        f"{fmt(best.get('test_metric'))}"
        if best
        else "; no trial completed"
    )
    out = Path(out_dir)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render(title, subtitle, parts), encoding="utf-8")
    md_path.write_text(render_markdown(title, subtitle + ". Plots: report.html.", parts), encoding="utf-8")
    return html_path, md_path
