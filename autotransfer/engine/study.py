"""The Optuna study of a search: its storage (SQLite in the output folder unless ``--storage`` says
otherwise), the split and the settings it was created with, and what its trials count for. Re-running
the same command opens the same study: finished trials are never redone."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from ..config import SearchConfig
from ..data import Dataset, dumps_split, split_from_items, split_to_items
from ..errors import UserError
from ..specs import TaskSpec

STATES_COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
#: settings that change what a trial means: a resumed study refuses other values
MEANING = {
    "max_epochs": "--max-epochs",
    "image_size": "--image-size",
    "max_length": "--max-length",
    "shots": "--shots",
    "train_fraction": "--train-fraction",
    "random_init": "--random-init",
    "target_unlabeled": "--target-unlabeled",
    "aux_tasks": "--aux-task",
    "batch_sizes": "batch_sizes",
}


def open_storage(config: SearchConfig) -> optuna.storages.RDBStorage:
    """The study's storage, with heartbeats: a worker killed mid-trial stops beating, and its trial
    is failed and queued once again."""
    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        or optuna.storages.RetryFailedTrialCallback
    )
    callback = (
        "heartbeat_stale_trial_callback"
        if retry.__name__.startswith("RetryHeartbeat")
        else "failed_trial_callback"
    )
    sqlite = config.storage_url.startswith("sqlite")
    if sqlite:
        _check_writable(config)
    for attempt in range(4):  # workers meeting an empty database all create its tables: the losers retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    config.storage_url,
                    heartbeat_interval=max(1, min(30, config.heartbeat // 4)),
                    grace_period=config.heartbeat,
                    # several local workers share one SQLite file: wait for its lock rather than fail
                    engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                    **{callback: retry(max_retry=1)},
                )
        except Exception as exc:
            # only a race between workers creating the tables is worth another try
            racing = type(exc).__name__ in ("OperationalError", "IntegrityError", "ProgrammingError")
            if attempt == 3 or not racing:
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                raise UserError(f"--storage {config.storage_shown}: cannot open ({reason})") from exc

            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _check_writable(config: SearchConfig) -> None:
    """The default SQLite study lives in --output: say so when that folder cannot be written."""
    out = config.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".autotransfer-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        option = "--storage" if config.storage else "--output"
        where = config.storage_shown if config.storage else str(out)
        raise UserError(
            f"{option} {where}: cannot write there ({exc.strerror or exc}); choose a folder you can write"
        ) from None


class SearchStudy:
    """One search's Optuna study, and what the search keeps in it."""

    def __init__(self, study: optuna.Study, created: bool, config: SearchConfig) -> None:
        self.study = study
        self.created = created
        self.config = config
        self.wrote_split = False

    @classmethod
    def open(cls, config: SearchConfig) -> SearchStudy:
        storage = open_storage(config)
        pruner = (
            optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.max_epochs, reduction_factor=3)
            if config.pruning
            else optuna.pruners.NopPruner()
        )
        try:  # creating is atomic: of several workers starting at once, exactly one creates
            study = optuna.create_study(
                storage=storage, study_name=config.study_name, direction="maximize", pruner=pruner
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(storage=storage, study_name=config.study_name, pruner=pruner)
            created = False
        return cls(study, created, config)

    # what stays the same across runs and workers ---------------------------------------------------
    def split(self, task: TaskSpec, dataset: Dataset) -> dict[str, list[int]]:
        """The study's saved split (waiting a moment for the worker that creates it), or a new one,
        saved with the settings the study is created with."""
        from .problem import new_split

        attrs = self.study.user_attrs
        if attrs.get("task") not in (None, task.name):
            raise UserError(
                f"study {self.config.study_name!r} in {self.config.storage_shown} searched a "
                f"{attrs['task']} task; "
                "use another --output or --study-name"
            )
        saved = attrs.get("split")
        for _ in range(0 if self.created else 40):
            if saved is not None:
                break
            time.sleep(0.25)
            saved = self.study.user_attrs.get("split")
        if saved is not None:
            self.check_settings()
            items = json.loads(saved)
            self._write_split_file(items)
            return split_from_items(dataset, items, self.config.data)
        split = new_split(dataset, self.config)
        items = split_to_items(dataset, split)
        self.study.set_user_attr("split", dumps_split(items))
        self.study.set_user_attr("task", task.name)
        self.study.set_user_attr("classes", dataset.classes)
        self.study.set_user_attr("data", str(Path(self.config.data).resolve()))
        self.study.set_user_attr("config", self.config.to_dict())  # what `autotransfer export` rebuilds from
        self._write_split_file(items)
        self.wrote_split = True
        return split

    def _write_split_file(self, items: dict) -> None:
        self.config.out_dir.mkdir(parents=True, exist_ok=True)
        (self.config.out_dir / "split.json").write_text(json.dumps(items, indent=1, ensure_ascii=False))

    def check_settings(self) -> None:
        """A resumed study refuses settings that would change what its trials mean, naming each."""
        before = self.study.user_attrs.get("config") or {}
        now = self.config.to_dict()
        changed = [
            f"{flag} {_shown(before[key])}, not {_shown(now.get(key))}"
            for key, flag in MEANING.items()
            if key in before and _same(before[key]) != _same(now.get(key))
        ]
        if changed:
            raise UserError(
                f"{self.config.storage_shown}: this study was searched with {' and '.join(changed)}; "
                "run it again "
                "with the same settings, or search into another --output or --study-name"
            )

    def input_sizes(self, proposed: list[int]) -> list[int]:
        """The resolutions searched: fixed when the study is created, so every trial's choices match."""
        key = "input_sizes"
        if key in self.study.user_attrs:
            return list(self.study.user_attrs[key])
        self.study.set_user_attr(key, proposed)
        return proposed

    def candidates(self, backbones: list[str], strategies: list[str]) -> None:
        """The searched names are the choices of categorical parameters: a resumed study keeps them."""
        for key, names, flag in (
            ("backbones", backbones, "--backbones"),
            ("strategies", strategies, "--strategies"),
        ):
            saved = self.study.user_attrs.get(f"candidate_{key}")
            if saved is None:
                self.study.set_user_attr(f"candidate_{key}", names)
            elif sorted(saved) != sorted(names):
                raise UserError(
                    f"{self.config.storage_shown}: this study searched {flag} {','.join(saved)}, not "
                    f"{','.join(names)}; "
                    f"pass {flag} {','.join(saved)} to resume it, or search into another --output or "
                    "--study-name"
                )

    # the trials ----------------------------------------------------------------------------------
    def trials(self, states=None) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def counted(self) -> int:
        """Searched trials toward --n-trials: finished (or failed with a reason), the reference not."""
        return sum(1 for t in self.trials() if _counts(t))

    def surplus(self, number: int) -> bool:
        """Whether trial ``number`` is past --n-trials: two workers that each saw one trial left may
        both start one; the later one is not run (the trials before it already make the count)."""
        n_trials = self.config.n_trials
        if n_trials is None:
            return False
        running = optuna.trial.TrialState.RUNNING
        earlier = [t for t in self.trials() if t.number < number and _counts(t, also=(running,))]
        return len(earlier) >= n_trials

    def running(self) -> list[optuna.trial.FrozenTrial]:
        return self.trials(states=(optuna.trial.TrialState.RUNNING,))

    def waiting(self) -> list[optuna.trial.FrozenTrial]:
        return self.trials(states=(optuna.trial.TrialState.WAITING,))

    def requeue_interrupted(self) -> list[int]:
        """Trials stopped by Ctrl-C (failed with no reason of their own) are queued to run again, once,
        with their parameters, as the heartbeat does for a killed worker's. Returns their numbers."""
        trials = self.trials()
        retried = {t.system_attrs.get("failed_trial") for t in trials} | {
            t.user_attrs.get("retry_of") for t in trials
        }
        again = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.FAIL
            and "fail_reason" not in t.user_attrs
            and "retry_of" not in t.user_attrs
            and "failed_trial" not in t.system_attrs
            and t.number not in retried
        ]
        for t in again:
            keep = {
                k: v
                for k, v in t.user_attrs.items()
                if k in ("reference", "cost_cap_s", "portfolio", "explore", "promoted")
            }
            self.study.enqueue_trial(
                t.params, user_attrs={**keep, "retry_of": t.number}, skip_if_exists=False
            )
        return [t.number for t in again]

    def costs(self) -> dict[str, Any]:

        return {k: v for k, v in self.study.user_attrs.items() if k.startswith("cost|")}

    def remember(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def best(self) -> optuna.trial.FrozenTrial | None:
        complete = self.trials(states=(optuna.trial.TrialState.COMPLETE,))
        return max(complete, key=lambda t: t.value) if complete else None


def _counts(trial: optuna.trial.FrozenTrial, also: tuple = ()) -> bool:
    """Whether a trial counts toward --n-trials (``also``: further states that do, e.g. RUNNING)."""
    attrs = trial.user_attrs
    if attrs.get("reference") or attrs.get("skipped"):
        return False
    failed = trial.state == optuna.trial.TrialState.FAIL and "fail_reason" in attrs
    return trial.state in (*STATES_COUNTED, *also) or failed


def _same(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _shown(value: Any) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
