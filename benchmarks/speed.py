"""Trials per hour and best accuracy: autotransfer against a plain Optuna + timm reference.

The reference is what a user writes today: an Optuna objective that builds the timm model, loads
the weights and trains through a torchvision ImageFolder + DataLoader every trial. Both search the
same space (learning rate, epochs, batch size) under the same wall-clock budget, on the same
files, in one run. Also measured: raw training throughput of the backbone on random input, the
throughput inside autotransfer's fine-tune trials, the fixed per-trial overhead, and Kendall tau
between the LogME ranking and fine-tuned accuracy over the offline zoo.

    python benchmarks/speed.py --budget 120 --image-size 64 --per-class 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
import torch  # noqa: E402
from common import machine, machine_md, write  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"


def reference_search(data: Path, budget: float, size: int, strategy: str, max_epochs: int, seed: int) -> dict:
    """The plain loop: ImageFolder + DataLoader, model built and weights loaded every trial."""
    import timm
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    # what a user gets from the weights' package, as a timm state dict (read once, like a cached download)
    weights = lite_backbone(pretrained=True).body.state_dict()
    transform = transforms.Compose(
        [
            transforms.Grayscale(3),
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    folder = datasets.ImageFolder(str(data), transform=transform)
    from sklearn.model_selection import train_test_split

    indices = list(range(len(folder)))
    train_idx, val_idx = train_test_split(indices, test_size=0.3, stratify=folder.targets, random_state=seed)
    step_times, images = [0.0], [0]

    def objective(trial):
        lr = (
            trial.suggest_float("lr", 1e-3, 3e-1, log=True)
            if strategy == "linear-probe"
            else trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        )
        epochs = trial.suggest_int("epochs", 1, max_epochs)
        batch = trial.suggest_categorical("batch_size", [16, 32, 64])
        # the same ImageNet weights, as a plain timm model with a fresh 10-class classifier
        model = timm.create_model(BACKBONE, pretrained=False, num_classes=10)
        model.load_state_dict(weights, strict=False)
        if strategy == "linear-probe":
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("classifier"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        train = DataLoader(Subset(folder, train_idx), batch_size=batch, shuffle=True, num_workers=2)
        val = DataLoader(Subset(folder, val_idx), batch_size=256, num_workers=2)
        accuracy = 0.0
        for epoch in range(epochs):
            model.train()
            for x, y in train:
                started = time.time()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step_times[0] += time.time() - started
                images[0] += len(y)
            model.eval()
            correct = total = 0
            with torch.no_grad():
                for x, y in val:
                    correct += (model(x).argmax(1) == y).sum().item()
                    total += len(y)
            accuracy = correct / total
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs),
    )
    started = time.time()
    study.optimize(objective, timeout=budget)
    return summarise(study, time.time() - started)


def summarise(study, wall: float) -> dict:
    finished = [
        t
        for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    best, best_at = 0.0, None
    first = min(t.datetime_start for t in study.trials)
    for t in sorted(finished, key=lambda t: t.datetime_complete):
        value = t.value if t.value is not None else max(t.intermediate_values.values(), default=0)
        if t.state == optuna.trial.TrialState.COMPLETE and value > best:
            best, best_at = value, (t.datetime_complete - first).total_seconds()
    return {
        "trials": len(finished),
        "wall_s": round(wall, 1),
        "trials_per_hour": round(len(finished) / wall * 3600, 1),
        "best_val_accuracy": round(best, 4),
        "time_to_best_s": round(best_at, 1) if best_at else None,
    }


def autotransfer_search(
    data: Path, budget: float, size: int, strategy: str, max_epochs: int, seed: int, out: Path
) -> dict:
    from autotransfer.config import SearchConfig
    from autotransfer.engine.run import run_search

    started = time.time()
    result = run_search(
        SearchConfig(
            data=str(data),
            output=str(out),
            budget=budget,
            backbones=[BACKBONE],
            strategies=[strategy],
            image_size=size,
            max_epochs=max_epochs,
            seed=seed,
            reference=False,
            rank=False,
            batch_sizes=(16, 32, 64),
            quiet=True,
        ),
        started=started,
    )
    summary = summarise(result.study, time.time() - started)
    summary["overrun_s"] = round(max(0.0, time.time() - started - budget), 1)
    return summary


def lite_backbone(pretrained: bool = True):
    """The backbone as the product registers it (timm's model is its ``body``)."""
    from autotransfer.plugins import default_host

    return default_host().backbone(BACKBONE).build(pretrained=pretrained)


def raw_throughput(size: int, batch: int = 32, steps: int = 10) -> float:
    model = lite_backbone()
    head = torch.nn.Linear(model.feature_dim, 10)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    for i in range(steps + 2):
        if i == 2:
            started = time.time()
        loss = torch.nn.functional.cross_entropy(head(model.forward_features(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * steps / (time.time() - started)


FULL = {
    "strategy": "full-finetune",
    "full-finetune.lr": 1e-3,
    "epochs": 3,
    "batch_size": 32,
    "weight_decay": 1e-4,
    "full-finetune.layer_decay": 1.0,
    "full-finetune.head_lr_mult": 1.0,
    "full-finetune.warmup": 0.0,
    "full-finetune.schedule": "cosine",
    "full-finetune.label_smoothing": 0.0,
    "augment": "off",
}


def problem_for(data: Path, size: int, out: Path, backbones=None):
    from autotransfer.config import SearchConfig
    from autotransfer.engine.problem import open_problem
    from autotransfer.plugins import default_host

    config = SearchConfig(data=str(data), output=str(out), backbones=backbones, image_size=size, quiet=True)
    return open_problem(config, default_host())


def trial_throughput_and_overhead(data: Path, size: int, out: Path) -> dict:
    """One full fine-tune trial of 3 epochs through autotransfer, timed by phase."""
    from autotransfer.engine.streams import streams
    from autotransfer.engine.trial import build_trial

    problem = problem_for(data, size, out, [BACKBONE])
    streams(problem, problem.preprocessing(problem.backbones[0]))  # decoded once, as in a search
    started = time.time()
    trainer, _ = build_trial(problem, optuna.trial.FixedTrial({"backbone": BACKBONE, **FULL}))
    built = time.time()
    trainer.fit()
    done = time.time()
    n = len(trainer.train.labels) * 3
    return {
        "images_per_s": round(n / (done - built), 1),
        "overhead_s": round(built - started, 2),
        "trial_s": round(done - started, 2),
        "overhead_fraction": round((built - started) / (done - started), 3),
        "pass_size": trainer.config.pass_size,
    }


def kendall_for_zoo(data: Path, size: int, out: Path) -> dict:
    from scipy.stats import kendalltau

    from autotransfer.engine.candidates import probe_or_error
    from autotransfer.engine.rank import rank_backbones
    from autotransfer.engine.trial import build_trial

    problem = problem_for(data, size, out)
    ranking = rank_backbones(problem, probe_or_error(problem.host, problem.modality, "ranking"))
    accuracy = {}
    for r in ranking:
        params = {
            "backbone": r.backbone,
            **FULL,
            "full-finetune.layer_decay": 0.8,
            "full-finetune.head_lr_mult": 10.0,
            "full-finetune.warmup": 0.1,
        }
        trainer, _ = build_trial(problem, optuna.trial.FixedTrial(params))
        accuracy[r.backbone] = trainer.fit()
    tau = kendalltau([r.logme for r in ranking], [accuracy[r.backbone] for r in ranking]).statistic
    return {
        "logme": {r.backbone: round(r.logme, 4) for r in ranking},
        "finetuned_val_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "kendall_tau": round(float(tau), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=120, help="seconds per search")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--dataset", default="mnist", choices=["digits", "mnist"])
    args = parser.parse_args()
    from autotransfer.features.demo import DATASETS

    tmp = Path(tempfile.mkdtemp())
    data = DATASETS[args.dataset](str(tmp / "data"), per_class=args.per_class)
    rows = {}
    for strategy in ("linear-probe", "full-finetune"):
        rows[strategy] = {
            "reference": reference_search(data, args.budget, args.image_size, strategy, args.max_epochs, 0),
            "autotransfer": autotransfer_search(
                data, args.budget, args.image_size, strategy, args.max_epochs, 0, tmp / f"out-{strategy}"
            ),
        }
        ref, ours = rows[strategy]["reference"], rows[strategy]["autotransfer"]
        rows[strategy]["speedup_trials_per_hour"] = round(
            ours["trials_per_hour"] / max(ref["trials_per_hour"], 1e-9), 1
        )
    raw = raw_throughput(args.image_size)
    trial = trial_throughput_and_overhead(data, args.image_size, tmp / "trial")
    trial["fraction_of_raw"] = round(trial["images_per_s"] / raw, 3)
    zoo = kendall_for_zoo(data, args.image_size, tmp / "zoo")
    info = machine()
    payload = {
        "args": vars(args),
        "machine": info,
        "searches": rows,
        "raw_train_images_per_s": round(raw, 1),
        "finetune_trial": trial,
        "rank": zoo,
    }
    lines = [
        "# Speed: autotransfer against a plain Optuna + timm loop "
        f"({'GPU' if 'none' not in info['gpu'] else 'CPU'})",
        "",
        f"`python benchmarks/speed.py --budget {args.budget:g} --image-size {args.image_size} "
        f"--per-class {args.per_class} --max-epochs {args.max_epochs} --dataset {args.dataset}`",
        "",
        "Machine:",
        machine_md(info),
        "",
        f"Data: {args.dataset} exported as PNG files, {args.per_class} per class, {args.image_size} px, "
        f"{BACKBONE} with ImageNet weights. Same space, same wall-clock budget per search, one run.",
        "",
        "| search | method | trials | trials/hour | best val accuracy | time to best (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for strategy, r in rows.items():
        for method in ("reference", "autotransfer"):
            m = r[method]
            lines.append(
                f"| {strategy} | {method} | {m['trials']} | {m['trials_per_hour']} | "
                f"{m['best_val_accuracy']} "
                f"| {m['time_to_best_s']} |"
            )
        lines.append(f"| {strategy} | **speed-up** | | **{r['speedup_trials_per_hour']}x** | | |")
    lines += [
        "",
        f"Raw training throughput of the backbone (random input, batch 32): {raw:.1f} img/s.",
        f"Inside an autotransfer full fine-tune trial (3 epochs, batch 32): {trial['images_per_s']} img/s "
        f"= {trial['fraction_of_raw'] * 100:.0f}% of raw.",
        f"Fixed per-trial overhead (model build + weight load): {trial['overhead_s']} s of a "
        f"{trial['trial_s']} s trial ({trial['overhead_fraction'] * 100:.1f}%).",
        "",
        "LogME ranking against fine-tuned validation accuracy (3 epochs each) over the offline zoo:",
        "",
        "| backbone | LogME | fine-tuned val accuracy |",
        "| --- | --- | --- |",
    ]
    for name, score in zoo["logme"].items():
        lines.append(f"| {name} | {score} | {zoo['finetuned_val_accuracy'][name]} |")
    lines += [
        "",
        f"Kendall tau: {zoo['kendall_tau']}",
        "",
        "Notes:",
        "- Each side's best validation accuracy is on its own split (the reference: scikit-learn's 30% "
        "split; autotransfer: its stratified 15%), so compare them loosely.",
        "- The autotransfer full fine-tune space is larger (layer decay, head rate multiplier, warm-up, "
        "schedule, label smoothing, augmentation) than the reference's (learning rate, epochs, batch size).",
        f"- Kendall tau is over the {len(zoo['logme'])} backbones of the offline zoo, one 3-epoch fine-tune "
        "each.",
        "",
    ]
    suffix = "gpu" if "none" not in info["gpu"] else "cpu"
    write(f"speed-{suffix}", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
