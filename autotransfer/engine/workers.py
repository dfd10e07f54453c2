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

from ..config import SearchConfig, with_driver
from ..errors import UserError


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


def run_workers(config: SearchConfig, devices: Sequence[str], *, started: float | None = None, host=None):
    """Open the study here (split, first trials), run one worker process per device on it, then
    export the best model once, from this process. The workers share this command's budget."""
    from .budget import Clock
    from .run import Search, quiet_optuna

    here = "cpu" if devices[0] == "cpu" else f"cuda:{devices[0]}"
    clock = Clock.start(config.budget_seconds, started)
    with quiet_optuna():
        search = Search.open(dataclasses.replace(config, device=here), host=host, clock=clock)
        search.progress.start(search.problem, config.storage_shown, search.pace.budget_note())
        try:
            search.prepare()
            search.progress.say(f"  workers: {len(devices)}, one a device ({', '.join(devices)})")
            codes = _run_children(config, devices, clock.started)
            for device, code in zip(devices, codes):
                if code != 0:
                    search.progress.say(
                        f"warning: the worker on device {device} exited with code {code}; "
                        "its finished trials are kept"
                    )
        finally:
            search.close()
        return search.finish()


def _run_children(config: SearchConfig, devices: Sequence[str], started: float) -> list[int]:
    n_cpu = sum(d == "cpu" for d in devices) or 1
    procs = []
    for device in devices:
        child = dataclasses.replace(config, device="cpu" if device == "cpu" else "cuda")
        command = [
            sys.executable,
            "-m",
            "autotransfer.engine.workers",
            json.dumps(child.to_dict()),
            repr(started),
        ]
        procs.append(subprocess.Popen(command, env=_worker_env(device, n_cpu)))
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: let them record their trials
        for p in procs:
            p.wait()
        raise


def export_best(
    out_dir: str,
    *,
    storage: str | None = None,
    study_name: str = "autotransfer",
    data: str | None = None,
    device: str = "auto",
    host=None,
) -> dict | None:
    """Write the study's best model, best.json and leaderboard.csv into ``out_dir``, retraining the
    best configuration when its checkpoint lives on another machine."""
    import optuna

    from ..plugins import default_host
    from .finalize import finalize
    from .problem import open_problem
    from .results import write_leaderboard
    from .run import quiet_optuna
    from .study import SearchStudy

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
    )
    config = SearchConfig(**options)
    host = host or default_host(config.plugins)
    with quiet_optuna():
        searched = SearchStudy.open(config)
        problem = open_problem(config, host, persisted=searched)
        try:
            write_leaderboard(searched.study, config.out_dir / "leaderboard.csv")
            return finalize(problem, searched)
        finally:
            problem.close()


def _worker_main(argv: list[str]) -> int:
    from .budget import Clock
    from .run import Search, quiet_optuna

    try:
        config = SearchConfig(**json.loads(argv[0]))
        with quiet_optuna():
            Search.open(config, clock=Clock.start(config.budget_seconds, float(argv[1]))).run(finalize=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
