"""Fine-tuning craft: gradual unfreezing, layer-wise learning rates, few-shot searches."""

from __future__ import annotations

import optuna
import pytest
import torch

from conftest import cli, read_json


def build(digits, tmp_path, params):
    from autotransfer.config import SearchConfig
    from autotransfer.search import Search

    search = Search(SearchConfig(data=str(digits), output=str(tmp_path / "o"), backbones=["tf_efficientnet_lite0"],
                                 image_size=32, quiet=True))
    base = {"backbone": "tf_efficientnet_lite0", "batch_size": 32, "weight_decay": 1e-6, "augment": "off"}
    trainer, _ = search.build_trial(optuna.trial.FixedTrial(base | params))
    return trainer


def test_gradual_unfreeze_changes_what_trains_over_epochs(digits, tmp_path):
    params = {"strategy": "gradual-unfreeze", "gradual-unfreeze.lr": 1e-3, "epochs": 4,
              "gradual-unfreeze.epochs_per_group": 1, "gradual-unfreeze.layer_decay": 1.0,
              "gradual-unfreeze.head_lr_mult": 1.0, "gradual-unfreeze.warmup": 0.0,
              "gradual-unfreeze.schedule": "constant", "gradual-unfreeze.label_smoothing": 0.0}
    trainer = build(digits, tmp_path, params)
    backbone = trainer.model.backbone
    n = len(backbone.layer_groups)
    snapshots = []
    original = trainer.plan.on_epoch_start

    def snapshot_then_start(model, epoch):
        snapshots.append([[p.detach().clone() for p in group] for group in backbone.group_parameters()])
        original(model, epoch)

    trainer.plan.on_epoch_start = snapshot_then_start
    trainer.fit()
    snapshots.append([[p.detach().clone() for p in group] for group in backbone.group_parameters()])

    def changed(epoch, group):  # did group's weights move during epoch (0-based)?
        before, after = snapshots[epoch][group], snapshots[epoch + 1][group]
        return any(not torch.equal(a, b) for a, b in zip(before, after))

    assert not any(changed(0, g) for g in range(n))  # epoch 1: the head alone
    for epoch in (1, 2, 3):  # then one more group from the top each epoch
        assert all(changed(epoch, g) for g in range(n - epoch, n)), epoch
        assert not any(changed(epoch, g) for g in range(0, n - epoch)), epoch
    # groups that never unfreeze in 4 epochs were frozen for good, so their activations were cached
    assert trainer.cached_depth == n - 3


def test_layerwise_rates_reach_the_optimiser(digits, tmp_path):
    params = {"strategy": "full-finetune", "full-finetune.lr": 1e-3, "epochs": 1,
              "full-finetune.layer_decay": 0.5, "full-finetune.head_lr_mult": 10.0, "full-finetune.warmup": 0.1,
              "full-finetune.schedule": "cosine", "full-finetune.label_smoothing": 0.1}
    trainer = build(digits, tmp_path, params)
    trainer.fit()
    n = len(trainer.model.backbone.layer_groups)
    rates = {g["name"] if "name" in g else i: o["initial_lr"]
             for i, (g, o) in enumerate(zip(trainer.plan.param_groups, trainer.optimizer.param_groups))}
    assert rates["head"] == pytest.approx(1e-2)
    for i in range(n):
        assert rates[f"group{i}"] == pytest.approx(1e-3 * 0.5 ** (n - 1 - i))
    assert trainer.config.label_smoothing == 0.1 and trainer.config.warmup_fraction == 0.1


def test_five_shot_search_finishes_and_reports(tmp_path):
    from autotransfer.demo import export_digits

    data = export_digits(str(tmp_path / "five"), per_class=5)
    out = tmp_path / "out"
    cli("search", data, "-o", out, "--n-trials", "3", "--max-epochs", "2", "--image-size", "32",
        "--backbones", "tf_efficientnet_lite0", "--quiet")
    split = read_json(out / "split.json")
    # 5 per class: 3 train, 1 validation, 1 test
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (30, 10, 10)
    best = read_json(out / "best.json")
    assert best["n_test"] == 10 and best["test_metric"] is not None


def test_two_shot_classes_split_without_test(tmp_path):
    from autotransfer.data import split_indices

    split = split_indices([0, 0, 1, 1, 2, 2], val_fraction=0.15, test_fraction=0.15, seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (3, 3, 0)
