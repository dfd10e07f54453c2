"""One trial's training loop, as a ladder of small steps: fit -> run_epoch -> train_step -> loss.

Inputs arrive decoded once and live on the training device. When the first k layer groups are
frozen and nothing augments the inputs, activations at that boundary are computed once and reused
across epochs (and, through ``autotransfer.cache``, across trials).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import cache
from .errors import TrialFailed
from .strategy import Plan, freeze_norm_statistics


def take(inputs: Any, index: torch.Tensor) -> Any:
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def _part(inputs: Any, part: slice) -> Any:
    if isinstance(inputs, dict):
        return {k: v[part] for k, v in inputs.items()}
    return inputs[part]


def count(inputs: Any) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def to_device(inputs: Any, device: torch.device) -> Any:
    """Inputs onto the device; to a GPU through pinned memory, so the copy is one asynchronous DMA."""
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if device.type == "cuda" and inputs.device.type == "cpu":
        inputs = inputs.pin_memory()
    return inputs.to(device, non_blocking=True)


@dataclass
class Stream:
    """Encoded inputs (and labels, when known) of one split, on the device."""

    inputs: Any
    labels: torch.Tensor | None
    key: tuple  # identifies the data for the activation cache


@dataclass
class TrainConfig:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    device: torch.device
    preprocessing: dict
    prepare: Callable[..., Any]
    augment: str = "off"
    use_cache: bool = True
    cache_key: tuple = ()
    warmup_fraction: float = 0.0
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    seed: int = 0
    #: the largest batch one forward/backward may take; a larger ``batch_size`` accumulates gradients
    #: over micro-batches (same update, less memory). None: measured on CUDA before training (see
    #: ``fit_micro_batch``), the whole batch elsewhere
    micro_batch: int | None = None

    @property
    def pass_size(self) -> int:
        """Examples in one forward/backward pass: the micro-batch when one is set, else the batch."""
        return min(self.micro_batch or self.batch_size, self.batch_size)


#: GPU memory a train step needs: (fixed bytes, bytes per example), per model/depth/input shape
_MEMORY: dict[tuple, tuple[float, float]] = {}
#: the share of free GPU memory a trial plans to use; the rest absorbs fragmentation and evaluation
HEADROOM = 0.85


def largest_batch(fixed: float, per_example: float, available: float, headroom: float = HEADROOM) -> int:
    """The largest batch (a power of two, at least 1) whose train step fits ``headroom`` of
    ``available`` bytes, given its linear memory model ``fixed + per_example * batch``."""
    budget = headroom * available - fixed
    if per_example <= 0:
        return 1 << 30
    fits = int(budget // per_example)
    return 1 << max(0, fits.bit_length() - 1) if fits >= 1 else 1


@dataclass
class Trainer:
    model: torch.nn.Module
    plan: Plan
    config: TrainConfig
    train: Stream
    val: Stream
    #: extra streams a strategy asked for: ``target`` (unlabelled), ``aux0``, ``aux1``... (labelled)
    extras: dict = field(default_factory=dict)
    #: label-free model selection: ``score(val_accuracy, target_logits) -> (metric, details)``
    score: Callable[[float, torch.Tensor], tuple] | None = None
    #: unlabelled target inputs the score looks at (never their labels)
    target_val: Stream | None = None
    #: labelled target data, evaluated after training for the record, never for selection
    target_eval: Stream | None = None
    #: called after each epoch with (epoch, validation metric, extra metrics); may raise TrialPruned
    report: Callable[[int, float, dict], None] | None = None
    history: list = field(default_factory=list)

    def __post_init__(self) -> None:
        backbone = self.model.backbone
        self.n_groups = len(backbone.layer_groups)
        k = self.plan.frozen_prefix
        fully_frozen = k >= self.n_groups
        can_split = fully_frozen or (k > 0 and backbone.supports_prefix)
        self.cached_depth = k if (self.config.use_cache and self.config.augment == "off" and can_split) else 0
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.config.device.type == "cuda"
            else contextlib.nullcontext()
        )

    # inputs --------------------------------------------------------------------------------
    def _boundary(self, stream: Stream) -> Any:
        """The stream's activations at the cached depth, computed once."""
        depth = self.cached_depth
        if depth == 0:
            return stream.inputs

        def compute():
            backbone = self.model.backbone
            was_training = backbone.training
            backbone.eval()
            outputs = []
            n = count(stream.inputs)
            step = max(self.config.batch_size, 256)
            with torch.no_grad(), self.autocast:
                for start in range(0, n, step):
                    index = torch.arange(start, min(n, start + step), device=self.config.device)
                    x = self.config.prepare(
                        take(stream.inputs, index), self.config.preprocessing, train=False
                    )
                    if depth >= self.n_groups:
                        out = backbone.forward_features(x)
                    else:
                        out = backbone.forward_range(x, 0, depth)
                    outputs.append(out.float() if out.dtype == torch.bfloat16 else out)
            backbone.train(was_training)
            return torch.cat(outputs)

        return cache.activations.get((*self.config.cache_key, stream.key, depth), compute)

    def features(self, batch: Any, train: bool) -> torch.Tensor:
        """Pooled backbone features for a batch of (possibly cached) inputs."""
        backbone = self.model.backbone
        depth = self.cached_depth
        if depth >= self.n_groups:
            return batch
        if depth > 0:
            return backbone.forward_range(batch, depth, self.n_groups)
        x = self.config.prepare(batch, self.config.preprocessing, train=train, augment=self.config.augment)
        return backbone.forward_features(x)

    # the ladder ----------------------------------------------------------------------------
    def fit(self) -> float:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        train_x = self._boundary(self.train)
        val_x = self._boundary(self.val)
        extras_x = {name: (self._boundary(stream), stream.labels) for name, stream in self.extras.items()}
        target_val_x = self._boundary(self.target_val) if self.target_val is not None else None
        self.optimizer = torch.optim.AdamW(
            [{"params": g["params"], "lr": cfg.lr * g.get("lr_scale", 1.0)} for g in self.plan.param_groups],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        steps_per_epoch = max(1, math.ceil(count(train_x) / cfg.batch_size))
        self.total_steps = steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        if cfg.micro_batch is None and cfg.device.type == "cuda":
            cfg.micro_batch = self.fit_micro_batch(train_x, extras_x)
        metric = float("nan")
        for epoch in range(cfg.epochs):
            if self.plan.on_epoch_start is not None:
                self.plan.on_epoch_start(self.model, epoch)
            loss = self.run_epoch(train_x, extras_x, epoch)
            metric = self.evaluate(val_x, self.val.labels)
            details = {"train_loss": loss}
            if self.score is not None:
                details["source_val_accuracy"] = metric
                metric, more = self.score(metric, self.predict_logits(target_val_x))
                details |= more
            self.history.append({"epoch": epoch + 1, "val_metric": metric, **details})
            if self.report is not None:
                self.report(epoch + 1, metric, details)
        return metric

    def _lr_factor(self, step: int) -> float:
        warmup = int(self.total_steps * self.config.warmup_fraction)
        if step < warmup:
            return (step + 1) / warmup
        if self.config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def run_epoch(self, train_x: Any, extras_x: dict, epoch: int) -> float:
        self.model.train()
        freeze_norm_statistics(self.model)
        n = count(train_x)
        device = self.config.device
        order = torch.randperm(n, device=device)
        extra_orders = {name: torch.randperm(count(x), device=device) for name, (x, _) in extras_x.items()}
        total = torch.zeros((), device=self.config.device)
        batches = 0
        bs = self.config.batch_size
        for start in range(0, n, bs):
            index = order[start : start + bs]
            if len(index) < 2 and n > 1:
                continue  # a batch of one breaks batch norm
            extra_batches = {}
            for name, (x, labels) in extras_x.items():
                # extra streams cycle alongside the source batches, the same size
                e_order = extra_orders[name]
                e_index = e_order[torch.arange(start, start + len(index), device=device) % len(e_order)]
                extra_batches[name] = (take(x, e_index), labels[e_index] if labels is not None else None)
            total += self.train_step(take(train_x, index), self.train.labels[index], extra_batches)
            batches += 1
        mean_loss = (total / max(1, batches)).item()
        if not math.isfinite(mean_loss):
            raise TrialFailed(
                f"training loss became {mean_loss} in epoch {epoch + 1}; the learning rate is likely too high"
            )
        return mean_loss

    def train_step(self, batch: Any, labels: torch.Tensor, extra_batches: dict | None = None) -> torch.Tensor:
        """One optimiser step on the batch: one forward/backward, or, when the batch is larger than
        ``micro_batch``, gradients accumulated over micro-batches weighted by their size."""
        extra_batches = extra_batches or {}
        n = len(labels)
        micro = self.config.micro_batch or n
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=labels.device)
        bounds = list(range(0, n, micro)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]  # never a micro-batch of one (batch norm): the last one takes it
        for start, stop in zip(bounds, bounds[1:]):
            part = slice(start, stop)
            share = (stop - start) / n
            pieces = {
                name: (_part(x, part), None if y is None else y[part])
                for name, (x, y) in extra_batches.items()
            }
            with self.autocast:
                part_loss = self.compute_loss(_part(batch, part), labels[part], pieces) * share
            part_loss.backward()
            loss = loss + part_loss.detach().float()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss

    def fit_micro_batch(self, train_x: Any, extras_x: dict) -> int:
        """CUDA: the largest micro-batch whose train step fits the free GPU memory, from the peak
        memory of two probe forward/backward passes (weights and running statistics restored), so a
        batch size that would not fit trains by accumulation instead of failing out of memory."""
        device = self.config.device
        trainable = [p for g in self.plan.param_groups for p in g["params"]]
        key = (
            self.config.cache_key,
            self.cached_depth,
            self.plan.frozen_prefix,
            sum(p.numel() for p in trainable),
            tuple(sorted(self.extras)),
            self.config.augment,
        )
        n = count(train_x)
        if key not in _MEMORY and n >= 2:
            buffers = {name: b.clone() for name, b in self.model.named_buffers()}
            peaks = []
            sizes = (min(2, n), min(8, n))
            for size in sizes:
                index = torch.arange(size, device=device)
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                with self.autocast:
                    loss = self.compute_loss(
                        take(train_x, index),
                        self.train.labels[index],
                        {
                            k: (take(x, index % count(x)), None if y is None else y[index % count(x)])
                            for k, (x, y) in extras_x.items()
                        },
                    )
                loss.backward()
                self.optimizer.zero_grad(set_to_none=True)
                peaks.append(torch.cuda.max_memory_allocated(device) - base)
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])
            per_example = max(0.0, (peaks[1] - peaks[0]) / max(1, sizes[1] - sizes[0]))
            optimizer_state = 2 * sum(p.numel() * p.element_size() for p in trainable)  # AdamW's two moments
            _MEMORY[key] = (peaks[0] - per_example * sizes[0] + optimizer_state, per_example)
        if key not in _MEMORY:
            return self.config.batch_size
        free, _ = torch.cuda.mem_get_info(device)
        available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return min(self.config.batch_size, largest_batch(*_MEMORY[key], available))

    def compute_loss(self, batch: Any, labels: torch.Tensor, extra_batches: dict) -> torch.Tensor:
        """Task loss, plus the strategy's extra term on the extra streams' features (and labels)."""
        source = self.features(batch, train=True)
        logits = self.model.classify_features(source)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        if self.plan.extra_loss is not None:
            extras = {name: (self.features(x, train=True), y) for name, (x, y) in extra_batches.items()}
            progress = self.step / max(1, self.total_steps)
            loss = loss + self.plan.extra_loss(self.model, source, extras, progress)
        return loss

    @torch.no_grad()
    def predict_logits(self, inputs: Any) -> torch.Tensor:
        self.model.eval()
        outputs = []
        n = count(inputs)
        step = max(self.config.batch_size, 256)
        with self.autocast:
            for start in range(0, n, step):
                index = torch.arange(start, min(n, start + step), device=self.config.device)
                outputs.append(
                    self.model.classify_features(self.features(take(inputs, index), train=False)).float()
                )
        return torch.cat(outputs) if outputs else torch.zeros(0)

    def evaluate(self, inputs: Any, labels: torch.Tensor) -> float:
        logits = self.predict_logits(inputs)
        return (logits.argmax(1) == labels).float().mean().item()
