"""One trial's training loop, as a ladder of small steps: fit -> run_epoch -> train_step -> loss.

Inputs arrive decoded once and live on the training device. When the first k layer groups are
frozen and nothing augments the inputs, activations at that boundary are computed once and reused
across epochs (and, through the search's activation cache, across trials). A trial is scored by its
best epoch, whose weights it keeps; a ``Monitor`` watches every batch and may stop the trial when
time runs out, keeping what it reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import OutOfTime, TrialFailed
from ..strategy import Plan, freeze_norm_statistics
from .batches import count, part, take
from .cache import Cache
from .inference import autocast_for, infer
from .memory import (
    MemoryModel,
    available_bytes,
    cpu_pass_size,
    elements_per_example,
    inference_batch,
    measure_step,
)


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
    #: over micro-batches (the same update, less memory; batch norm's statistics are the micro-batch's).
    #: None: measured on CUDA before training, sized to the caches on a CPU
    micro_batch: int | None = None
    #: "auto" (bf16 autocast on CUDA), "bf16" (on any device) or "fp32"
    precision: str = "auto"

    @property
    def pass_size(self) -> int:
        """Examples in one forward/backward pass: the micro-batch when one is set, else the batch."""
        return min(self.micro_batch or self.batch_size, self.batch_size)

    def eval_batch(self, inputs: Any) -> int:
        """Examples per inference pass: on CUDA the micro-batch or at least 256; on a CPU sized to
        its caches (see ``cpu_pass_size``)."""
        if self.device.type == "cuda":
            return self.micro_batch or max(self.batch_size, 256)
        return inference_batch(inputs, self.device)


class Monitor:
    """Watches a trial train. The search's monitor draws progress, raises ``OutOfTime`` when the
    budget is spent and, from the first batches' pace, may ask for fewer epochs; this one watches
    nothing."""

    #: the epoch the trial should now end after (None: as planned); in its first epoch the trainer
    #: shortens to it
    last_epoch: int | None = None

    def phase(self, name: str, epoch: int, epochs: int, batches: int) -> None:
        """A phase starts: "cache" (computing frozen activations), "train" or "validate"."""

    def batch_end(self, examples: int) -> None:
        """After every batch (training) or slice (inference); may raise ``OutOfTime``."""

    def epoch_end(self, epoch: int, metric: float) -> None:
        """After an epoch's validation."""


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
    monitor: Monitor = field(default_factory=Monitor)
    #: frozen-prefix activations shared across trials (None: computed for this trial only)
    activations: Cache | None = None
    #: GPU memory per train-step shape, shared across trials
    memory: MemoryModel = field(default_factory=MemoryModel)
    history: list = field(default_factory=list)
    #: the best epoch so far, its metric (the trial's score) and its weights
    kept: BestEpoch = field(default_factory=lambda: BestEpoch())
    #: why training ended before its last epoch: "time" (the monitor's OutOfTime), or None
    stopped: str | None = None
    #: the last validation's logits
    val_logits: torch.Tensor | None = None
    #: what ``fit`` trains and validates on: (train, val, extras, target val) at the cached depth
    inputs: tuple | None = None

    def __post_init__(self) -> None:
        backbone = self.model.backbone
        self.n_groups = len(backbone.layer_groups)
        k = self.plan.frozen_prefix
        can_split = k >= self.n_groups or (k > 0 and backbone.supports_prefix)
        self.cached_depth = k if (self.config.use_cache and self.config.augment == "off" and can_split) else 0

    # inputs --------------------------------------------------------------------------------
    def boundary_key(self, stream: Stream) -> tuple:
        return (*self.config.cache_key, stream.key, self.cached_depth)

    def boundary(self, stream: Stream) -> Any:
        """The stream's activations at the cached depth, computed once (the inputs when nothing is
        cached)."""
        depth = self.cached_depth
        if depth == 0:
            return stream.inputs

        def compute():
            backbone = self.model.backbone
            was_training = backbone.training
            backbone.eval()

            def forward(x):
                x = self.config.prepare(x, self.config.preprocessing, train=False)
                return (
                    backbone.forward_features(x)
                    if depth >= self.n_groups
                    else backbone.forward_range(x, 0, depth)
                )

            n = count(stream.inputs)
            self.monitor.phase(
                "cache", 0, self.config.epochs, math.ceil(n / self.config.eval_batch(stream.inputs))
            )
            out = self._infer(forward, stream.inputs)
            backbone.train(was_training)
            return out

        if self.activations is None:
            return compute()
        return self.activations.get(self.boundary_key(stream), compute)

    def pooled_features(self, stream: Stream) -> torch.Tensor:
        """The stream's pooled backbone features (what a linear head reads), whatever is cached."""
        inputs = self.boundary(stream)
        if self.cached_depth >= self.n_groups:
            return inputs
        self.model.eval()
        return self._infer(lambda x: self.features(x, train=False), inputs)

    def _infer(self, fn: Callable[[Any], torch.Tensor], inputs: Any) -> torch.Tensor:
        cfg = self.config
        return infer(
            fn,
            inputs,
            batch_size=cfg.eval_batch(inputs),
            device=cfg.device,
            precision=cfg.precision,
            on_batch=self.monitor.batch_end,
        )

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
        """Train; returns the best epoch's metric and leaves that epoch's weights in the model.
        Out of time after an epoch, training stops there (``stopped == "time"``); before the first
        epoch ends, ``OutOfTime`` propagates."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        train_x = self.boundary(self.train)
        extras_x = {name: (self.boundary(stream), stream.labels) for name, stream in self.extras.items()}
        target_val_x = self.boundary(self.target_val) if self.target_val is not None else None
        self.inputs = (train_x, self.boundary(self.val), extras_x, target_val_x)
        self._make_optimizer(count(train_x))
        if cfg.micro_batch is None:
            cfg.micro_batch = pass_size(self, train_x, extras_x)
        return self._epochs(0)

    def shorten(self, epochs: int) -> None:
        """End after ``epochs`` (at least the one running) instead of the epochs planned; the learning
        rate's schedule ends there too."""
        cut = self.config.epochs - max(epochs, len(self.history) + 1)
        if cut <= 0:
            return
        steps = cut * max(1, math.ceil(count(self.inputs[0]) / self.config.batch_size))
        self.scheduler.lr_lambdas[0].total -= steps  # one schedule serves every parameter group
        self.total_steps -= steps
        self.config.epochs -= cut

    def extend(self, epochs: int, lr_scale: float) -> float:
        """After ``fit``, ``epochs`` more from the weights it ended with: a warm restart (the schedule
        again from ``lr_scale`` of the peak learning rate, cosine to zero, no warm-up; fresh optimiser
        moments). The best epoch over all counts; when no new one beats it, its weights come back."""
        cfg = self.config
        start = len(self.history)
        self.kept.keep(self.model)
        restart = replace(cfg, lr=cfg.lr * lr_scale, epochs=epochs, warmup_fraction=0.0, schedule="cosine")
        step = self.step
        self.optimizer, self.scheduler, steps = make_optimizer(self.plan, restart, count(self.inputs[0]))
        self.step, self.total_steps = step, step + steps
        cfg.epochs = start + epochs
        return self._epochs(start)

    def _epochs(self, start: int) -> float:
        """Epochs from ``start`` (0-based) to ``config.epochs`` (which ``shorten`` may lower meanwhile),
        each validated and offered as the best."""
        train_x, val_x, extras_x, target_val_x = self.inputs
        try:
            epoch = start
            while epoch < self.config.epochs:
                if self.plan.on_epoch_start is not None:
                    self.plan.on_epoch_start(self.model, epoch)
                loss = self.run_epoch(train_x, extras_x, epoch)
                metric, details = self.validate(val_x, target_val_x, epoch)
                self.history.append({"epoch": epoch + 1, "val_metric": metric, "train_loss": loss, **details})
                self.kept.offer(
                    self.model, epoch + 1, metric, epoch + 1 == self.config.epochs, self.val_logits
                )
                self.monitor.epoch_end(epoch + 1, metric)
                if self.report is not None:
                    self.report(epoch + 1, metric, {"train_loss": loss, **details})
                epoch += 1
        except OutOfTime:
            if self.kept.epoch is None:
                raise
            self.stopped = "time"
        self.kept.restore(self.model, len(self.history))
        return self.kept.metric

    def _make_optimizer(self, n_train: int) -> None:
        self.optimizer, self.scheduler, self.total_steps = make_optimizer(self.plan, self.config, n_train)
        self.step = 0

    def validate(self, val_x: Any, target_val_x: Any, epoch: int) -> tuple[float, dict]:
        """The validation metric: accuracy, or with target data the label-free score."""
        self.monitor.phase("validate", epoch + 1, self.config.epochs, 1)
        self.val_logits = self.predict_logits(val_x)
        metric = int((self.val_logits.argmax(1) == self.val.labels).sum()) / max(1, len(self.val.labels))
        if self.score is None:
            return metric, {}
        score, details = self.score(metric, self.predict_logits(target_val_x))
        return score, {"source_val_accuracy": metric, **details}

    def run_epoch(self, train_x: Any, extras_x: dict, epoch: int) -> float:
        self.model.train()
        freeze_norm_statistics(self.model)
        n, device, bs = count(train_x), self.config.device, self.config.batch_size
        order = torch.randperm(n, device=device)
        extra_orders = {name: torch.randperm(count(x), device=device) for name, (x, _) in extras_x.items()}
        total = torch.zeros((), device=device)
        batches = 0
        self.monitor.phase("train", epoch + 1, self.config.epochs, math.ceil(n / bs))
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
            self.monitor.batch_end(len(index))
            # the monitor judges the first epoch's pace (a continuation, later, is priced apart)
            wanted = self.monitor.last_epoch
            if epoch == 0 and wanted is not None and wanted < self.config.epochs:
                self.shorten(wanted)
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
            piece = slice(start, stop)
            pieces = {
                k: (part(x, piece), None if y is None else y[piece]) for k, (x, y) in extra_batches.items()
            }
            with autocast_for(self.config.device, self.config.precision):
                piece_loss = self.compute_loss(part(batch, piece), labels[piece], pieces) * (
                    (stop - start) / n
                )
            piece_loss.backward()
            loss = loss + piece_loss.detach().float()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss

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

    @property
    def best_epoch(self) -> int | None:
        return self.kept.epoch

    def predict_logits(self, inputs: Any) -> torch.Tensor:
        self.model.eval()
        return self._infer(lambda x: self.model.classify_features(self.features(x, train=False)), inputs)

    def evaluate(self, inputs: Any, labels: torch.Tensor) -> float:
        logits = self.predict_logits(inputs)
        return int((logits.argmax(1) == labels).sum()) / max(1, len(labels))


