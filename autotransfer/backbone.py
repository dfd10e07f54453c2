"""The one surface every backbone offers, whatever library it comes from.

Strategies and the trainer use only this: ``forward_features``, ``feature_dim``,
``layer_groups`` (parameter names, input to output) and ``preprocessing``. Optionally ``stages``
(callables whose composition is ``forward_features``, one per layer group) lets frozen prefixes be
computed once and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """Wraps a library model (``body``) behind the transfer surface.

    ``layer_groups`` are given as parameter names relative to ``body`` (``blocks.0.conv.weight``)
    and kept relative to the Backbone itself (``body.blocks.0.conv.weight``), the names
    ``named_parameters()`` gives. ``features(body, inputs)`` pools (default: ``body(inputs)``);
    ``stages``, one ``stage(body, x)`` per layer group, compose to it.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        feature_dim: int,
        layer_groups: Sequence[Sequence[str]],
        preprocessing: Mapping[str, Any],
        features: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        stages: Sequence[Callable[[nn.Module, Any], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.layer_groups = [[f"body.{n}" for n in group] for group in layer_groups]
        self.preprocessing = dict(preprocessing)
        self._features = features or (lambda module, inputs: module(inputs))
        self._stages = list(stages) if stages is not None else None
        if self._stages is not None and len(self._stages) != len(self.layer_groups):
            raise ValueError("stages must match layer groups one to one")
        names = {n for n, _ in self.named_parameters()}
        missing = [n for g in self.layer_groups for n in g if n not in names]
        if missing:
            raise ValueError(f"layer groups name unknown parameters: {missing[:3]}")

    @property
    def supports_prefix(self) -> bool:
        return self._stages is not None

    def forward_features(self, inputs: Any) -> torch.Tensor:
        return self._features(self.body, inputs)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.forward_features(inputs)

    def forward_range(self, inputs: Any, start: int, stop: int) -> Any:
        """Run layer groups ``start`` to ``stop - 1``; stop == len(groups) yields pooled features."""
        if self._stages is None:
            raise NotImplementedError("this backbone has no stages")
        x = inputs
        for stage in self._stages[start:stop]:
            x = stage(self.body, x)
        return x

    def group_parameters(self) -> list[list[nn.Parameter]]:
        params = dict(self.named_parameters())
        return [[params[n] for n in group] for group in self.layer_groups]

    def ungrouped_parameters(self) -> list[nn.Parameter]:
        grouped = {n for g in self.layer_groups for n in g}
        return [p for n, p in self.named_parameters() if n not in grouped]


class TransferModel(nn.Module):
    """A backbone and a classification head: ``backbone`` (the ``Backbone``), ``head`` (a linear
    layer from ``feature_dim`` to the classes, which always trains) and ``dropout`` before it.
    What a strategy's ``prepare`` gets, and what ``predict`` rebuilds to load exported weights."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.dropout(self.backbone.forward_features(inputs)))

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


def place(model: nn.Module, device: Any) -> nn.Module:
    """``model`` on ``device``, its 4-D weights in the channels-last layout, in which convolutions run
    fastest on CPUs (oneDNN) and GPUs alike: on a 2-core CPU, EfficientNet-Lite0's forward 5.6x as
    fast at 32 px and 1.3x at 224 px, training 1.1-1.6x (``benchmarks/results/layout-cpu.md``).
    Layers without 4-D weights (text models, heads) are unchanged; outputs are equal up to rounding."""
    return model.to(device).to(memory_format=torch.channels_last)
