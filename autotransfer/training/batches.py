"""Encoded inputs are a tensor or a dict of tensors (token ids and masks): indexing, slicing and
moving them works the same for both."""

from __future__ import annotations

from typing import Any

import torch


def take(inputs: Any, index: torch.Tensor) -> Any:
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def part(inputs: Any, piece: slice) -> Any:
    if isinstance(inputs, dict):
        return {k: v[piece] for k, v in inputs.items()}
    return inputs[piece]


def count(inputs: Any) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def to_device(inputs: Any, device: torch.device) -> Any:
    """Inputs onto the device; to a GPU through pinned memory, so the copy is one asynchronous DMA."""
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if device.type == "cuda" and inputs.device.type == "cpu":
        inputs = inputs.pin_memory()
    return inputs.to(device, non_blocking=True)
