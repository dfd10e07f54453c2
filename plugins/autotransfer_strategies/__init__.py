"""The basic transfer strategies: linear probe, partial and full fine-tune, and the scratch reference."""

from __future__ import annotations

from autotransfer import hookimpl
from autotransfer.specs import PROBE, REFERENCE, StrategySpec

__version__ = "0.1.0"


def prepare_linear_probe(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    return fine_tune_plan(model, context.n_groups, {})


def suggest_partial(trial, context):
    from autotransfer.strategy import suggest_fine_tune

    knobs = {
        "freeze_depth": trial.suggest_int("partial-finetune.freeze_depth", 1, max(1, context.n_groups - 1))
    }
    return knobs | suggest_fine_tune(trial, "partial-finetune", context.n_groups)


def prepare_partial(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    return fine_tune_plan(model, params["freeze_depth"], params)


def suggest_full(trial, context):
    from autotransfer.strategy import suggest_fine_tune

    return suggest_fine_tune(trial, "full-finetune", context.n_groups)


def prepare_full(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    return fine_tune_plan(model, 0, params)


def suggest_gradual(trial, context):
    from autotransfer.strategy import suggest_fine_tune

    knobs = {"epochs_per_group": trial.suggest_int("gradual-unfreeze.epochs_per_group", 1, 3)}
    return knobs | suggest_fine_tune(trial, "gradual-unfreeze", context.n_groups)


def prepare_gradual(model, params, context):
    """ULMFiT-style: the head trains alone first; every ``epochs_per_group`` epochs the next layer
    group from the top joins. Groups that never unfreeze within the trial's epochs stay frozen
    for good (and so can be cached)."""
    from autotransfer.strategy import fine_tune_plan, set_trainable

    n, pace = context.n_groups, params["epochs_per_group"]
    never = n - min(n, (context.epochs - 1) // pace)
    plan = fine_tune_plan(model, never, params)  # optimiser groups for all that will ever train

    def on_epoch_start(model, epoch):
        set_trainable(model, n - min(n, epoch // pace))

    on_epoch_start(model, 0)
    plan.on_epoch_start = on_epoch_start
    return plan


@hookimpl
def register_strategies(register):
    register(
        StrategySpec(
            name="linear-probe",
            description="freeze the whole backbone, train a linear head on its features",
            prepare=prepare_linear_probe,
            lr_range=(1e-3, 3e-1),
            role=PROBE,
            warm_start={"lr": 0.03},
        )
    )
    register(
        StrategySpec(
            name="partial-finetune",
            description="freeze the first layer groups (searched depth), fine-tune the rest",
            prepare=prepare_partial,
            suggest=suggest_partial,
            lr_range=(1e-5, 1e-2),
        )
    )
    register(
        StrategySpec(
            name="full-finetune",
            description="fine-tune every layer, with layer-wise learning-rate decay",
            prepare=prepare_full,
            suggest=suggest_full,
            lr_range=(1e-5, 1e-2),
        )
    )
    register(
        StrategySpec(
            name="gradual-unfreeze",
            description="head first, then unfreeze layer groups from the top at a searched pace (ULMFiT)",
            prepare=prepare_gradual,
            suggest=suggest_gradual,
            lr_range=(1e-5, 1e-2),
        )
    )
    register(
        StrategySpec(
            name="scratch",
            description="the same architecture from random weights: the reference transfer must beat",
            prepare=lambda model, params, context: prepare_full(model, {}, context),
            lr_range=(1e-4, 1e-2),
            pretrained=False,
            role=REFERENCE,
            warm_start={"lr": 1e-3},
        )
    )
