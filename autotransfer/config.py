"""The search configuration: one dataclass instead of fifty keyword arguments."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass
class SearchConfig:
    data: str
    task: str | None = None
    output: str = "autotransfer-out"
    n_trials: int | None = 20
    timeout: float | None = None
    backbones: list[str] | None = None
    strategies: list[str] | None = None
    storage: str | None = None
    study_name: str = "autotransfer"
    #: seconds without a heartbeat before a RUNNING trial counts as dead (failed, then retried once)
    heartbeat: int = 120
    device: str = "auto"
    seed: int = 0
    target_unlabeled: str | None = None
    #: labelled target data, reported beside the search, never optimised on
    target_eval: str | None = None
    #: related labelled tasks for ``multitask`` (same task type as DATA)
    aux_tasks: list[str] = field(default_factory=list)
    #: side of the square images are resized to; None uses each backbone's native size
    image_size: int | None = None
    #: epochs are searched from 1 to this
    max_epochs: int = 10
    #: batch sizes the search may choose from (capped by the training set)
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    #: learning from less data: train on this fraction of the training split (stratified, seeded);
    #: validation and test stay what the full split gives
    train_fraction: float | None = None
    #: ... or on at most this many training examples per class
    shots: int | None = None
    #: reuse frozen activations across epochs and trials
    cache: bool = True
    #: memory for cached activations before they spill to OUTPUT/cache on disk
    cache_memory_gb: float = 4.0
    #: rank backbones with LogME to order the first trials
    rank: bool = True
    pruning: bool = True
    #: "tpe" (the search), or "random": plain random search with no warm-start trials (a baseline)
    sampler: str = "tpe"
    #: run the random-init reference (``scratch``) once, to tell whether transfer helped
    reference: bool = True
    #: build every backbone with random weights (to measure what pretraining gives)
    random_init: bool = False
    plugins: list[str] = field(default_factory=list)
    #: text tasks: column names when they cannot be detected
    text_column: str | None = None
    label_column: str | None = None
    #: text tasks: encoding of the files when they are not UTF-8
    encoding: str | None = None
    max_length: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.backbones, str):
            self.backbones = [b for b in self.backbones.split(",") if b]
        if isinstance(self.strategies, str):
            self.strategies = [s for s in self.strategies.split(",") if s]
        self.batch_sizes = tuple(self.batch_sizes)
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise UserError(f"--train-fraction {self.train_fraction}: give a fraction in (0, 1], e.g. 0.1")
        if self.shots is not None and self.shots < 1:
            raise UserError(f"--shots {self.shots}: give at least 1 training example per class")
        if self.train_fraction is not None and self.shots is not None:
            raise UserError(
                "--train-fraction and --shots both given: choose one way to shrink the training split"
            )

    @property
    def out_dir(self) -> Path:
        return Path(self.output)

    @property
    def storage_url(self) -> str:
        return with_driver(self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}")

    @property
    def storage_shown(self) -> str:
        """The storage URL as printed: a password in it is replaced by ***."""
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.storage_url)

    def to_dict(self) -> dict:
        return asdict(self)


def with_driver(url: str) -> str:
    """``postgresql://`` through psycopg2 (the ``postgres`` extra) when psycopg 3, SQLAlchemy's
    default for that scheme, is not installed."""
    import importlib.util

    if (
        url.startswith("postgresql://")
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url