@dataclass
class BestEpoch:
    """The best epoch so far (1-based), its metric, its validation logits (what an ensemble is
    chosen on) and, when a later epoch could replace it, a copy of its weights; ``restore`` puts them
    back in the model once training ends."""

    epoch: int | None = None
    metric: float = float("nan")
    state: dict | None = None
    val_logits: torch.Tensor | None = None

    def offer(
        self,
        model: torch.nn.Module,
        epoch: int,
        metric: float,
        last: bool,
        val_logits: torch.Tensor | None = None,
    ) -> None:
        if self.epoch is not None and not metric > self.metric:
            return
        self.epoch, self.metric, self.val_logits = epoch, metric, val_logits
        self.state = None if last else {k: v.detach().clone() for k, v in model.state_dict().items()}

    def keep(self, model: torch.nn.Module) -> None:
        """A copy of the model's weights as the best epoch's (before training on from them)."""
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module, epochs_run: int) -> None:
        if self.state is not None and self.epoch != epochs_run:
            model.load_state_dict(self.state)
        self.state = None


def make_optimizer(plan: Plan, config: TrainConfig, n_train: int):
    """AdamW over the plan's parameter groups (each at its learning-rate scale) and the schedule:
    linear warm-up, then cosine to zero or constant. Returns (optimizer, scheduler, total steps)."""
    groups = [{"params": g["params"], "lr": config.lr * g.get("lr_scale", 1.0)} for g in plan.param_groups]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    total = max(1, math.ceil(n_train / config.batch_size)) * config.epochs
    schedule = Schedule(total, int(total * config.warmup_fraction), config.schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), total


