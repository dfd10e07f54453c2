"""Domain adaptation digits <-> MNIST: source-only against DANN, CDAN, CORAL, MMD and MCC, over seeds.

Each method is a search of the same budget; model selection never reads a target label (the
label-free score for adaptation searches, source validation accuracy for source-only). The
held-back target labels (``--target-eval``) score the selected trial afterwards.

    python benchmarks/adaptation.py --seeds 0 1 2 --n-trials 4 --per-class 50 --max-epochs 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_md, write  # noqa: E402

METHODS = {"source-only": None, "dann": "dann", "cdan": "cdan", "coral": "coral", "mmd": "mmd", "mcc": "mcc"}


def run(source: Path, target: Path, method: str, seed: int, args, out: Path) -> dict:
    from autotransfer.config import SearchConfig
    from autotransfer.engine.run import run_search

    adapt = METHODS[method]
    config = SearchConfig(
        data=str(source),
        output=str(out),
        n_trials=args.n_trials,
        seed=seed,
        backbones=["tf_efficientnet_lite0"],
        strategies=[adapt] if adapt else ["partial-finetune", "full-finetune"],
        target_unlabeled=str(target) if adapt else None,
        target_eval=str(target),
        image_size=args.image_size,
        max_epochs=args.max_epochs,
        reference=False,
        rank=False,
        quiet=True,
    )
    started = time.time()
    result = run_search(config)

    best = result.best or {}
    return {
        "target_accuracy": best.get("target_accuracy"),
        "source_test_accuracy": best.get("test_metric"),
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument(
        "--render", metavar="JSON", help="write the record's text again from its JSON, and stop"
    )
    args = parser.parse_args()
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        (Path(args.render).with_suffix(".md")).write_text(render(payload))
        return
    from autotransfer.features.demo import export_digits, export_mnist

    tmp = Path(tempfile.mkdtemp())
    digits = export_digits(str(tmp / "digits"), per_class=args.per_class)
    mnist = export_mnist(str(tmp / "mnist"), per_class=args.per_class)
    directions = {"digits -> MNIST": (digits, mnist), "MNIST -> digits": (mnist, digits)}
    results = {}
    for direction, (source, target) in directions.items():
        for method in METHODS:
            runs = [
                run(source, target, method, seed, args, tmp / f"{direction[:6]}-{method}-{seed}")
                for seed in args.seeds
            ]
            mean, std = _summary(runs, "target_accuracy")
            results.setdefault(direction, {})[method] = {
                "runs": runs,
                "mean": None if mean is None else round(mean, 4),
                "std": round(std, 4),
            }
            print(direction, method, results[direction][method]["mean"], flush=True)
    info = machine()
    payload = {"args": vars(args), "machine": info, "results": results}
    write("adaptation-" + ("gpu" if "none" not in info["gpu"] else "cpu"), payload, render(payload))


def _summary(runs: list[dict], key: str) -> tuple[float | None, float]:
    """Mean and standard deviation of ``key`` over the runs that have it (no mean when none has)."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, 0.0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _table(results: dict, key: str) -> list[str]:
    """Methods across, directions down: ``key``'s mean ± std over each cell's seeds."""

    def cell(runs: list[dict]) -> str:
        mean, std = _summary(runs, key)
        return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"

    lines = ["| direction | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    for direction, by_method in results.items():
        lines.append(f"| {direction} | " + " | ".join(cell(m["runs"]) for m in by_method.values()) + " |")
    return lines


def render(payload: dict) -> str:
    """The record's text, from its JSON (``--render`` writes it again from a saved run)."""
    args, info, results = payload["args"], payload["machine"], payload["results"]
    seeds = args["seeds"]
    lines = [
        "# Domain adaptation: digits <-> MNIST-5k",
        "",
        f"`python benchmarks/adaptation.py --seeds {' '.join(map(str, seeds))} --n-trials {args['n_trials']} "
        f"--per-class {args['per_class']} --image-size {args['image_size']} "
        f"--max-epochs {args['max_epochs']}`",
        "",
        "Machine:",
        machine_md(info),
        "",
        f"Each cell: a search of {args['n_trials']} trials (tf_efficientnet_lite0, {args['image_size']} px, "
        f"{args['per_class']} images per class per domain); selection reads no target label; the selected "
        f"trial's accuracy on the target's held-back labels, mean ± std over seeds {seeds}.",
        "",
        *_table(results, "target_accuracy"),
        "",
        "The best adaptation method against source-only (target accuracy, mean of the seeds):",
        "",
    ]
    for direction, by_method in results.items():
        means = {k: _summary(v["runs"], "target_accuracy")[0] for k, v in by_method.items()}
        base = means.pop("source-only", None)
        adapted = [(k, m) for k, m in means.items() if m is not None]
        if base is None or not adapted:  # a direction whose runs all failed, or run without either side
            missing = "source-only" if base is None else "an adaptation method"
            lines.append(f"- {direction}: no comparison, {missing} has no run with a target accuracy")
            continue
        name, best = max(adapted, key=lambda kv: kv[1])
        lines.append(f"- {direction}: {name} {best:.3f} against {base:.3f}, {best - base:+.3f}")
    lines += [
        "",
        "The selected trial's accuracy on the source's own test split (source-only selects by it; the "
        "adaptation searches by the label-free score, which weighs it half):",
        "",
        *_table(results, "source_test_accuracy"),
    ]
    if payload.get("note"):  # what the run's recorder added by hand
        lines += ["", payload["note"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
