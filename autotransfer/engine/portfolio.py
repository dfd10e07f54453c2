"""Learning from past searches: a portfolio of configurations that did well on other data.

``autotransfer portfolio build SOURCE...`` reads finished studies (a storage URL: every study in it; a
search's output folder; a folder of many, such as a benchmark's output; a ``.db`` file) and keeps, for
each dataset they searched, its best few distinct configurations (backbone, strategy, resolution) with
what describes that dataset: its task, classes, training examples a class and input size. The package
ships one built from its own benchmark runs (``autotransfer/portfolio.json``).

A new search starts, after its probe, from the entries nearest to its own data (Auto-sklearn 2.0's
portfolio warm start, with Quick-Tune's meta-features of the dataset), each mapped onto its own choices
(the nearest searched resolution and batch size, no more epochs than it allows, knobs outside its
space left to the sampler) and priced: with a budget they take at most PORTFOLIO_SHARE of the time
the first trials leave, an entry trained for fewer epochs or at a smaller resolution when that fits,
and left out when not. The sampler then takes over, knowing how they did. Entries from the very data
being searched (same task, classes and split sizes) are left out, so a benchmark of the bundled
datasets measures what other datasets taught.

What did best depends on the time it had: each entry keeps its search's budget, a dataset searched at
several budgets keeps its best configurations at each, and a search starts from the entries learned at
the budget nearest its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

from ..errors import UserError
from ..specs import PROBE, REFERENCE
from . import pricing
from .budget import kept_budget

BUNDLED = Path(__file__).resolve().parent.parent / "portfolio.json"
#: distinct configurations kept for each dataset
TOP = 4
#: portfolio trials a search starts with, at most; with a budget they take at most this share of it
PORTFOLIO_TRIALS = 3
PORTFOLIO_SHARE = 0.5
#: epochs an entry should get before a larger resolution does: a fine-tune's first epoch is mostly
#: its warm-up (on digits, LoRA of Lite0 at 64 px reached 0.907-0.933 in one epoch, 0.973-0.978 in two;
#: at 128 px in one, 0.948)
ENTRY_EPOCHS = 2
#: leading layer groups a fine-tune may leave frozen and still count as adapting to the data's scale
#: (LoRA leaves the stem frozen)
STEM_GROUPS = 1
#: how much an entry's place among its dataset's best counts against nearness (log units)
RANK_WEIGHT = 0.5
#: keys that describe the trial's resolution, by task
SIZE_KEYS = ("image_size", "max_length")


@dataclass(frozen=True)
class Meta:
    """What describes a dataset, for finding the nearest: Quick-Tune's meta-features, less the ones a
    search knows only after training."""

    task: str
    classes: int
    #: training examples a class
    per_class: float
    #: the smallest resolution searched (the data's own size, or a pinned one); None without
    size: int | None
    #: the same task, classes and validation and test sizes: the same data
    fingerprint: str

    def distance(self, other: Meta) -> float:
        """Log-scale distance: examples a class count most, then classes and input size."""
        d = abs(math.log(self.per_class / other.per_class))
        d += 0.5 * abs(math.log(self.classes / other.classes))
        if self.size and other.size:
            d += 0.5 * abs(math.log(self.size / other.size))
        return d


@dataclass(frozen=True)
class Entry:
    #: where it came from: the data's folder name and the study
    source: str
    meta: Meta
    params: dict
    value: float
    #: its place among its dataset's best, 0 first
    rank: int
    seconds: float | None = None
    #: the budget of the search it came from, seconds; None: a search without one
    budget: float | None = None


def fingerprint(task: str, classes: Iterable[str], n_val: int, n_test: int) -> str:
    text = json.dumps([task, sorted(map(str, classes)), n_val, n_test])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# building -----------------------------------------------------------------------------------------
def storage_urls(source: str) -> list[str]:
    """The storages a SOURCE names: a URL as it is; a ``.db`` file; a folder's ``study.db``, else every
    ``study.db`` below it."""
    if "://" in source:
        return [source]
    path = Path(source)
    if path.is_file():
        return [f"sqlite:///{path.resolve()}"]
    if path.is_dir():
        own = path / "study.db"
        found = [own] if own.is_file() else sorted(path.rglob("study.db"))
        if found:
            return [f"sqlite:///{p.resolve()}" for p in found]
        raise UserError(f"{source}: no study.db in this folder or below it; name a search's --output folder")
    raise UserError(
        f"{source}: no such file or folder; give a storage URL, a search's output folder or a .db"
    )


def studies(source: str) -> list[optuna.Study]:
    loaded = []
    for url in storage_urls(source):
        from ..config import with_driver

        try:
            names = optuna.study.get_all_study_names(storage=with_driver(url))
            loaded += [optuna.load_study(study_name=n, storage=with_driver(url)) for n in names]
        except Exception as exc:  # a file that is not a study, a server that does not answer
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise UserError(f"{source}: cannot read studies from {url} ({reason})") from None
    return loaded


def study_meta(study: optuna.Study) -> tuple[Meta, str] | None:
    """A finished search's dataset description and name, from what the search keeps in its study."""
    attrs = study.user_attrs
    if not {"task", "classes", "split"} <= set(attrs):
        return None
    split = json.loads(attrs["split"])
    classes = len(attrs["classes"])
    config = attrs.get("config") or {}
    sizes = attrs.get("input_sizes") or []
    pinned = next((config.get(k) for k in SIZE_KEYS if config.get(k)), None)
    size = min(sizes) if sizes else pinned
    meta = Meta(
        task=attrs["task"],
        classes=classes,
        per_class=max(1.0, len(split.get("train", [])) / max(1, classes)),
        size=int(size) if size else None,
        fingerprint=fingerprint(
            attrs["task"], attrs["classes"], len(split.get("val", [])), len(split.get("test", []))
        ),
    )
    return meta, Path(attrs.get("data") or study.study_name).name


