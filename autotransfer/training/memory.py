"""GPU memory a train step needs, measured once per model and input shape, so a batch that would
not fit trains as accumulated micro-batches instead of failing out of memory.

Everything here is plain arithmetic over measured bytes except ``measure_step``, which needs CUDA's
peak-memory counters; the arithmetic is tested on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

#: the share of free GPU memory a trial plans to use; the rest absorbs fragmentation and evaluation
HEADROOM = 0.85
#: on a CPU, a pass over more input elements than this runs slower per example, as its activations
#: outgrow the caches (EfficientNet-Lite0 at 224 px: 30 ms an image in passes of 8, 82 ms in passes
#: of 256; training 102 ms against 198 ms at 16 and 64): passes are cut to about this size
CPU_PASS_ELEMENTS = 1 << 20


def largest_batch(fixed: float, per_example: float, available: float, headroom: float = HEADROOM) -> int:
    """The largest batch (a power of two, at least 1) whose train step fits ``headroom`` of
    ``available`` bytes, given its linear memory model ``fixed + per_example * batch``."""
    budget = headroom * available - fixed
    if per_example <= 0:
        return 1 << 30
    fits = int(budget // per_example)
    return 1 << max(0, fits.bit_length() - 1) if fits >= 1 else 1


def cpu_pass_size(elements_per_example: int, cap: int, floor: int = 8) -> int:
    """Examples per forward (and backward) pass on a CPU: a power of two near ``CPU_PASS_ELEMENTS``
    input elements, at least ``floor`` and at most ``cap``."""
    fits = max(1, CPU_PASS_ELEMENTS // max(1, elements_per_example))
    return max(min(floor, cap), min(cap, 1 << (fits.bit_length() - 1)))


def inference_batch(inputs, device, cap: int = 256) -> int:
    """Examples per inference pass: ``cap`` on a GPU; on a CPU sized to its caches, since a pass
    outgrowing them is slower per example (see ``CPU_PASS_ELEMENTS``)."""
    if device.type == "cuda":
        return cap
    return cpu_pass_size(elements_per_example(inputs), cap)


def elements_per_example(inputs) -> int:
    """Input elements of one example (a dict of tensors counts them all)."""
    tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
    return sum(int(t[0].numel()) for t in tensors if len(t))


def linear_model(
    sizes: tuple[int, int], peaks: tuple[float, float], optimizer_state: float
) -> tuple[float, float]:
    """(fixed bytes, bytes per example) from the peak memory of steps at two batch sizes, plus the
    optimiser state the real step adds (AdamW keeps two moments per trained parameter)."""
    per_example = max(0.0, (peaks[1] - peaks[0]) / max(1, sizes[1] - sizes[0]))
    return peaks[0] - per_example * sizes[0] + optimizer_state, per_example


@dataclass
class MemoryModel:
    """Measured (fixed, per-example) bytes per train-step shape, owned by one search."""

    steps: dict[Hashable, tuple[float, float]] = field(default_factory=dict)

    def micro_batch(
        self,
        key: Hashable,
        batch_size: int,
        available: float,
        measure: Callable[[], tuple[float, float] | None],
    ) -> int:
        """The largest micro-batch (at most ``batch_size``) that fits ``available`` bytes; ``measure``
        runs once per key and returns (fixed, per_example), or None when it cannot measure."""
        if key not in self.steps:
            measured = measure()
            if measured is None:
                return batch_size
            self.steps[key] = measured
        return min(batch_size, largest_batch(*self.steps[key], available))


def measure_step(
    step: Callable[[int], None], trainable_bytes: float, device, n: int
) -> tuple[float, float] | None:
    """Peak CUDA memory of ``step(size)`` (one forward and backward of ``size`` examples) at two
    sizes, as a linear model. The caller restores whatever the probe steps changed."""
    import torch

    if n < 2:
        return None
    sizes = (min(2, n), min(8, n))
    peaks = []
    for size in sizes:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(size)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    return linear_model(sizes, (peaks[0], peaks[1]), 2 * trainable_bytes)


def available_bytes(device) -> float:
    """Free GPU memory plus what this process has reserved but does not use."""
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
