"""Several workers on one study: one process per device on this machine (``--devices``), and the
best model written from the study alone (``autotransfer export``), for workers on other machines.

Workers share everything through the Optuna study: the split, the saved configuration, the trials.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import SearchConfig, with_driver
from .errors import UserError


def parse_devices(text: str) -> list[str]:
    """``0,1,3`` (GPU indices) or ``cpu,cpu`` (CPU workers); one worker each."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    wrong = [d for d in devices if d != "cpu" and not d.isdigit()]
    if not devices or wrong:
        raise UserError(f"--devices {text}: give GPU indices or cpu, comma-separated (0,1 or cpu,cpu)")
    return devices


def _worker_env(device: str, n_cpu_workers: int) -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        # CPU workers share the cores instead of each starting a thread per core
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_cpu_workers))
    else:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


def run_workers(config: SearchConfig, devices: Sequence[str]):
    """Open the study here (split, first trials), run one worker process per device on it, then
    export the best model once, from this process."""
    from .engine import Search, SearchResult
    from .progress import Progress
    from .results import write_leaderboard

    here = "cpu" if devices[0] == "cpu" else f"cuda:{devices[0]}"
    search = Search(dataclasses.replace(config, device=here))
    search._enqueue_first_trials()
    progress = Progress(
        total=config.n_trials,
        already=search.counted_trials(),
        timeout=config.timeout,
        quiet=config.quiet,
        metric=search.metric,
    )
    progress.start(search)
    say = progress._print
    say(f"  workers: {len(devices)}, one a device ({', '.join(devices)})")
    n_cpu = sum(d == "cpu" for d in devices) or 1
    procs = []
    for device in devices:
        child = dataclasses.replace(config, device="cpu" if device == "cpu" else "cuda")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "autotransfer.workers", json.dumps(child.to_dict())],
                env=_worker_env(device, n_cpu),
            )
        )
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: let them record their trials
        for p in procs:
            p.wait()
        raise
    for device, code in zip(devices, codes):
        if code != 0:
            say(
                f"warning: the worker on device {device} exited with code {code}; "
                "its finished trials are kept"
            )
    write_leaderboard(search.study, search.out / "leaderboard.csv")
    best = search.finalize()
    progress.finish(best)
    return SearchResult(out_dir=search.out, best=best, study=search.study)


def export_best(
    out_dir: str,
    *,
    storage: str | None = None,
    study_name: str = "autotransfer",
    data: str | None = None,
    device: str = "auto",
    plugins: Sequence[str] = (),
) -> dict | None:
    """Write the study's best model, best.json and leaderboard.csv into ``out_dir``, retraining the
    best configuration when its checkpoint lives on another machine."""
    import optuna

    from .engine import Search
    from .results import write_leaderboard

    if storage is None:
        db = Path(out_dir) / "study.db"
        if not db.is_file():
            raise UserError(
                f"{out_dir}: no study.db here; pass --storage URL (and --study-name) of the study"
            )
        storage = f"sqlite:///{db.resolve()}"
    try:
        study = optuna.load_study(study_name=study_name, storage=with_driver(storage))
    except KeyError:
        raise UserError(f"--study-name {study_name}: no such study in {storage}") from None
    saved = study.user_attrs.get("config")
    if saved is None:
        raise UserError(
            f"study {study_name!r} saved no search configuration (an older autotransfer wrote it); "
            "run `autotransfer search` on it once to export"
        )
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    options = {k: v for k, v in saved.items() if k in fields}
    options.update(
        data=data or study.user_attrs.get("data", options["data"]),
        output=str(out_dir),
        storage=storage,
        study_name=study_name,
        device=device,
        plugins=[*options.get("plugins", []), *plugins],
    )
    search = Search(SearchConfig(**options))
    write_leaderboard(search.study, search.out / "leaderboard.csv")
    return search.finalize()


def _worker_main(argv: list[str]) -> int:
    from .engine import Search

    try:
        Search(SearchConfig(**json.loads(argv[0]))).run(finalize=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
