"""Domain adaptation (DANN, CDAN, CORAL, MMD, MCC) and multi-task strategies.

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
        if name in ("dann", "cdan"):
            knobs["hidden"] = trial.suggest_categorical(f"{name}.hidden", [256, 1024])
            knobs["gamma"] = trial.suggest_float(f"{name}.gamma", 1.0, 20.0, log=True)
        if name == "cdan":
            knobs["entropy"] = trial.suggest_categorical("cdan.entropy", [True, False])
        if name == "mcc":
            knobs["temperature"] = trial.suggest_float("mcc.temperature", 1.0, 5.0)
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


def mcc_loss(target_logits, temperature: float):
    """Minimum class confusion (Jin et al., 2020): the off-diagonal mass of the class-correlation
    matrix of tempered target predictions, examples weighted by their certainty."""
    import torch

    probs = (target_logits.float() / temperature).softmax(1)
    entropy = -(probs * (probs + 1e-8).log()).sum(1)
    weight = 1 + torch.exp(-entropy)
    weight = len(probs) * weight / weight.sum()
    confusion = (probs * weight.unsqueeze(1)).T @ probs
    confusion = confusion / confusion.sum(1, keepdim=True).clamp_min(1e-8)
    return (confusion.sum() - confusion.trace()) / probs.shape[1]


def prepare_mcc(model, params, context):
    """MCC: no discriminator and no feature statistics, only target predictions made less confused."""
    from autotransfer.strategy import fine_tune_plan

    plan = fine_tune_plan(model, params["freeze_depth"], params)

    def extra_loss(model, source, extras, progress):
        target, _ = extras["target"]
        return params["weight"] * mcc_loss(model.classify_features(target), params["temperature"])

    plan.extra_loss, plan.needs = extra_loss, ("target",)
    return plan


def _with_discriminator(model, plan, params, inputs: int):
    """A domain discriminator (a small MLP behind gradient reversal) trained with the plan, dropped
    on export."""
    from torch import nn

    from autotransfer.strategy import without_modules

    hidden = params["hidden"]
    model.domain_discriminator = nn.Sequential(
        nn.Linear(inputs, hidden),
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
    plan.export = without_modules("domain_discriminator", "conditioning")
    plan.needs = ("target",)


def _domain_loss(model, source_inputs, target_inputs, params, progress, weights=None):
    """The discriminator's loss through gradient reversal, with the usual 2/(1+exp(-gamma p)) - 1
    warm-up of the reversal weight over training progress p."""
    import torch
    from torch import nn

    schedule = 2 / (1 + math.exp(-params["gamma"] * progress)) - 1
    inputs = torch.cat([source_inputs, target_inputs])
    domains = torch.cat([torch.zeros(len(source_inputs)), torch.ones(len(target_inputs))]).to(inputs.device)
    logits = model.domain_discriminator(_grad_reverse()(inputs.float(), params["weight"] * schedule)).squeeze(
        1
    )
    return nn.functional.binary_cross_entropy_with_logits(logits, domains, weight=weights)


def prepare_dann(model, params, context):
    """Gradient reversal into a domain discriminator on pooled features (Ganin et al., 2016)."""
    from autotransfer.strategy import fine_tune_plan

    plan = fine_tune_plan(model, params["freeze_depth"], params)
    _with_discriminator(model, plan, params, model.backbone.feature_dim)

    def extra_loss(model, source, extras, progress):
        target, _ = extras["target"]
        return _domain_loss(model, source, target, params, progress)

    plan.extra_loss = extra_loss
    return plan


#: CDAN's multilinear map is taken exactly up to this size, through random projections beyond
CDAN_EXACT = 4096
CDAN_RANDOM = 1024


def prepare_cdan(model, params, context):
    """CDAN (Long et al., 2018): the discriminator sees features conditioned on predictions (their
    outer product, or a randomized multilinear map when that is large); with ``entropy``, confident
    examples weigh more (CDAN+E)."""
    import torch
    from torch import nn

    from autotransfer.strategy import fine_tune_plan

    plan = fine_tune_plan(model, params["freeze_depth"], params)
    d, k = model.backbone.feature_dim, model.head.out_features
    exact = d * k <= CDAN_EXACT
    if not exact:  # fixed random projections, saved with the model's buffers only while training
        model.conditioning = nn.Module()
        model.conditioning.register_buffer("features", torch.randn(d, CDAN_RANDOM))
        model.conditioning.register_buffer("predictions", torch.randn(k, CDAN_RANDOM))
    _with_discriminator(model, plan, params, d * k if exact else CDAN_RANDOM)

    def condition(features, logits):
        probs = logits.float().softmax(1).detach()
        if exact:
            return torch.bmm(probs.unsqueeze(2), features.float().unsqueeze(1)).flatten(1)
        c = model.conditioning
        return (features.float() @ c.features) * (probs @ c.predictions) / math.sqrt(CDAN_RANDOM)

    def extra_loss(model, source, extras, progress):
        target, _ = extras["target"]
        logits = [model.classify_features(source), model.classify_features(target)]
        weights = None
        if params["entropy"]:
            probs = torch.cat(logits).float().softmax(1).detach()
            entropy = -(probs * (probs + 1e-8).log()).sum(1)
            certainty = 1 + torch.exp(-entropy)

            weights = certainty / certainty.mean()
        return _domain_loss(
            model, condition(source, logits[0]), condition(target, logits[1]), params, progress, weights
        )

    plan.extra_loss = extra_loss
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
            name="mcc",
            description="minimum class confusion: make target predictions less confused between classes",
            prepare=prepare_mcc,
            suggest=_suggest_adapt("mcc", (0.1, 10.0)),
            lr_range=(1e-5, 1e-2),
            needs_target=True,
        )
    )
    register(
        StrategySpec(
            name="cdan",
            description="conditional adversarial adaptation: a discriminator on features times predictions",
            prepare=prepare_cdan,
            suggest=_suggest_adapt("cdan", (0.01, 1.0)),
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
