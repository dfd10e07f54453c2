"""The search configuration: one dataclass instead of fifty keyword arguments, checked on creation
so the command line and the Python API refuse the same bad values with the same one-line errors."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .engine.budget import kept_budget, parse_duration
from .errors import UserError
from .specs import TaskOptions


@dataclass
class SearchConfig:
    data: str
    task: str | None = None
    output: str = "autotransfer-out"
    #: wall-clock seconds for the whole search, export included ("10m", "2h" and numbers are accepted);
    #: with neither this nor ``n_trials``, ``DEFAULT_BUDGET_S``
    budget: float | str | None = None
    #: searched trials in the study (a resumed study counts its earlier ones; the reference is extra)
    n_trials: int | None = None
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
    #: side of the square images are resized to; None searches a few sizes up to the backbone's
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
    #: "tpe" (the search), or "random": plain random search with no warm-start trials and no trial
    #: trained on (a baseline)
    sampler: str = "tpe"
    #: run the random-init reference once, at the cost of a median transfer trial, to tell whether
    #: transfer helped
    reference: bool = True
    #: start from the bundled portfolio's configurations nearest to this data (see engine/portfolio.py)
    use_portfolio: bool = True
    #: a portfolio file, or studies to learn from (a storage URL, a search's output folder, a .db),
    #: used beside the bundled one
    portfolio: str | None = None
    #: export a greedy ensemble of the best trials when it beats the single best on validation
    ensemble: bool = True
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
        self.aux_tasks = list(self.aux_tasks)
        if self.budget is not None:
            self.budget = parse_duration(self.budget)
        check(self)

    @property
    def budget_seconds(self) -> float | None:
        """The budget kept: the one given, else the default when no --n-trials ends the search."""
        return kept_budget(self.budget, self.n_trials)

    @property
    def task_options(self) -> TaskOptions:
        return TaskOptions(
            text_column=self.text_column, label_column=self.label_column, encoding=self.encoding
        )

    @property
    def pinned_preprocessing(self) -> dict:
        """Preprocessing values the user fixed (resolution, text length): never searched."""
        pinned = {"image_size": self.image_size, "max_length": self.max_length}
        return {k: v for k, v in pinned.items() if v is not None}

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


#: (field, command-line flag, lowest allowed value, what to give instead)
_AT_LEAST = (
    ("n_trials", "--n-trials", 1, "at least 1 trial"),
    ("max_epochs", "--max-epochs", 1, "at least 1 epoch"),
    ("image_size", "--image-size", 8, "a side of at least 8 pixels, e.g. 64"),
    ("max_length", "--max-length", 4, "at least 4 tokens, e.g. 128"),
    ("shots", "--shots", 1, "at least 1 training example per class"),
    ("heartbeat", "--heartbeat", 2, "at least 2 seconds"),
    ("seed", "--seed", 0, "a seed of 0 or more"),
)


def check(config: SearchConfig) -> None:
    """One-line errors naming the option, for every value no search can run with."""
    for name, flag, low, instead in _AT_LEAST:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise UserError(f"{flag} {value}: give {instead}")
    if config.train_fraction is not None and not 0 < config.train_fraction <= 1:
        raise UserError(f"--train-fraction {config.train_fraction}: give a fraction in (0, 1], e.g. 0.1")
    if config.train_fraction is not None and config.shots is not None:
        raise UserError(
            "--train-fraction and --shots both given: choose one way to shrink the training split"
        )
    for name in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(config, name) < 0.5:
            raise UserError(f"{name} {getattr(config, name)}: give a fraction in [0, 0.5)")
    if not config.batch_sizes or any(not isinstance(b, int) or b < 2 for b in config.batch_sizes):
        raise UserError(f"batch_sizes {config.batch_sizes}: give whole numbers of at least 2")
    if not config.cache_memory_gb >= 0:
        raise UserError(f"cache_memory_gb {config.cache_memory_gb}: give 0 or more gigabytes")
    if config.sampler not in ("tpe", "random"):
        raise UserError(f"sampler {config.sampler!r}: use tpe or random")
    if not config.study_name.strip():
        raise UserError("--study-name is empty: give the study a name")
    if config.portfolio and "://" not in config.portfolio and not Path(config.portfolio).exists():
        raise UserError(
            f"--portfolio {config.portfolio}: no such file or folder; give a portfolio file, a search's "
            "output folder or a storage URL"
        )
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise UserError(
            f"--output {config.output}: a file is there, not a folder; name a folder to write into"
        )


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
