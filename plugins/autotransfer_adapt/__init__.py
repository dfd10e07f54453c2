"""Domain adaptation (DANN, CORAL, MMD) and multi-task strategies.

Each composes with any backbone and freeze depth: the extra loss acts on pooled backbone features,
so a searched number of leading layer groups may stay frozen (and cached).
"""

from __future__ import annotations

import math

from autotransfer import hookimpl
from autotransfer.specs import StrategySpec

__version__ = "0.1.0"


# --- losses ---------------------------------------------------------------------------------
def coral_loss(source, target):
    """Distance between source and target feature covariances (Sun & Saenko, 2016)."""
    d = source.shape[1]

    def covariance(x):
        x = x.float()
        x = x - x.mean(0, keepdim=True)
        return x.T @ x / max(1, x.shape[0] - 1)

    return ((covariance(source) - covariance(target)) ** 2).sum() / (4 * d * d)


def mmd_loss(source, target):
    """Squared maximum mean discrepancy with a sum of Gaussian kernels around the median distance."""
    import torch

    x = torch.cat([source.float(), target.float()])
    distances = torch.cdist(x, x).pow(2)
    bandwidth = distances.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-distances / (bandwidth * scale)) for scale in (0.25, 0.5, 1.0, 2.0, 4.0))
    n = source.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def _grad_reverse():
    import torch

    class GradientReversal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.weight = weight
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return -ctx.weight * grad, None

    return GradientReversal.apply


# --- strategies -----------------------------------------------------------------------------
def _suggest_adapt(name: str, weight_range: tuple[float, float]):
    def suggest(trial, context):
        from autotransfer.strategy import suggest_fine_tune

        knobs = suggest_fine_tune(trial, name, context.n_groups, freeze=True)
        knobs["weight"] = trial.suggest_float(f"{name}.weight", *weight_range, log=True)
        if name == "dann":
            knobs["hidden"] = trial.suggest_categorical("dann.hidden", [256, 1024])
            knobs["gamma"] = trial.suggest_float("dann.gamma", 1.0, 20.0, log=True)
        return knobs

    return suggest


def _discrepancy(loss_fn):
    def prepare(model, params, context):
        from autotransfer.strategy import fine_tune_plan

        plan = fine_tune_plan(model, params["freeze_depth"], params)
        weight = params["weight"]

        def extra_loss(model, source, extras, progress):
            target, _ = extras["target"]
            return weight * loss_fn(source, target)

        plan.extra_loss, plan.needs = extra_loss, ("target",)
        return plan

    return prepare


def prepare_dann(model, params, context):
    """Gradient reversal into a domain discriminator (Ganin et al., 2016), with the usual
    2/(1+exp(-gamma p)) - 1 warm-up of the reversal weight over training progress p."""
    import torch
    from torch import nn

    from autotransfer.strategy import fine_tune_plan, without_modules

    plan = fine_tune_plan(model, params["freeze_depth"], params)
    hidden = params["hidden"]
    model.domain_discriminator = nn.Sequential(
        nn.Linear(model.backbone.feature_dim, hidden),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )
    plan.param_groups.append(
        {
            "params": list(model.domain_discriminator.parameters()),
            "lr_scale": params.get("head_lr_mult", 1.0),
            "name": "discriminator",
        }
    )
    reverse = _grad_reverse()

    def extra_loss(model, source, extras, progress):
        target, _ = extras["target"]
        schedule = 2 / (1 + math.exp(-params["gamma"] * progress)) - 1
        features = torch.cat([source, target])
        domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(features.device)
        logits = model.domain_discriminator(reverse(features.float(), params["weight"] * schedule)).squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logits, domains)

    plan.extra_loss, plan.needs = extra_loss, ("target",)
    plan.export = without_modules("domain_discriminator")
    return plan


def suggest_multitask(trial, context):
    from autotransfer.strategy import suggest_fine_tune

    knobs = suggest_fine_tune(trial, "multitask", context.n_groups, freeze=True)
    knobs["weights"] = [
        trial.suggest_float(f"multitask.weight.{i}", 0.05, 2.0, log=True)
        for i in range(len(context.aux_classes))
    ]
    return knobs


def prepare_multitask(model, params, context):
    """One backbone, a head per auxiliary task; the main task's validation metric drives the search."""
    import torch.nn.functional as F
    from torch import nn

    from autotransfer.strategy import fine_tune_plan, without_modules

    if not context.aux_classes:
        from autotransfer.errors import UserError

        raise UserError("strategy multitask needs related labelled tasks: pass --aux-task DIR")
    plan = fine_tune_plan(model, params["freeze_depth"], params)
    model.aux_heads = nn.ModuleList(nn.Linear(model.backbone.feature_dim, n) for n in context.aux_classes)
    plan.param_groups.append(
        {
            "params": list(model.aux_heads.parameters()),
            "lr_scale": params.get("head_lr_mult", 1.0),
            "name": "aux_heads",
        }
    )
    names = [f"aux{i}" for i in range(len(context.aux_classes))]

    def extra_loss(model, source, extras, progress):
        total = 0.0
        for i, name in enumerate(names):
            features, labels = extras[name]
            total = total + params["weights"][i] * F.cross_entropy(
                model.aux_heads[i](features).float(), labels
            )
        return total

    plan.extra_loss, plan.needs = extra_loss, tuple(names)
    plan.export = without_modules("aux_heads")
    return plan


@hookimpl
def register_strategies(register):
    register(
        StrategySpec(
            name="dann",
            description="domain-adversarial training: a gradient-reversed domain discriminator on features",
            prepare=prepare_dann,
            suggest=_suggest_adapt("dann", (0.01, 1.0)),
            lr_range=(1e-5, 1e-2),
            needs_target=True,
        )
    )
    register(
        StrategySpec(
            name="coral",
            description="CORAL: align source and target feature covariances",
            prepare=_discrepancy(coral_loss),
            suggest=_suggest_adapt("coral", (0.1, 100.0)),
            lr_range=(1e-5, 1e-2),
            needs_target=True,
        )
    )
    register(
        StrategySpec(
            name="mmd",
            description="maximum mean discrepancy between source and target features (multi-kernel)",
            prepare=_discrepancy(mmd_loss),
            suggest=_suggest_adapt("mmd", (0.1, 10.0)),
            lr_range=(1e-5, 1e-2),
            needs_target=True,
        )
    )
    register(
        StrategySpec(
            name="multitask",
            description="one backbone, a head per related task (--aux-task); task loss weights searched",
            prepare=prepare_multitask,
            suggest=suggest_multitask,
            lr_range=(1e-5, 1e-2),
            needs_aux=True,
        )
    )
