"""What a strategy's ``prepare`` returns, and the helpers strategies share.

Everything here works through the backbone surface (ordered layer groups), never through a
library's classes, so one strategy serves image and text backbones alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class StrategyContext:
    """What a strategy may look at when it suggests knobs and prepares a model."""

    backbone_name: str
    modality: str
    n_groups: int
    max_epochs: int
    #: epochs this trial trains for
    epochs: int = 1
    #: extra data streams the search has (``target`` for unlabelled target-domain inputs,
    #: ``aux0``, ``aux1``... for related labelled tasks)
    streams: tuple[str, ...] = ()
    #: number of classes of each auxiliary task, in stream order
    aux_classes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Training:
    """Training settings a strategy decides (the search samples the rest: learning rate, epochs,
    batch size, weight decay). ``weight_decay``: None keeps the searched value; a strategy that
    regularises otherwise (towards its pretrained weights, say) sets 0.0 here."""

    warmup_fraction: float = 0.0
    #: "cosine" (decay to zero over the trial) or "constant"
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    weight_decay: float | None = None


@dataclass
class Plan:
    """How a trial trains: parameter groups with learning-rate scales, and optional extras.

    ``param_groups``: dicts ``{"params": [tensors], "lr_scale": 1.0, "name": "..."}`` (``lr_scale``
    multiplies the trial's learning rate; other keys are ignored); only what is in a group is
    updated. ``frozen_prefix`` counts the leading layer groups that never train: their activations
    may be computed once and cached. ``extra_loss(model, source_features, extras, progress) ->
    tensor`` adds a term to the task loss, once per forward/backward pass (per micro-batch, that
    pass's loss scaled by its share of the batch); ``extras`` maps each stream named in ``needs``
    (``target``, ``aux0``...) to ``(features, labels or None)`` for as many examples as the pass's
    source features, and ``progress`` runs from 0 to 1 over the trial (for schedules).
    ``on_epoch_start(model, epoch)`` may change what trains over time, and then ``frozen_prefix``
    must be the part frozen for the whole trial. ``export(model)`` returns the plain
    ``TransferModel`` to save (merging adapters). ``training`` holds the strategy's training
    settings (a ``weight_decay`` there replaces the searched one); ``notes`` is free-form.
    """

    param_groups: list[dict]
    frozen_prefix: int = 0
    extra_loss: Callable[..., Any] | None = None
    on_epoch_start: Callable[[nn.Module, int], None] | None = None
    export: Callable[[nn.Module], nn.Module] | None = None
    model: nn.Module | None = None
    #: extra streams the trainer must feed ``extra_loss`` (``target``)
    needs: tuple[str, ...] = ()
    training: Training = field(default_factory=Training)
    notes: dict = field(default_factory=dict)


def set_trainable(model, first_group: int) -> None:
    """Freeze the backbone's layer groups below ``first_group``; train the rest and the head."""
    backbone = model.backbone
    for index, params in enumerate(backbone.group_parameters()):
        for p in params:
            p.requires_grad_(index >= first_group)
    for p in backbone.ungrouped_parameters():
        p.requires_grad_(first_group == 0)
    for p in model.head.parameters():
        p.requires_grad_(True)


def layerwise_groups(
    model,
    first_group: int,
    *,
    layer_decay: float = 1.0,
    head_lr_mult: float = 1.0,
    only: Callable[[str, nn.Parameter], bool] | None = None,
) -> list[dict]:
    """Optimiser groups: the head at ``head_lr_mult``; backbone group i at ``layer_decay ** (top - i)``.

    With ``layer_decay`` 1.0 every backbone group shares one rate. ``only`` filters parameters
    (BitFit keeps biases). Groups with no trainable parameter are left out.
    """
    backbone = model.backbone
    n = len(backbone.layer_groups)
    names = {id(p): name for name, p in backbone.named_parameters()}
    groups = [{"params": [p for p in model.head.parameters()], "lr_scale": head_lr_mult, "name": "head"}]
    for index in range(first_group, n):
        params = [
            p
            for p in backbone.group_parameters()[index]
            if p.requires_grad and (only is None or only(names[id(p)], p))
        ]
        if params:
            groups.append(
                {"params": params, "lr_scale": layer_decay ** (n - 1 - index), "name": f"group{index}"}
            )
    loose = [
        p
        for p in backbone.ungrouped_parameters()
        if p.requires_grad and (only is None or only(names[id(p)], p))
    ]
    if loose:
        groups.append({"params": loose, "lr_scale": layer_decay**n, "name": "ungrouped"})
    return groups


def freeze_norm_statistics(module: nn.Module) -> None:
    """Keep normalisation layers whose parameters are all frozen in eval mode (running stats fixed)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def suggest_fine_tune(trial, prefix: str, n_groups: int, *, freeze: bool = False) -> dict:
    """Knobs every fine-tuning strategy shares: layer-wise rate decay (1.0: one rate for all), the
    head's rate multiplier, warm-up, schedule, label smoothing and, when ``freeze``, how many layer
    groups stay frozen (0 fine-tunes everything)."""
    knobs = {
        "layer_decay": trial.suggest_float(f"{prefix}.layer_decay", 0.5, 1.0),
        "head_lr_mult": trial.suggest_float(f"{prefix}.head_lr_mult", 1.0, 100.0, log=True),
        "warmup_fraction": trial.suggest_float(f"{prefix}.warmup", 0.0, 0.3),
        "schedule": trial.suggest_categorical(f"{prefix}.schedule", ["cosine", "constant"]),
        "label_smoothing": trial.suggest_float(f"{prefix}.label_smoothing", 0.0, 0.2),
    }
    if freeze:
        knobs["freeze_depth"] = trial.suggest_int(f"{prefix}.freeze_depth", 0, max(0, n_groups - 1))
    return knobs


TRAINING_KNOBS = ("warmup_fraction", "schedule", "label_smoothing")


def fine_tune_plan(model, first_group: int, knobs: dict) -> Plan:
    """Freeze below ``first_group`` and build layer-wise optimiser groups from the shared knobs:
    ``knobs`` is what ``suggest_fine_tune`` returns (any key may be missing; ``{}`` for none).
    ``first_group`` 0 fine-tunes everything; the number of layer groups freezes the backbone."""
    set_trainable(model, first_group)
    groups = layerwise_groups(
        model,
        first_group,
        layer_decay=knobs.get("layer_decay", 1.0),
        head_lr_mult=knobs.get("head_lr_mult", 1.0),
    )
    training = Training(**{k: knobs[k] for k in TRAINING_KNOBS if k in knobs})
    return Plan(param_groups=groups, frozen_prefix=first_group, training=training)


def without_modules(*names: str) -> Callable[[nn.Module], nn.Module]:
    """An ``export`` that drops training-only submodules (discriminators, auxiliary heads)."""

    def export(model: nn.Module) -> nn.Module:
        for name in names:
            if hasattr(model, name):
                delattr(model, name)
        return model

    return export
