"""Trials per hour with 1, 2 and 4 workers on one machine (``--devices cpu,...``: one process each,
on one study), and the efficiency against one worker (speed-up / workers).

Small CPU trials: linear probes of EfficientNet-Lite0 at 32 px on digits, the frozen backbone
recomputed every epoch (--no-cache) so a trial is real work and not a cache lookup.

    python benchmarks/workers.py [--workers 1,2,4] [--n-trials 16] [--per-class 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_md, write  # noqa: E402

TRIAL = [
    "--image-size",
    "32",
    "--backbones",
    "tf_efficientnet_lite0",
    "--strategies",
    "linear-probe",
    "--no-cache",
    "--max-epochs",
    "2",
    "--no-pruning",
    "--no-reference",
    "--no-rank",
    "--quiet",
]


def run(data: Path, out: Path, workers: int, n_trials: int) -> dict:
    import optuna

    load = os.getloadavg()[0]  # other work on the machine skews every number here: record it
    started = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "autotransfer.cli",
            "search",
            str(data),
            "-o",
            str(out),
            "--devices",
            ",".join(["cpu"] * workers),
            "--n-trials",
            str(n_trials),
            *TRIAL,
        ],
        check=True,
    )
    wall = time.time() - started
    trials = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}").trials
    done = [t for t in trials if t.state.is_finished()]
    # trials per hour while the workers were running trials (start-up and export excluded) ...
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {
        "workers": workers,
        "trials": len(done),
        "trial_span_s": round(span, 1),
        "wall_s": round(wall, 1),
        "trials_per_hour": round(len(done) / span * 3600, 1),
        "load_average_before": round(load, 2),
        # ... and end to end, the way a user waits for the command
        "trials_per_hour_wall": round(len(done) / wall * 3600, 1),
        "states": sorted({t.state.name for t in done}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--n-trials", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    from autotransfer.features.demo import export_digits

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = export_digits(str(Path(tmp) / "digits"), per_class=args.per_class)
        for workers in [int(w) for w in args.workers.split(",")]:
            rows.append(run(data, Path(tmp) / f"out-{workers}", workers, args.n_trials))
            print(json.dumps(rows[-1]), file=sys.stderr)
    one = rows[0]
    for row in rows:
        row["speedup"] = round(row["trials_per_hour"] / one["trials_per_hour"], 2)
        row["efficiency"] = round(row["speedup"] / (row["workers"] / one["workers"]), 2)
        row["efficiency_wall"] = round(
            row["trials_per_hour_wall"] / one["trials_per_hour_wall"] / (row["workers"] / one["workers"]), 2
        )
    info = machine()
    lines = [
        "# Workers on one study: trials per hour",
        "",
        f"`python benchmarks/workers.py --workers {args.workers} --n-trials {args.n_trials} "
        f"--per-class {args.per_class}`: "
        f"{args.n_trials} trials, `autotransfer search --devices cpu,...` (one process per worker, "
        "one SQLite "
        "study, each worker's torch threads = cores / workers), linear probes of EfficientNet-Lite0 at 32 px "
        "recomputing the frozen backbone (`--no-cache`), 2 epochs, no pruning.",
        "",
        "| workers | trials | trials/hour (running) | speed-up | efficiency | trials/hour (wall) | "
        "efficiency (wall) | wall s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {r['workers']} | {r['trials']} | {r['trials_per_hour']} | {r['speedup']} | "
            f"{r['efficiency']} | "
            f"{r['trials_per_hour_wall']} | {r['efficiency_wall']} | {r['wall_s']} |"
            for r in rows
        ],
        "",
        "Running: from the first trial's start to the last trial's end. Wall: the whole command, with each "
        "worker's start-up (importing torch, decoding the data) and the final export. Efficiency: speed-up "
        "divided by the number of workers (1.0 is perfect scaling).",
        "",
        "## Machine",
        "",
        machine_md(info),
        "",
    ]
    write("workers", {"machine": info, "args": vars(args), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
