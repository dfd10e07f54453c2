"""Fine-tuning craft: gradual unfreezing, layer-wise learning rates, few-shot searches."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, cli, problem_for, read_json, trainer_for


def build(digits, tmp_path, params):
    problem = problem_for(digits, tmp_path, backbones=["tf_efficientnet_lite0"], image_size=32)
    base = {"backbone": "tf_efficientnet_lite0", "batch_size": 32, "weight_decay": 1e-6, "augment": "off"}
    return trainer_for(problem, base | params)


def test_gradual_unfreeze_changes_what_trains_over_epochs(digits, tmp_path):
    params = {
        "strategy": "gradual-unfreeze",
        "gradual-unfreeze.lr": 1e-3,
        "epochs": 4,
        "gradual-unfreeze.epochs_per_group": 1,
        "gradual-unfreeze.layer_decay": 1.0,
        "gradual-unfreeze.head_lr_mult": 1.0,
        "gradual-unfreeze.warmup": 0.0,
        "gradual-unfreeze.schedule": "constant",
        "gradual-unfreeze.label_smoothing": 0.0,
    }
    trainer = build(digits, tmp_path, params)
    backbone = trainer.model.backbone
    n = len(backbone.layer_groups)
    snapshots = []
    original = trainer.plan.on_epoch_start

    def snapshot_then_start(model, epoch):
        snapshots.append([[p.detach().clone() for p in group] for group in backbone.group_parameters()])
        original(model, epoch)

    def snapshot_after_last(epoch, metric, extra):  # fit() then restores the best epoch's weights
        if epoch == trainer.config.epochs:
            snapshots.append([[p.detach().clone() for p in group] for group in backbone.group_parameters()])

    trainer.plan.on_epoch_start = snapshot_then_start
    trainer.report = snapshot_after_last
    trainer.fit()

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
    params = {
        "strategy": "full-finetune",
        "full-finetune.lr": 1e-3,
        "epochs": 1,
        "full-finetune.layer_decay": 0.5,
        "full-finetune.head_lr_mult": 10.0,
        "full-finetune.warmup": 0.1,
        "full-finetune.schedule": "cosine",
        "full-finetune.label_smoothing": 0.1,
    }
    trainer = build(digits, tmp_path, params)
    trainer.fit()
    n = len(trainer.model.backbone.layer_groups)
    rates = {
        g["name"] if "name" in g else i: o["initial_lr"]
        for i, (g, o) in enumerate(zip(trainer.plan.param_groups, trainer.optimizer.param_groups))
    }
    assert rates["head"] == pytest.approx(1e-2)
    for i in range(n):
        assert rates[f"group{i}"] == pytest.approx(1e-3 * 0.5 ** (n - 1 - i))
    assert trainer.config.label_smoothing == 0.1 and trainer.config.warmup_fraction == 0.1


def test_five_shot_search_finishes_and_reports(tmp_path):
    from autotransfer.features.demo import export_digits

    data = export_digits(str(tmp_path / "five"), per_class=5)
    out = tmp_path / "out"
    cli(
        "search",
        data,
        "-o",
        out,
        "--n-trials",
        "3",
        "--max-epochs",
        "2",
        "--image-size",
        "32",
        "--backbones",
        "tf_efficientnet_lite0",
        "--quiet",
    )
    split = read_json(out / "split.json")
    # 5 per class: 3 train, 1 validation, 1 test
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (30, 10, 10)
    best = read_json(out / "best.json")
    assert best["n_test"] == 10 and best["test_metric"] is not None


def test_two_shot_classes_split_without_test(tmp_path):
    from autotransfer.data import split_indices

    split = split_indices([0, 0, 1, 1, 2, 2], val_fraction=0.15, test_fraction=0.15, seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (3, 3, 0)


# learning from less data --------------------------------------------------------------------
def test_shots_shrink_only_the_training_split(digits, tmp_path):
    from autotransfer.data import split_to_items

    out = tmp_path / "two-shot"
    cli(
        "search",
        digits,
        "-o",
        out,
        "--shots",
        "2",
        "--n-trials",
        "1",
        "--max-epochs",
        "1",
        "--strategies",
        "linear-probe",
        "--no-reference",
        *FAST,
    )
    shrunk = read_json(out / "split.json")
    whole = problem_for(digits, tmp_path / "whole", backbones=["tf_efficientnet_lite0"])
    full = split_to_items(whole.dataset, whole.split)
    assert shrunk["val"] == full["val"] and shrunk["test"] == full["test"]
    assert set(shrunk["train"]) < set(full["train"]) and len(shrunk["train"]) == 20
    per_class = {}
    for item in shrunk["train"]:
        per_class[item.split("/")[0]] = per_class.get(item.split("/")[0], 0) + 1
    assert sorted(per_class.values()) == [2] * 10
    assert read_json(out / "best.json")["test_metric"] is not None
    # the study keeps its training set: resuming with another size is refused, not mixed
    result = cli("search", digits, "-o", out, "--shots", "3", "--n-trials", "2", *FAST, expect=2)
    assert "--shots 2, not 3" in result.output and "Traceback" not in result.output


def test_smaller_training_subsets_are_part_of_larger_ones():
    from autotransfer.data import subsample

    labels = [i % 4 for i in range(200)]
    train = list(range(0, 200, 2)) + [1, 3]
    sizes = [subsample(labels, train, shots=k, seed=3) for k in (1, 5, 10)]
    sizes += [subsample(labels, train, fraction=f, seed=3) for f in (0.5, 1.0)]
    for smaller, larger in zip(sizes, sizes[1:]):
        assert set(smaller) <= set(larger)
    assert sizes[-1] == sorted(train)
    assert subsample(labels, train, shots=5, seed=4) != sizes[1]  # seeded: another seed, another draw
    counts = [sum(labels[i] == c for i in sizes[1]) for c in range(4)]
    assert counts == [5, 1, 5, 1]  # classes 1 and 3 have a single training example: they keep it


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train-fraction", "1.5"], "--train-fraction 1.5: give a fraction in (0, 1]"),
        (["--shots", "0"], "--shots 0: give at least 1"),
        (["--shots", "2", "--train-fraction", "0.5"], "--train-fraction and --shots both given"),
    ],
)
def test_bad_training_sizes_are_one_line_errors(digits, tmp_path, args, message):
    result = cli("search", digits, "-o", tmp_path / "out", *args, *FAST, expect=2)
    assert message in result.output and "Traceback" not in result.output


# batches that do not fit ---------------------------------------------------------------------
def test_a_batch_accumulated_over_micro_batches_trains_the_same(digits, tmp_path):
    """What a GPU trial does when its batch does not fit: the same update from smaller passes."""
    params = {"strategy": "linear-probe", "linear-probe.lr": 0.03, "epochs": 2, "batch_size": 32}
    whole = build(digits, tmp_path / "whole", params)
    whole.fit()
    split = build(digits, tmp_path / "split", params)
    split.config.micro_batch = 5  # 32 = 5+5+5+5+5+7: uneven, never a pass of one
    split.fit()
    for a, b in zip(whole.model.head.parameters(), split.model.head.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert [h["train_loss"] for h in whole.history] == pytest.approx(
        [h["train_loss"] for h in split.history], rel=1e-4
    )


@pytest.mark.parametrize(
    "fixed_gb, per_example_mb, free_gb, expected",
    [
        (1.0, 100, 10.0, 64),  # (0.85*10 - 1) GB / 100 MB = 75 examples -> 64
        (1.0, 100, 80.0, 512),  # an H100's worth
        (9.0, 100, 10.0, 1),  # nothing left over: one at a time rather than not at all
    ],
)
def test_largest_batch_that_fits(fixed_gb, per_example_mb, free_gb, expected):
    from autotransfer.training.memory import largest_batch

    assert largest_batch(fixed_gb * 2**30, per_example_mb * 2**20, free_gb * 2**30) == expected


def test_inference_on_a_cpu_runs_in_passes_its_caches_hold_and_gives_the_same_outputs():
    """The final test, ``predict`` and validation all infer in passes sized to the device: on a CPU
    a 224 px image batch is cut to passes of 8 (a pass of 256 ran the same model 2x slower per
    image), small inputs keep large passes; the outputs do not depend on the pass."""
    import torch

    from autotransfer.training.inference import infer

    cpu = torch.device("cpu")
    for side, expected in ((224, 8), (32, 256)):
        images = torch.randn(300, 3, side, side)
        passes: list[int] = []
        pooled = infer(lambda x: x.mean((2, 3)), images, device=cpu, on_batch=passes.append)
        assert max(passes) == expected and sum(passes) == 300
        torch.testing.assert_close(
            pooled, infer(lambda x: x.mean((2, 3)), images, batch_size=300, device=cpu)
        )