def _signature(params: dict) -> tuple:
    return (params.get("backbone"), params.get("strategy"), *(params.get(k) for k in SIZE_KEYS))


def build(sources: list[str]) -> dict:
    """The portfolio of ``sources``: for each dataset and budget searched, its TOP best distinct
    configurations."""
    by_data: dict[tuple, list] = {}
    for source in sources:
        for study in studies(source):
            found = study_meta(study)
            if found is None:
                continue
            meta, name = found
            config = study.user_attrs.get("config") or {}
            budget = kept_budget(config.get("budget"), config.get("n_trials"))
            trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            for t in trials:
                if t.user_attrs.get("reference") or "strategy" not in t.params or t.value is None:
                    continue
                seconds = t.duration.total_seconds() if t.duration else None
                found_at = (t.value, meta, name, t.params, seconds)
                by_data.setdefault((meta.fingerprint, budget), []).append(found_at)
    entries = []
    for (_, budget), found in by_data.items():
        seen, rank = set(), 0
        for value, meta, name, params, seconds in sorted(found, key=lambda f: -f[0]):
            if _signature(params) in seen or rank >= TOP:
                continue
            seen.add(_signature(params))
            entry = Entry(
                name, meta, dict(params), round(value, 4), rank, seconds and round(seconds, 1), budget
            )
            entries.append(entry)
            rank += 1
    return {"version": 1, "sources": sources, "entries": [asdict(e) for e in entries]}


def write(portfolio: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portfolio, indent=1) + "\n")


def load(source: Path | str) -> list[Entry]:
    """The entries of a portfolio file; any other SOURCE of studies is built from on the fly."""
    path = Path(source)
    if path.suffix != ".json":
        return load_dict(build([str(source)]))
    try:
        return load_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(
            f"--portfolio {source}: not a portfolio file ({reason}); build one with "
            "`autotransfer portfolio build`"
        ) from None


def load_dict(data: dict) -> list[Entry]:
    return [Entry(**(e | {"meta": Meta(**e["meta"])})) for e in data["entries"]]


# using ---------------------------------------------------------------------------------------------
def problem_meta(problem) -> Meta:
    split, classes = problem.split, problem.dataset.classes
    key = problem.task.size_key
    size = problem.input_sizes[0] if problem.input_sizes else problem.config.pinned_preprocessing.get(key)
    return Meta(
        task=problem.task.name,
        classes=len(classes),
        per_class=max(1.0, len(split["train"]) / max(1, len(classes))),
        size=int(size) if size else None,
        fingerprint=fingerprint(problem.task.name, classes, len(split["val"]), len(split["test"])),
    )


def entries_for(problem) -> list[Entry]:
    """The portfolio a search uses: the bundled one and the user's ``--portfolio``, or none."""
    config = problem.config
    if not config.use_portfolio:
        return []
    entries = load(BUNDLED) if BUNDLED.is_file() else []
    if config.portfolio:
        entries += load(config.portfolio)
    return entries


