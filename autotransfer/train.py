"""One trial's training loop, as a ladder of small steps: fit -> run_epoch -> train_step -> loss.

Inputs arrive decoded once and live on the training device. When the first k layer groups are
frozen and nothing augments the inputs, activations at that boundary are computed once and reused
across epochs (and, through ``autotransfer.cache``, across trials).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from . import cache
from .errors import TrialFailed
from .strategy import Plan, freeze_norm_statistics


def take(inputs: Any, index: torch.Tensor) -> Any:
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def count(inputs: Any) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=True)


@dataclass
class Stream:
    """Encoded inputs (and labels, when known) of one split, on the device."""

    inputs: Any
    labels: Optional[torch.Tensor]
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
    score: Optional[Callable[[float, torch.Tensor], tuple]] = None
    #: unlabelled target inputs the score looks at (never their labels)
    target_val: Optional[Stream] = None
    #: labelled target data, evaluated after training for the record, never for selection
    target_eval: Optional[Stream] = None
    #: called after each epoch with (epoch, validation metric, extra metrics); may raise TrialPruned
    report: Optional[Callable[[int, float, dict], None]] = None
    history: list = field(default_factory=list)

    def __post_init__(self) -> None:
        backbone = self.model.backbone
        self.n_groups = len(backbone.layer_groups)
        k = self.plan.frozen_prefix
        fully_frozen = k >= self.n_groups
        can_split = fully_frozen or (k > 0 and backbone.supports_prefix)
        self.cached_depth = k if (self.config.use_cache and self.config.augment == "off" and can_split) else 0
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.config.device.type == "cuda"
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
                    x = self.config.prepare(take(stream.inputs, index), self.config.preprocessing, train=False)
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
            lr=cfg.lr, weight_decay=cfg.weight_decay,
        )
        steps_per_epoch = max(1, math.ceil(count(train_x) / cfg.batch_size))
        self.total_steps = steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
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
            index = order[start:start + bs]
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
            raise TrialFailed(f"training loss became {mean_loss} in epoch {epoch + 1}; the learning rate is likely too high")
        return mean_loss

    def train_step(self, batch: Any, labels: torch.Tensor, extra_batches: Optional[dict] = None) -> torch.Tensor:
        with self.autocast:
            loss = self.compute_loss(batch, labels, extra_batches or {})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.detach().float()

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
                outputs.append(self.model.classify_features(self.features(take(inputs, index), train=False)).float())
        return torch.cat(outputs) if outputs else torch.zeros(0)

    def evaluate(self, inputs: Any, labels: torch.Tensor) -> float:
        logits = self.predict_logits(inputs)
        return (logits.argmax(1) == labels).float().mean().item()
