"""Parameter-efficient strategies: LoRA (through peft) and BitFit.

Both work on any backbone through its surface: LoRA adapts the backbone's linear layers (and 1x1
convolutions, so it fits timm CNNs too), found by walking torch modules, never by a library's
classes; BitFit trains the bias terms and the head. LoRA's ``export`` merges the adapters back, so
the saved weights are those of a plain ``TransferModel``.
"""

from __future__ import annotations

from autotransfer import hookimpl
from autotransfer.specs import IMAGE, TEXT, StrategySpec

__version__ = "0.1.0"

#: module path parts that mark attention projections (transformers, timm ViTs)
ATTENTION_PARTS = ("attention", "attn", "self_attn")
TARGETS = ("attention", "all-linear")


def adaptable_modules(body) -> dict[str, str]:
    """Module name -> "attention" or "other", for every layer LoRA can adapt: linear layers and
    ungrouped 1x1 convolutions (a 3x3 or padded convolution's adapter would not line up)."""
    from torch import nn

    found = {}
    for name, module in body.named_modules():
        pointwise = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
        if name and (isinstance(module, nn.Linear) or pointwise):
            parts = name.split(".")
            found[name] = "attention" if any(p in ATTENTION_PARTS for p in parts) else "other"
    return found


def suggest_lora(trial, context):
    r = trial.suggest_categorical("lora.r", [4, 8, 16])
    return {
        "r": r,
        "alpha": r * trial.suggest_categorical("lora.alpha_ratio", [1, 2, 4]),
        "dropout": trial.suggest_float("lora.dropout", 0.0, 0.2),
        "targets": trial.suggest_categorical("lora.targets", list(TARGETS)),
        "head_lr_mult": trial.suggest_float("lora.head_lr_mult", 1.0, 30.0, log=True),
    }


def prepare_lora(model, params, context):
    """Wrap the backbone's body with LoRA adapters; only the adapters and the head train."""
    from peft import LoraConfig, get_peft_model

    from autotransfer.errors import TrialFailed
    from autotransfer.strategy import Plan

    backbone = model.backbone
    modules = adaptable_modules(backbone.body)
    targets = [n for n, kind in modules.items() if params["targets"] == "all-linear" or kind == "attention"]
    if not targets:  # no attention projections (a CNN): adapt every layer that can be
        targets = list(modules)
    if not targets:
        raise TrialFailed(f"backbone {context.backbone_name} has no linear or 1x1 convolution layer for LoRA")
    group_of = {id(p): i for i, params_ in enumerate(backbone.group_parameters()) for p in params_}
    original_groups = backbone.layer_groups
    config = LoraConfig(
        r=params["r"],
        lora_alpha=params["alpha"],
        lora_dropout=params["dropout"],
        target_modules=targets,
        bias="none",
    )
    backbone.body = get_peft_model(backbone.body, config)
    backbone.layer_groups = _regrouped(backbone, group_of, len(original_groups))
    for p in model.head.parameters():
        p.requires_grad_(True)
    groups = [
        {"params": list(model.head.parameters()), "lr_scale": params.get("head_lr_mult", 1.0), "name": "head"}
    ]
    adapters = [p for p in backbone.parameters() if p.requires_grad]
    groups.append({"params": adapters, "lr_scale": 1.0, "name": "lora"})
    frozen_prefix = _frozen_prefix(backbone)

    def export(model):
        """Merge the adapters into the weights they adapt: the saved model is a plain TransferModel."""
        model.backbone.body = model.backbone.body.merge_and_unload()
        model.backbone.layer_groups = original_groups
        return model

    return Plan(
        param_groups=groups, frozen_prefix=frozen_prefix, export=export, notes={"lora_targets": len(targets)}
    )


def _regrouped(backbone, group_of: dict, n_groups: int) -> list[list[str]]:
    """Layer groups under the wrapper's parameter names; each adapter joins its base layer's group."""
    groups: list[list[str]] = [[] for _ in range(n_groups)]
    pending = []  # adapters come before or after their base weight, depending on the layer
    for name, p in backbone.named_parameters():
        if id(p) in group_of:
            groups[group_of[id(p)]].append(name)
        else:
            pending.append(name)
    named = dict(backbone.named_parameters())
    base_group = {
        name.rsplit(".base_layer.", 1)[0]: group_of[id(p)]
        for name, p in named.items()
        if ".base_layer." in name and id(p) in group_of
    }
    for name in pending:
        layer = name.split(".lora_", 1)[0]
        if layer in base_group:
            groups[base_group[layer]].append(name)
    return groups


def _frozen_prefix(backbone) -> int:
    """The leading layer groups in which nothing trains."""
    trains = [any(p.requires_grad for p in group) for group in backbone.group_parameters()]
    return trains.index(True) if True in trains else len(trains)


def suggest_bitfit(trial, context):
    return {"head_lr_mult": trial.suggest_float("bitfit.head_lr_mult", 1.0, 30.0, log=True)}


def _is_bias(name: str, _param=None) -> bool:
    return name.endswith("bias")


def prepare_bitfit(model, params, context):
    """BitFit (Ben Zaken et al., 2022): every bias term of the backbone and the head train; nothing else."""
    from autotransfer.strategy import Plan, layerwise_groups

    backbone = model.backbone
    for name, p in backbone.named_parameters():
        p.requires_grad_(_is_bias(name))
    for p in model.head.parameters():
        p.requires_grad_(True)
    frozen_prefix = _frozen_prefix(backbone)
    groups = layerwise_groups(
        model, frozen_prefix, head_lr_mult=params.get("head_lr_mult", 1.0), only=_is_bias
    )
    return Plan(param_groups=groups, frozen_prefix=frozen_prefix)


@hookimpl
def register_strategies(register):
    register(
        StrategySpec(
            name="lora",
            description="low-rank adapters (peft) on attention or all linear layers; the head trains, "
            "merged on export",
            prepare=prepare_lora,
            suggest=suggest_lora,
            lr_range=(1e-4, 1e-2),
            modalities=frozenset({TEXT, IMAGE}),
        )
    )
    register(
        StrategySpec(
            name="bitfit",
            description="train only the backbone's bias terms and the head (BitFit)",
            prepare=prepare_bitfit,
            suggest=suggest_bitfit,
            lr_range=(1e-4, 1e-2),
            modalities=frozenset({TEXT, IMAGE}),
        )
    )
