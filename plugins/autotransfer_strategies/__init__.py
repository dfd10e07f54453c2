"""The basic transfer strategies: linear probe, partial and full fine-tune, and the scratch reference."""

from __future__ import annotations

from autotransfer import hookimpl
from autotransfer.specs import StrategySpec

__version__ = "0.1.0"


def _fine_tune_knobs(trial, context, prefix: str) -> dict:
    """Discriminative learning rates shared by every fine-tuning strategy."""
    return {
        "layer_decay": trial.suggest_float(f"{prefix}.layer_decay", 0.5, 1.0),
        "head_lr_mult": trial.suggest_float(f"{prefix}.head_lr_mult", 1.0, 100.0, log=True),
    }


def _plan(model, first_group: int, layer_decay: float = 1.0, head_lr_mult: float = 1.0):
    from autotransfer.strategy import Plan, layerwise_groups, set_trainable

    set_trainable(model, first_group)
    groups = layerwise_groups(model, first_group, layer_decay=layer_decay, head_lr_mult=head_lr_mult)
    return Plan(param_groups=groups, frozen_prefix=first_group)


def prepare_linear_probe(model, params, context):
    return _plan(model, context.n_groups)


def suggest_partial(trial, context):
    knobs = {"freeze_depth": trial.suggest_int("partial-finetune.freeze_depth", 1, max(1, context.n_groups - 1))}
    return knobs | _fine_tune_knobs(trial, context, "partial-finetune")


def prepare_partial(model, params, context):
    return _plan(model, params["freeze_depth"], params["layer_decay"], params["head_lr_mult"])


def prepare_full(model, params, context):
    return _plan(model, 0, params["layer_decay"], params["head_lr_mult"])


def prepare_scratch(model, params, context):
    return _plan(model, 0)


@hookimpl
def register_strategies(register):
    register(StrategySpec(
        name="linear-probe",
        description="freeze the whole backbone, train a linear head on its features",
        prepare=prepare_linear_probe,
        lr_range=(1e-3, 3e-1),
    ))
    register(StrategySpec(
        name="partial-finetune",
        description="freeze the first layer groups (searched depth), fine-tune the rest",
        prepare=prepare_partial,
        suggest=suggest_partial,
        lr_range=(1e-5, 1e-2),
    ))
    register(StrategySpec(
        name="full-finetune",
        description="fine-tune every layer, with layer-wise learning-rate decay",
        prepare=prepare_full,
        suggest=lambda trial, context: _fine_tune_knobs(trial, context, "full-finetune"),
        lr_range=(1e-5, 1e-2),
    ))
    register(StrategySpec(
        name="scratch",
        description="the same architecture from random weights: the reference transfer must beat",
        prepare=prepare_scratch,
        lr_range=(1e-4, 1e-2),
        pretrained=False,
    ))
