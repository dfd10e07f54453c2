"""How well the cost model predicts trials: for every search under a benchmark's output folder, the
relative error of each trial's predicted seconds (for the epochs it ran) against its actual seconds,
over the trials after the search's third finished one (the cost model has then seen three).

    python benchmarks/cost_accuracy.py benchmark-out/anytime-cpu [--name cost-accuracy-cpu]

Trials the budget stopped, skipped trials and the reference (stopped at its allowance) are left out:
they did not run what was predicted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
from common import machine, machine_md, write  # noqa: E402

AFTER = 3


def errors_of(study: optuna.Study) -> list[float]:
    from autotransfer.engine.objective import predicted_for_epochs_run

    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete),
        key=lambda t: t.datetime_complete,
    )
    out = []
    for t in finished[AFTER:]:
        attrs = t.user_attrs
        if attrs.get("stopped") or attrs.get("skipped") or attrs.get("reference"):
            continue
        predicted, actual = predicted_for_epochs_run(t), attrs.get("duration_s")
        if predicted and actual:
            out.append(abs(predicted - actual) / actual)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="a benchmark's output folder (its runs/ hold the studies)")
    parser.add_argument("--name", default="cost-accuracy-cpu")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for db in sorted(args.folder.rglob("study.db")):
        try:
            study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{db}")
        except KeyError:
            continue
        errors = errors_of(study)
        if errors:
            rows.append(
                {
                    "run": str(db.parent.relative_to(args.folder)),
                    "trials": len(errors),
                    "median_error": statistics.median(errors),
                }
            )
    every = [r["median_error"] for r in rows]
    payload = {
        "folder": str(args.folder),
        "runs": rows,
        "machine": machine(),
        "median_of_medians": statistics.median(every) if every else None,
        "share_under_30pct": sum(e < 0.3 for e in every) / len(every) if every else None,
    }
    lines = [
        "# Cost model accuracy",
        "",
        f"`python benchmarks/cost_accuracy.py {args.folder}`: for each search, the median relative error "
        f"|predicted - actual| / actual of trials after its {AFTER}rd finished one (budget-stopped, skipped "
        "and reference trials left out).",
        "",
        "Machine:",
        machine_md(payload["machine"]),
        "",
        f"Searches: {len(rows)}; median of their median errors: "
        f"{payload['median_of_medians']:.1%}; searches under 30%: {payload['share_under_30pct']:.0%}."
        if rows
        else "No searches found.",
        "",
        "| run | trials | median error |",
        "| --- | --- | --- |",
        *[f"| {r['run']} | {r['trials']} | {r['median_error']:.1%} |" for r in rows],
        "",
    ]
    write(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