def nearest(entries: list[Entry], meta: Meta, budget: float | None = None) -> list[Entry]:
    """Entries of the same task on other data, nearest and best first; of a dataset searched at
    several budgets, those learned at the budget nearest ``budget`` (None: none)."""
    usable = [e for e in entries if e.meta.task == meta.task and e.meta.fingerprint != meta.fingerprint]
    budgets: dict[str, set] = {}
    for e in usable:
        budgets.setdefault(e.meta.fingerprint, set()).add(e.budget)
    learned_at = {data: min(found, key=_apart(budget)) for data, found in budgets.items()}
    usable = [e for e in usable if e.budget == learned_at[e.meta.fingerprint]]
    return sorted(usable, key=lambda e: (meta.distance(e.meta) + RANK_WEIGHT * e.rank, -e.value))


def _apart(budget: float | None) -> Callable:
    """How far a source's budget is from ``budget``, in log time (no budget: the longest); the
    longer of two as far."""

    def far(other: float | None) -> tuple:
        if budget is None and other is None:
            return (0, 0.0, 0.0)
        if budget is None or other is None:  # one without a budget only when nothing else is there
            return (1, 0.0, -(other or math.inf))
        return (0, abs(math.log(other / budget)), -other)

    return far


def adapt(problem, entry: Entry, groups: int | None) -> dict | None:
    """``entry``'s parameters on this problem's choices, or None when its backbone or strategy is not
    searched here. Values outside this space are left to the sampler."""
    params = dict(entry.params)
    strategy = problem.strategy_by_name.get(params.get("strategy"))
    if strategy is None or strategy.role == REFERENCE:
        return None
    if params.get("backbone") not in {b.name for b in problem.backbones}:
        return None
    key = problem.task.size_key
    for other in SIZE_KEYS:
        if other != key or not problem.input_sizes:
            params.pop(other, None)
    if key and problem.input_sizes:
        own = entry.params.get(key) or entry.meta.size or problem.input_sizes[0]
        params[key] = min(problem.input_sizes, key=lambda s: abs(math.log(s / own)))
    choices = problem.batch_size_choices()
    if "batch_size" in params:
        params["batch_size"] = min(choices, key=lambda b: abs(math.log(b / params["batch_size"])))
    params["epochs"] = max(1, min(problem.config.max_epochs, int(params.get("epochs", 1))))
    space = searched_space(problem, params["backbone"], strategy, groups)
    return {k: v for k, v in params.items() if k in space and _contains(space[k], v)}


def searched_space(problem, backbone: str, strategy, groups: int | None) -> dict:
    """The distributions a trial of ``strategy`` on ``backbone`` suggests (asked on a throwaway
    in-memory trial), ``augment`` among them when the task augments."""
    from .trial import choose, strategy_context

    study = optuna.create_study()
    study.enqueue_trial({"backbone": backbone, "strategy": strategy.name})
    trial = study.ask()
    choose(problem, trial)
    # unknown groups: no depth the backbone has is refused
    context = strategy_context(problem, backbone, groups or 64, problem.config.max_epochs)
    strategy.suggest(trial, context)
    space = dict(trial.distributions)
    if problem.task.augmentations:
        space["augment"] = optuna.distributions.CategoricalDistribution(list(problem.task.augmentations))
    return space


def _contains(distribution, value) -> bool:
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def portfolio_trials(
    problem,
    entries: list[Entry],
    estimate: Callable[[dict], float | None] | None,
    room: float | None,
    groups: int | None,
    most: int = PORTFOLIO_TRIALS,
    measure: Callable[[str, list], None] | None = None,
    each: float | None = None,
) -> list[tuple[dict, Entry]]:
    """The portfolio trials to enqueue: the nearest ``most`` entries, adapted, distinct, within
    ``room`` seconds together and ``each`` seconds apiece (an entry shortened to the epochs that fit,
    or run at a smaller resolution; None: no budget). ``measure(backbone, sizes)`` measures what the
    prices need first: an entry is the search's best bet, worth a few timed batches rather than an
    extrapolated price."""
    chosen, seen, spent = [], set(), 0.0
    for entry in nearest(entries, problem_meta(problem), problem.config.budget_seconds):
        if len(chosen) >= most:
            break
        params = adapt(problem, entry, groups)
        if params is None or _signature(params) in seen:
            continue
        if room is not None:
            seconds = room - spent if each is None else min(room - spent, each)
            params, seconds = within(problem, params, estimate, seconds, measure)
            if params is None:
                continue
            spent += seconds
        seen.add(_signature(params))
        chosen.append((params, entry))
    return chosen


