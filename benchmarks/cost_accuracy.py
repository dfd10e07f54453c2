"""How well the cost model predicts trials: for every search under a benchmark's output folder, the
relative error of each trial's predicted seconds (for the epochs it ran) against its actual seconds,
over the trials after the search's third finished one (the cost model has then seen three).

    python benchmarks/cost_accuracy.py benchmark-out/anytime-cpu [MORE...] [--name NAME] [--replay]

Trials the budget stopped, skipped trials and the reference (stopped at its allowance) are left out:
they did not run what was predicted.

``--replay`` adds a second column: each trial's prediction again, from the parts it recorded (its
measured one-off and per-epoch seconds) with the correction and overhead this checkout's cost model
learns from the same study's earlier trials, in the order they finished. It shows what a change to how
the model learns from finished trials does on recorded searches; the trials stay the ones that ran (a
search run with the change would have planned some of them differently).
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


def errors_of(study: optuna.Study) -> tuple[list[float], list[float]]:
    """The recorded predictions' relative errors, and the replayed ones' (same trials)."""
    from autotransfer.engine.cost import CostModel
    from autotransfer.engine.objective import observe, predicted_for_epochs_run

    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete),
        key=lambda t: t.datetime_complete,
    )
    saved = study.user_attrs  # the study's measured rates (``cost|DEVICE|...``), read back as a run does
    devices = [key.split("|")[1] for key in saved if key.startswith("cost|")]
    cost = CostModel(devices[0] if devices else "replay", saved, lambda key, value: None)
    recorded, replayed = [], []
    for i, t in enumerate(finished):
        attrs = t.user_attrs
        counted = i >= AFTER and not (attrs.get("stopped") or attrs.get("skipped") or attrs.get("reference"))
        predicted, actual = predicted_for_epochs_run(t), attrs.get("duration_s")
        if counted and predicted and actual:
            recorded.append(abs(predicted - actual) / actual)
            replayed.append(abs(predicted_for_epochs_run(t, cost) - actual) / actual)
        observe(cost, t)
    return recorded, replayed


def summary(medians: list[float]) -> tuple[float | None, float | None]:
    if not medians:
        return None, None
    return statistics.median(medians), sum(e < 0.3 for e in medians) / len(medians)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "folders", type=Path, nargs="+", help="benchmark output folders (their runs/ hold the studies)"
    )
    parser.add_argument("--name", default="cost-accuracy-cpu")
    parser.add_argument(
        "--replay", action="store_true", help="also replay each prediction with this checkout's cost model"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    many = len(args.folders) > 1
    for folder, db in ((f, db) for f in args.folders for db in sorted(f.rglob("study.db"))):
        try:
            study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{db}")
        except KeyError:
            continue
        errors, again = errors_of(study)
        if errors:
            row = {
                "run": str(db.parent.relative_to(folder.parent if many else folder)),
                "trials": len(errors),
                "median_error": statistics.median(errors),
            }
            if args.replay:
                row["replayed_median_error"] = statistics.median(again)
            rows.append(row)
    median, under = summary([r["median_error"] for r in rows])
    payload = {
        "folders": [str(f) for f in args.folders],
        "runs": rows,
        "machine": machine(),
        "median_of_medians": median,
        "share_under_30pct": under,
    }
    lines = [
        "# Cost model accuracy",
        "",
        f"`python benchmarks/cost_accuracy.py {' '.join(map(str, args.folders))}"
        f"{' --replay' if args.replay else ''}`: for each "
        "search, the median relative error "
        f"|predicted - actual| / actual of trials after its {AFTER}rd finished one (budget-stopped, skipped "
        "and reference trials left out).",
        "",
        "Machine:",
        machine_md(payload["machine"]),
        "",
        f"Searches: {len(rows)}; median of their median errors: {median:.1%}; "
        f"searches under 30%: {under:.0%}."
        if rows
        else "No searches found.",
    ]
    if args.replay and rows:
        median, under = summary([r["replayed_median_error"] for r in rows])
        payload["replayed_median_of_medians"], payload["replayed_share_under_30pct"] = median, under
        lines += [
            "",
            "Replayed (the same trials' recorded parts, the correction and overhead this checkout learns "
            f"from each study's earlier trials): median of median errors {median:.1%}; searches under 30%: "
            f"{under:.0%}.",
        ]
    extra = args.replay and rows
    lines += [
        "",
        "| run | trials | median error |" + (" replayed |" if extra else ""),
        "| --- | --- | --- |" + (" --- |" if extra else ""),
        *[
            f"| {r['run']} | {r['trials']} | {r['median_error']:.1%} |"
            + (f" {r['replayed_median_error']:.1%} |" if extra else "")
            for r in rows
        ],
        "",
    ]
    write(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
