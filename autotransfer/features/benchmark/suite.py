"""A benchmark suite: its YAML schema, loaded and checked with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ...config import SearchConfig
from ...errors import UserError

# what a suite's `search:` may not set: the benchmark owns these per run
RUN_FIELDS = {"data", "output", "seed", "n_trials", "budget", "storage", "study_name", "quiet"}
SEARCH_FIELDS = {f.name for f in fields(SearchConfig)} - RUN_FIELDS
SUITE_KEYS = {
    "name",
    "description",
    "datasets",
    "seeds",
    "budget",
    "budgets",
    "methods",
    "recipe",
    "recipe_epochs",
    "search",
    "compare",
    "tie_tolerance",
    "data_efficiency",
}
EFFICIENCY_METHODS = ["autotransfer", "probe", "from-scratch"]
#: the fixed recipe, a data table a suite may override with ``recipe:``: one fine-tune of the first
#: backbone with AdamW; knobs not named here keep the strategy's neutral values
DEFAULT_RECIPE = {"strategy": "full-finetune", "lr": 1e-4, "batch_size": 32, "weight_decay": 0.01}


@dataclass
class Suite:
    name: str
    datasets: list[dict]
    seeds: list[int] = field(default_factory=lambda: [0])
    #: per search: trials and wall-clock seconds (either may be None)
    n_trials: int | None = 10
    seconds: float | None = None
    #: anytime curves: every method again at each of these time budgets (seconds)
    budgets: list[float] = field(default_factory=list)
    methods: list[str] = field(
        default_factory=lambda: ["autotransfer", "default-recipe", "probe", "random-search", "top-ranked"]
    )
    recipe: dict = field(default_factory=lambda: dict(DEFAULT_RECIPE))
    recipe_epochs: int = 10
    search: dict = field(default_factory=dict)
    compare: str | None = None
    tie_tolerance: float = 0.0
    description: str = ""
    root: Path = Path(".")
    #: data efficiency: the training-set sizes, each {"train_fraction": f} or {"shots": n}; None is all
    sizes: list[dict | None] = field(default_factory=list)
    efficiency_methods: list[str] = field(default_factory=list)

    @property
    def main_budget(self) -> float | None:
        """Which runs the method comparison (ranks, wins) is about: those at the suite's ``budget``
        (None), or, in a suite of time budgets alone, those at the largest of them."""
        if self.n_trials is None and self.seconds is None and self.budgets:
            return max(self.budgets)
        return None

    @property
    def subject(self) -> str:
        return self.compare or (self.methods or self.efficiency_methods)[0]


def load_suite(path: str | Path) -> Suite:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such suite file; see benchmarks/suites/ for examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a suite is a mapping with keys {', '.join(sorted(SUITE_KEYS))}")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise UserError(
            f"{path}: unknown keys {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SUITE_KEYS))}"
        )
    budgets = _budgets(raw.get("budgets"), path)
    n_trials, seconds = (None, None) if budgets and "budget" not in raw else _budget(raw.get("budget"), path)

    recipe = DEFAULT_RECIPE | _mapping(raw.get("recipe"), path, "recipe")
    search = raw.get("search") or {}
    wrong = set(search) - SEARCH_FIELDS
    if wrong:
        raise UserError(
            f"{path}: search: {', '.join(sorted(wrong))} cannot be set here; "
            f"valid: {', '.join(sorted(SEARCH_FIELDS))}"
        )
    datasets = _datasets(raw.get("datasets"), path)
    sizes, efficiency_methods = _sizes(raw.get("data_efficiency"), path)
    suite = Suite(
        name=str(raw.get("name") or path.stem),
        datasets=datasets,
        seeds=list(raw.get("seeds") or [0]),
        n_trials=n_trials,
        seconds=seconds,
        budgets=budgets,
        recipe=recipe,
        search=search,
        recipe_epochs=int(raw.get("recipe_epochs", 10)),
        compare=raw.get("compare"),
        tie_tolerance=float(raw.get("tie_tolerance", 0.0)),
        description=str(raw.get("description", "")),
        root=path.parent,
        sizes=sizes,
        efficiency_methods=efficiency_methods,
        **({"methods": list(raw["methods"])} if raw.get("methods") is not None else {}),
    )
    if not suite.methods and not suite.sizes:
        raise UserError(f"{path}: methods is empty and there is no data_efficiency: nothing to run")
    from .methods import METHODS

    for name in suite.methods + suite.efficiency_methods + ([suite.subject] if suite.methods else []):
        if name not in METHODS:
            raise UserError(f"{path}: unknown method {name!r}; valid: {', '.join(METHODS)}")
    return suite


def _datasets(spec: Any, path: Path) -> list[dict]:
    datasets = [_dataset(d, path) for d in spec or []]
    if not datasets:
        raise UserError(f"{path}: list at least one dataset (a demo name or a path)")
    names = [d["name"] for d in datasets]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: dataset names repeat ({', '.join(names)}); give each a distinct name")
    return datasets


def _budget(spec: Any, path: Path) -> tuple[int | None, float | None]:
    """``budget: {n_trials: N, time: 90s}`` -> (trials, seconds) for each search."""
    from ...engine.budget import parse_duration

    spec = _mapping(spec, path, "budget")
    if "timeout" in spec:
        raise UserError(
            f"{path}: budget: timeout is now time (a wall-clock budget per search, e.g. time: 5m)"
        )
    if not spec or set(spec) - {"n_trials", "time"}:
        raise UserError(
            f"{path}: budget takes n_trials and/or time (per search, e.g. {{n_trials: 8, time: 5m}})"
        )
    n_trials = spec.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        raise UserError(f"{path}: budget: n_trials {n_trials!r} is not a whole number of trials (>= 1)")
    seconds = parse_duration(spec["time"], f"{path}: budget: time") if "time" in spec else None
    return n_trials, seconds


def _budgets(spec: Any, path: Path) -> list[float]:
    """``budgets: [30, 60, 2m]`` -> seconds, smallest first: each method runs at each (anytime curves)."""
    from ...engine.budget import parse_duration

    if spec is None:
        return []
    if not isinstance(spec, list) or not spec:
        raise UserError(f"{path}: budgets is a list of durations, e.g. budgets: [30, 60, 120]")
    return sorted({parse_duration(value, f"{path}: budgets") for value in spec})


def _mapping(spec: Any, path: Path, key: str) -> dict:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise UserError(f"{path}: {key} is a mapping (key: value, ...), not {spec!r}")
    return dict(spec)


def _sizes(spec: Any, suite_path: Path) -> tuple[list[dict | None], list[str]]:
    """``data_efficiency:`` -> the training-set sizes (smallest first; None is the whole split) and
    the methods to run at each."""
    if spec is None:
        return [], []
    where = f"{suite_path}: data_efficiency"
    if (
        not isinstance(spec, dict)
        or set(spec) - {"fractions", "shots", "methods"}
        or ("fractions" in spec) == ("shots" in spec)
    ):
        raise UserError(
            f"{where} takes fractions: [0.1, 0.5, 1.0] or shots: [1, 5, 10] (one of them), "
            f"and optionally methods: [...]"
        )
    key = "fractions" if "fractions" in spec else "shots"
    values = spec[key]
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: {key} is a non-empty list, e.g. {key}: [0.1, 0.5, 1.0]")
    sizes: list[dict | None] = []
    for value in sorted(set(values)):
        if key == "fractions":
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise UserError(f"{where}: fraction {value!r} is not in (0, 1]")
            sizes.append(None if value == 1 else {"train_fraction": float(value)})
        else:
            if not isinstance(value, int) or value < 1:
                raise UserError(
                    f"{where}: shots {value!r} is not a whole number of examples per class (>= 1)"
                )
            sizes.append({"shots": value})
    methods = list(spec.get("methods") or EFFICIENCY_METHODS)
    return sizes, methods


def size_label(size: dict | None) -> str:
    if size is None:
        return "100%"
    if "shots" in size:
        return f"{size['shots']}-shot"
    return f"{size['train_fraction'] * 100:g}%"


def _dataset(entry: Any, suite_path: Path) -> dict:
    from ..demo import DATASETS

    if isinstance(entry, str):
        entry = {"demo": entry} if entry in DATASETS else {"path": entry}
    if not isinstance(entry, dict) or ("demo" in entry) == ("path" in entry):
        raise UserError(
            f"{suite_path}: each dataset is a demo name ({', '.join(DATASETS)}) or has exactly one of "
            f"demo: or path: (got {entry!r})"
        )
    if "demo" in entry and entry["demo"] not in DATASETS:
        raise UserError(f"{suite_path}: unknown demo {entry['demo']!r}; valid: {', '.join(DATASETS)}")
    if "path" in entry:
        resolved = (suite_path.parent / entry["path"]).resolve()
        if not resolved.exists():
            raise UserError(f"{suite_path}: dataset path {entry['path']} ({resolved}) does not exist")
        return {"name": entry.get("name") or resolved.name, "path": str(resolved)}
    per_class = entry.get("per_class")
    name = entry.get("name") or (entry["demo"] + (f"-{per_class}pc" if per_class else ""))
    return {"name": name, "demo": entry["demo"], "per_class": per_class}


# the methods ---------------------------------------------------------------------------------