def within(problem, params: dict, estimate, seconds: float, measure=None) -> tuple[dict | None, float]:
    """``params`` at the epochs that fit ``seconds``, at the largest searched resolution (at most its
    own, and at most ``data_scale`` for a fine-tune from the stem) where it gets ENTRY_EPOCHS of its
    epochs; where none does, at the largest where one epoch fits (a cheaper fidelity of the same
    configuration)."""
    key = problem.task.size_key
    top = params.get(key) if key else None
    if top is not None and adapts_from_the_stem(problem, params):
        top = min(top, data_scale(problem))
    sizes = [s for s in problem.input_sizes if top is not None and s <= top][::-1] or [None]
    wanted = min(ENTRY_EPOCHS, params["epochs"])
    short: tuple[dict | None, float] = (None, 0.0)
    for size in sizes:
        shaped = params if size is None else {**params, key: size}
        guess = estimate({**shaped, "epochs": 1})
        if measure and guess is not None and guess <= 2 * seconds:  # it may fit: measured, not guessed
            measure(params["backbone"], [size])
        fitted, cost = pricing.fit_epochs(shaped, estimate, seconds, 1, params["epochs"])
        if cost > seconds:
            continue
        if fitted["epochs"] >= wanted:
            return fitted, cost
        if short[0] is None:
            short = (fitted, cost)
    return short


def adapts_from_the_stem(problem, params: dict) -> bool:
    """Whether a trial of ``params`` trains its backbone from the first layers on (a full fine-tune,
    LoRA, BitFit, a partial fine-tune frozen through at most STEM_GROUPS), not through frozen features
    (a probe; a partial fine-tune of the top groups)."""
    strategy = problem.strategy_by_name.get(params.get("strategy"))
    if strategy is None or strategy.role == PROBE:
        return False
    return params.get(f"{strategy.name}.freeze_depth", 0) <= STEM_GROUPS


def data_scale(problem) -> int:
    """The smallest searched resolution that holds the data's own (its median image side; the largest
    searched when none does or it is unknown). A portfolio entry that trains from the stem
    (``adapts_from_the_stem``) starts there: its weights adapt to the data's scale, and a larger input
    adds compute, not information. On digits (8 px) a LoRA of Lite0 at batch 16 reached the same
    validation per epoch at 32 px as at 64 (0.944, 0.959-0.978, 0.985 over its first three epochs) at
    4.0-4.5 s an epoch against 7.4-8.7 s; as a portfolio entry in a 100 s search, test accuracy 0.996
    and 0.985 (seeds 0, 1) against 0.985 and 0.974 at 64 px. Frozen features want the scale the backbone
    learned: a probe keeps the larger resolution (Lite2's probe of digits: 0.62 at 32 px, 0.93 at 64,
    0.94-0.95 at 128), and so does a partial fine-tune of the top groups (on MNIST-5k one frozen through
    7 of Lite1's groups reached 0.90-0.93 at 32 px, 0.95 at 64). The search promotes its best trial to
    the next resolution up when that fits (``extend.promote``)."""
    sizes = problem.input_sizes
    own = problem.dataset.input_size
    return next((s for s in sizes if own and s >= own), sizes[-1]) if sizes else 0


def smaller_sizes(problem, trial) -> list:
    """The searched resolutions below a portfolio entry's, which it is queued again at when it does not
    fit (none for other trials)."""
    key = problem.task.size_key
    size = trial.params.get(key) if key else None
    if not trial.user_attrs.get("portfolio") or size is None:
        return []
    return [s for s in problem.input_sizes if s < size]


def describe(entries: list[Entry]) -> list[str]:
    """One line an entry, for `autotransfer portfolio build`."""
    lines = []
    for e in entries:
        size = next((f" {e.params[k]}" for k in SIZE_KEYS if k in e.params), "")
        lines.append(
            f"  {e.source:<14} {e.params.get('backbone')} {e.params.get('strategy')}{size} "
            f"epochs {e.params.get('epochs')}: {e.value:.4f}"
            + (f" in {e.seconds:.0f}s" if e.seconds else "")
            + (f" (a {e.budget:.0f}s search)" if e.budget else "")
        )
    return lines
