"""What exported ensembles gave on test: for every search under benchmark output folders whose
best.json exported an ensemble, its test accuracy against the best single trial of the same run (both
in best.json: ``test_metric`` and ``single``), paired, so the search's run-to-run noise cancels. Runs
met twice (a folder copied to add methods beside it: the same run.json) count once.

    python benchmarks/ensemble_gain.py benchmark-out/anytime-cpu-2m [MORE...] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_md, write  # noqa: E402


def pairs(folders: list[Path]) -> tuple[list[dict], int]:
    """One row per distinct run that exported an ensemble, and the number of searches read."""
    rows, seen, searches = [], set(), 0
    for folder in folders:
        for path in sorted(folder.glob("runs/*/*/autotransfer/*/best.json")):
            best = json.loads(path.read_text())
            searches += 1
            if not (best.get("ensemble") or {}).get("exported"):
                continue
            # a copied folder's run is byte for byte the same (its timings too); another run is not
            run = path.parent / "run.json"
            key = (run if run.is_file() else path).read_text()
            if key in seen:
                continue
            seen.add(key)
            single = best["single"]
            values = (single["val_metric"], single["test_metric"], best["val_metric"], best["test_metric"])
            rows.append(
                {
                    "run": str(path.parent),
                    "members": len(best["ensemble"]["members"]),
                    "single_val": values[0],
                    "single_test": values[1],
                    "ensemble_val": values[2],
                    "ensemble_test": values[3],
                    "gain": values[3] - values[1],
                }
            )
    return rows, searches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", type=Path, nargs="+", help="benchmark output folders")
    parser.add_argument("--name", default="ensemble-gain-cpu")
    args = parser.parse_args()
    rows, searches = pairs(args.folders)
    gains = [r["gain"] for r in rows]
    summary = {
        "runs_with_an_ensemble": len(rows),
        "searches_read": searches,
        "mean_gain": statistics.mean(gains) if gains else None,
        "higher": sum(g > 0 for g in gains),
        "equal": sum(g == 0 for g in gains),
        "lower": sum(g < 0 for g in gains),
        "tied_on_validation": sum(r["ensemble_val"] == r["single_val"] for r in rows),
    }
    payload = {
        "folders": [str(f) for f in args.folders],
        "summary": summary,
        "runs": rows,
        "machine": machine(),
    }
    lines = [
        "# What exported ensembles gave on test",
        "",
        f"`python benchmarks/ensemble_gain.py {' '.join(map(str, args.folders))}`: each run whose search "
        "exported an ensemble, its test accuracy against the best single trial of the same run (paired).",
        "",
        "Machine:",
        machine_md(payload["machine"]),
        "",
        f"Searches read: {searches}; with an ensemble: {len(rows)}"
        + (
            f"; its test accuracy higher than the best trial's in {summary['higher']}, equal in "
            f"{summary['equal']}, lower in {summary['lower']}; mean gain {summary['mean_gain']:+.4f}; "
            f"tied with it on validation: {summary['tied_on_validation']}."
            if rows
            else "."
        ),
        "",
        "| run | members | single val | single test | ensemble val | ensemble test | gain |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['run']} | {r['members']} | {r['single_val']:.4f} | {r['single_test']:.4f} | "
            f"{r['ensemble_val']:.4f} | {r['ensemble_test']:.4f} | {r['gain']:+.4f} |"
            for r in rows
        ),
    ]
    write(args.name, payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
