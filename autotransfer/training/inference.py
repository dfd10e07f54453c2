"""The one batched-inference loop: validation, cached activations, the test metric, ``predict`` and
backbone ranking all run through ``infer``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from .batches import count, take


def autocast_for(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA ("auto"), or on any device ("bf16"); none otherwise ("fp32", or
    "auto" off CUDA). Forcing "bf16" on a CPU runs the GPU's numerics where there is no GPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def infer(
    fn: Callable[[Any], torch.Tensor],
    inputs: Any,
    *,
    batch_size: int | None = None,
    device: torch.device,
    precision: str = "auto",
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``fn`` over ``inputs`` in slices of ``batch_size`` (by default the device's inference pass,
    see ``inference_batch``), without gradients: one float tensor.

    ``on_batch(examples)`` runs after every slice (progress, and a budget that may stop the loop)."""
    from .memory import inference_batch

    batch_size = batch_size or inference_batch(inputs, device)
    outputs = []
    n = count(inputs)
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size), device=device)
        with autocast_for(device, precision):
            out = fn(take(inputs, index))
        outputs.append(out.float() if out.is_floating_point() else out)
        if on_batch is not None:
            on_batch(len(index))
    return torch.cat(outputs) if outputs else torch.zeros(0)