@dataclass
class Schedule:
    """The learning rate's factor at a step: a linear warm-up, then cosine to zero at ``total`` steps
    or constant. ``total`` may be lowered while training (``Trainer.shorten``)."""

    total: int
    warmup: int
    kind: str = "cosine"

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        return 0.5 * (
            1 + math.cos(math.pi * min(1.0, (step - self.warmup) / max(1, self.total - self.warmup)))
        )


def pass_size(trainer: Trainer, train_x: Any, extras_x: dict) -> int:
    """Examples per forward/backward pass: on CUDA what fits the free memory, on a CPU what fits
    its caches. A batch larger than that accumulates gradients over passes: the same update, except that
    batch norm's statistics are each pass's (ghost batch norm)."""
    if trainer.config.device.type == "cuda":
        return fit_micro_batch(trainer, train_x, extras_x)
    return cpu_pass_size(elements_per_example(train_x), trainer.config.batch_size)


def fit_micro_batch(trainer: Trainer, train_x: Any, extras_x: dict) -> int:
    """CUDA: the largest micro-batch whose train step fits the free GPU memory, from the peak memory
    of two probe forward/backward passes (running statistics restored after)."""
    config, model = trainer.config, trainer.model
    device = config.device
    trainable = [p for g in trainer.plan.param_groups for p in g["params"]]
    key = (
        config.cache_key,
        trainer.cached_depth,
        trainer.plan.frozen_prefix,
        sum(p.numel() for p in trainable),
        tuple(sorted(trainer.extras)),
        config.augment,
    )

    def step(size: int) -> None:
        index = torch.arange(size, device=device)
        extras = {
            k: (take(x, index % count(x)), None if y is None else y[index % count(x)])
            for k, (x, y) in extras_x.items()
        }
        with autocast_for(device, config.precision):
            loss = trainer.compute_loss(take(train_x, index), trainer.train.labels[index], extras)
        loss.backward()
        trainer.optimizer.zero_grad(set_to_none=True)

    def measure():
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        measured = measure_step(
            step, sum(p.numel() * p.element_size() for p in trainable), device, count(train_x)
        )
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        return measured

    return trainer.memory.micro_batch(key, config.batch_size, available_bytes(device), measure)
