"""What a trial costs, predicted before it trains.

A trial's seconds are the sum of parts the search can measure once and reuse:

- building the model and loading its weights (per backbone);
- decoding the inputs at a resolution, once per process (per example);
- computing frozen activations at the cached depth, once per process (per example, the forward
  time of the frozen layer groups);
- each epoch: the forward and backward time of the groups that train (the frozen ones too when
  nothing is cached), the optimiser's step over the trained parameters, and validation.

Forward time per layer group and the backward/forward ratio come from a few timed batches the
first time a backbone runs at a resolution (``measure_rates``); they are remembered in the study
(user attributes ``cost|DEVICE|...``), so resumed runs and other workers on the same device share them.
What the parts miss (threads, batch-size effects, Python overhead) is corrected by the median ratio
of actual to predicted seconds over the study's recent trials of the same strategy and kind, else of
the same kind. Three kinds err differently: trials that train only a head on frozen features (a
probe's seconds are mostly overhead), trials that train the top of a backbone over cached frozen
activations, and trials that run every layer each epoch (a full fine-tune, LoRA, BitFit, a partial
fine-tune with augmentation, which cannot cache): on MNIST-5k a cached partial fine-tune took 0.4x
its parts, the same strategy augmented 0.8x and BitFit 1.1x, and one ratio for the strategy priced
an augmented epoch at half what it took. One kind's ratio never prices another below the parts, nor
far above them (see ``CostModel.correction_for``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: examples per timed batch at most: a CPU times the pass size training uses (see
#: ``cpu_pass_size``), a GPU a batch big enough to fill it
PROBE_EXAMPLES = 64
GPU_PROBE_EXAMPLES = 64
#: when nothing is known yet: seconds per example per group, seconds to build, seconds to decode an example
UNKNOWN_FORWARD = 2e-3
UNKNOWN_BUILD = 1.0
UNKNOWN_DECODE = 1e-3
#: per optimiser step, beyond the parameters' update: Python, the scheduler, zeroing gradients
STEP_OVERHEAD = 1.5e-3
#: the correction looks at this many recent trials of a kind
HISTORY = 8
#: the kinds of trial the correction is learned for apart: nothing of the backbone trains; its top
#: trains over cached frozen activations; it trains running every layer each epoch
FROZEN, CACHED, TRAINS = "frozen", "cached", "trains"
#: where a kind with no trials of its own borrows from, in order
BORROW = {FROZEN: (TRAINS, CACHED), CACHED: (TRAINS, FROZEN), TRAINS: (CACHED, FROZEN)}
#: a kind with no trials of its own yet borrows another kind's correction up to this: a probe's
#: seconds are mostly per-trial and per-epoch overhead (on digits at 32 px its actual time was 2.8-3.1x
#: its parts), while a fine-tune's measured parts were within 2-9% of what its first trial took; and a
#: trial skipped on an inflated price never runs to teach its kind's own correction
CROSS_KIND_MOST = 1.5
#: the overhead every trial pays is this quantile of the short trials' residuals (their floor, see
#: ``CostModel.overhead``)
OVERHEAD_QUANTILE = 0.25


def kind_of(forward: list[float], frozen_prefix: int, cached: bool) -> str:
    """The kind of a trial that trains backbone weights: CACHED when it trains the top of the backbone
    over cached activations that are most of a forward pass (a partial fine-tune of the top groups);
    TRAINS when it runs most of the network each epoch (nothing cached, or only a stem: LoRA leaves
    the first group frozen and cached, and errs as a full fine-tune does, not as a partial one)."""
    k = min(len(forward), frozen_prefix)
    return CACHED if cached and k > 0 and sum(forward[:k]) >= sum(forward[k:]) else TRAINS


@dataclass
class Rates:
    """One backbone at one resolution on one device: seconds per example of each layer group's
    forward pass, the backward/forward time ratio, and each group's parameter count."""

    forward: list[float]
    backward: float
    params: list[int]
    head_params: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Rates:
        return cls(**json.loads(text))


@dataclass
class Query:
    """A trial as the cost model sees it."""

    backbone: str
    size: Any
    epochs: int
    #: leading layer groups that stay frozen (None: as is typical for the strategy)
    frozen_prefix: int | None
    #: whether activations at the frozen prefix are cached (computed once, not every batch)
    cached: bool
    n_train: int
    #: examples evaluated every epoch (validation, and target inputs for label-free selection)
    n_eval: int
    batch_size: int
    #: extra streams trained beside the source (target domain, related tasks)
    extra_streams: int = 0
    #: backbone parameters the trial trains (None: every one past the frozen prefix)
    trainable_params: int | None = None
    #: the strategy's name: its own trials correct its price before its kind's do
    strategy: str = ""

    #: examples whose frozen activations are computed once (train, validation, extra streams)
    n_cached_inputs: int = 0
    n_decoded_inputs: int = 0
    inputs_ready: bool = False
    boundary_ready: bool = False
    built: bool = False


@dataclass
class Prediction:
    fixed: float
    per_epoch: float
    correction: float = 1.0
    #: seconds every trial costs beyond its parts (the study's bookkeeping, checkpoints)
    overhead: float = 0.0
    parts: dict = field(default_factory=dict)
    #: FROZEN (no backbone weight trains), CACHED or TRAINS: whose history corrects it
    kind: str = TRAINS

    @property
    def fixed_scale(self) -> float:
        """The correction as applied to the one-off part (building, decoding, caching frozen
        activations): measured directly, it is never predicted cheaper than measured, only dearer. A
        correction learned from short trials must not price a slow first cache at a fifth of it."""
        return max(1.0, self.correction)

    def total(self, epochs: int) -> float:
        return self.overhead + self.fixed * self.fixed_scale + self.per_epoch * epochs * self.correction

    def epochs_within(self, seconds: float, most: int) -> int:
        """The most epochs (up to ``most``) predicted to finish within ``seconds``."""
        if seconds == float("inf"):
            return most
        seconds -= self.overhead + self.fixed * self.fixed_scale
        if self.per_epoch <= 0:
            return most if seconds >= 0 else 0
        fit = int(seconds // (self.per_epoch * self.correction))
        return max(0, min(most, fit))


class CostModel:
    """Measured rates plus the study's own history; ``save(key, value)`` remembers a measurement
    in the study, ``saved`` holds those already there."""

    def __init__(
        self, device_kind: str, saved: dict, save: Callable[[str, Any], None], size_power=2.0
    ) -> None:
        self.device = device_kind
        self.size_power = size_power  # how a pass's time grows with the size (the task's size_power)
        self._save = save
        self.rates: dict[tuple[str, str], Rates] = {}
        self.build: dict[str, float] = {}
        self.decode: dict[str, float] = {}
        self.step_per_param = 2e-9
        self.pairs: dict[str, list[tuple[float, float]]] = {FROZEN: [], CACHED: [], TRAINS: []}
        #: (strategy, kind): a strategy's trials of one kind
        self.by_strategy: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.frozen_by_strategy: dict[str, list[int]] = {}
        #: what was measured on this device ("optimizer"), so it is measured once
        self.measured: set[str] = set()
        for key, value in saved.items():
            self._load(key, value)

    # what is known ---------------------------------------------------------------------------------
    def _key(self, kind: str, *parts) -> str:
        # "|" separates: backbone names hold ":" and "/" (``org/model:cls``)
        return "|".join(["cost", self.device, kind, *map(str, parts)])

    def _load(self, key: str, value: Any) -> None:
        prefix = f"cost|{self.device}|"
        if not key.startswith(prefix):
            return  # another device's measurements
        kind, _, rest = key[len(prefix) :].partition("|")
        if kind == "rates":
            backbone, _, size = rest.rpartition("|")
            self.rates[(backbone, size)] = Rates.from_json(value)
        elif kind == "build":
            self.build[rest] = float(value)
        elif kind == "decode":
            self.decode[rest] = float(value)
        elif kind == "optimizer":
            self.step_per_param = float(value)
            self.measured.add("optimizer")

    def knows(self, backbone: str, size: Any) -> bool:
        return (backbone, str(size)) in self.rates

    def remember_rates(self, backbone: str, size: Any, rates: Rates) -> None:
        self.rates[(backbone, str(size))] = rates
        self._save(self._key("rates", backbone, size), rates.to_json())

    def remember_build(self, backbone: str, seconds: float) -> None:
        self.build[backbone] = seconds
        self._save(self._key("build", backbone), round(seconds, 4))

    def remember_decode(self, size: Any, seconds_per_example: float) -> None:
        self.decode[str(size)] = seconds_per_example
        self._save(self._key("decode", size), seconds_per_example)

    def remember_optimizer(self, seconds_per_param: float) -> None:
        self.step_per_param = seconds_per_param
        self.measured.add("optimizer")
        self._save(self._key("optimizer"), seconds_per_param)

    def absorb(self, timings: dict) -> None:
        """Timings a search took as it went: ("build", backbone) -> seconds, ("decode", size) ->
        seconds per example."""
        for (kind, what), seconds in list(timings.items()):
            if kind == "build":
                self.remember_build(what, seconds)
            elif kind == "decode":
                self.remember_decode(what, seconds)
        timings.clear()

    def observe(
        self, predicted: float, actual: float, frozen=None, kind: str = TRAINS, strategy: str = ""
    ) -> None:
        """A finished trial: its predicted and actual seconds (for the same epochs), its kind, its
        strategy and the frozen prefix that strategy chose."""
        if predicted > 0 and actual > 0:
            self.pairs[kind] = (self.pairs.get(kind, []) + [(predicted, actual)])[-HISTORY:]
            if strategy:
                kept = self.by_strategy.get((strategy, kind), [])
                self.by_strategy[strategy, kind] = (kept + [(predicted, actual)])[-HISTORY:]
        if frozen is not None:
            self.frozen_by_strategy.setdefault(frozen[0], []).append(frozen[1])

    def correction_for(self, kind: str, borrow_most: float = CROSS_KIND_MOST, strategy: str = "") -> float:
        """Actual over predicted seconds for trials of ``strategy`` of this ``kind``, else of the kind
        (a LoRA epoch took 1.3-1.7x its parts, a cached partial fine-tune's 0.4x): the median ratio of
        their recent trials long enough (a predicted second or more) for overhead not to dominate, else
        of all. With none of its kind yet, another kind's (``BORROW``), but never below one (probes do
        not teach that a fine-tune is cheaper than its parts) nor above CROSS_KIND_MOST."""
        own = self.by_strategy.get((strategy, kind)) or self.pairs.get(kind) or []
        if own:
            long = [(p, a) for p, a in own if p >= 1.0] or own
            return min(5.0, max(0.2, statistics.median(a / p for p, a in long)))
        others = [k for k in BORROW.get(kind, ()) if self.pairs.get(k)]
        return min(borrow_most, max(1.0, self.correction_for(others[0]))) if others else 1.0

    @property
    def correction(self) -> float:
        """The correction for inference-like work (exporting, caching): the frozen kind's, at least one;
        with no probe yet, the training kind's, whole (how slow this machine runs passes right now)."""
        return max(1.0, self.correction_for(FROZEN, borrow_most=float("inf")))

    @property
    def overhead(self) -> float:
        """Seconds every trial costs beyond its corrected parts: the lower quartile of the residuals over
        the shorter half of recent trials (never below zero). A residual is that plus what only some
        trials pay (building a backbone, filling caches), so their floor is what every trial pays: their
        median charged the first probes' one-off work to every later probe (0.4 s ones on MNIST-5k at
        2 s; ``benchmarks/results/cost-overhead-cpu.md``, ``anytime-cpu-5m-q25``)."""
        pairs = [(p, a, kind) for kind, kept in self.pairs.items() for p, a in kept]
        if len(pairs) < 2:
            return 0.0
        short = sorted(pairs)[: max(1, len(pairs) // 2)]
        residuals = sorted(a - self.correction_for(kind) * p for p, a, kind in short)
        return max(0.0, residuals[int(OVERHEAD_QUANTILE * (len(residuals) - 1))])

    # predicting -----------------------------------------------------------------------------------
    def rates_for(self, backbone: str, size: Any) -> Rates | None:
        """Measured rates, else interpolated from this backbone at other sizes (forward time grows
        as a + b * side², fitted per layer group through the two nearest sizes measured), else those
        of the median other backbone at this size."""
        if (backbone, str(size)) in self.rates:
            return self.rates[(backbone, str(size))]
        same = [(float(s), r) for (b, s), r in self.rates.items() if b == backbone and _number(s)]
        if same and _number(size):
            side = float(size)
            nearest = sorted(same, key=lambda item: abs(item[0] - side))[:2]
            if len(nearest) == 1:  # one size measured: grow as another backbone measured at two does
                nearest = nearest + self._growth_reference(backbone)
            return _scaled(nearest, side, self.size_power)
        others = [r for (b, s), r in self.rates.items() if str(s) == str(size)]
        if others:
            return sorted(others, key=lambda r: sum(r.forward))[len(others) // 2]
        return None

    def _growth_reference(self, backbone: str) -> list[tuple[float, Rates]]:
        """How forward time grows with the side, for a backbone measured at one size: the two smallest
        sizes of another backbone measured at two (none when no backbone is)."""
        by_backbone: dict[str, list[tuple[float, Rates]]] = {}
        for (b, s), r in self.rates.items():
            if b != backbone and _number(s):
                by_backbone.setdefault(b, []).append((float(s), r))
        first = lambda item: item[0]  # noqa: E731
        twice = [
            sorted(m, key=first)[:2] for _, m in sorted(by_backbone.items()) if len(set(map(first, m))) > 1
        ]
        return [("growth", twice[0])] if twice else []

    def decode_seconds(self, size: Any) -> float:
        """Seconds to decode one example at ``size``, as measured (a guess until then)."""
        return self.decode.get(str(size), UNKNOWN_DECODE)

    def knows_backbone(self, backbone: str) -> bool:
        """Measured at some size: predictions for it are grounded, not guesses."""
        return any(b == backbone for b, _ in self.rates)

    def typical_frozen(self, strategy: str, n_groups: int, probe: bool) -> int:
        if probe:
            return n_groups
        seen = self.frozen_by_strategy.get(strategy)
        return int(statistics.median(seen)) if seen else 0

    def predict(self, query: Query) -> Prediction:
        rates = self.rates_for(query.backbone, query.size)
        if rates is None:
            forward, backward, params, head = [UNKNOWN_FORWARD] * 8, 2.0, [500_000] * 8, 10_000
        else:
            forward, backward, params, head = rates.forward, rates.backward, rates.params, rates.head_params
        n = len(forward)
        k = min(n, query.frozen_prefix if query.frozen_prefix is not None else 0)
        prefix, suffix = sum(forward[:k]), sum(forward[k:])
        uncached = 0.0 if query.cached else prefix
        # a backward pass is about half gradients for the activations, half for the weights; a
        # strategy that trains few of the weights (BitFit, LoRA) pays little of the second half
        body = sum(params[k:])
        trainable = body if query.trainable_params is None else min(body, query.trainable_params)
        share = trainable / body if body else 1.0
        train_example = (suffix * (1 + backward * (0.5 + 0.5 * share)) + uncached) * (1 + query.extra_streams)
        eval_example = suffix + uncached
        steps = max(1, -(-query.n_train // max(1, query.batch_size)))
        step = STEP_OVERHEAD + self.step_per_param * (trainable + head)
        train = query.n_train * train_example + steps * step
        per_epoch = train + query.n_eval * eval_example
        build = 0.0 if query.built else self.build.get(query.backbone, UNKNOWN_BUILD)
        decode = 0.0 if query.inputs_ready else self.decode_seconds(query.size) * query.n_decoded_inputs
        cache = prefix * query.n_cached_inputs if query.cached and not query.boundary_ready else 0.0
        parts = {"build": build, "decode": decode, "cache": cache, "epoch": per_epoch, "train": train}
        kind = FROZEN if trainable <= 0 else kind_of(forward, k, query.cached)
        return Prediction(
            fixed=build + decode + cache,
            per_epoch=per_epoch,
            correction=self.correction_for(kind, strategy=query.strategy),
            overhead=self.overhead,
            parts=parts,
            kind=kind,
        )


def _scaled(measured: list, side: float, power: float = 2.0) -> Rates:
    """Rates at ``side`` from the nearest measured size, each layer group scaled as the whole
    backbone's forward time grows: ``a + b * side**power`` through two measured sizes (the total, less
    noisy than each group's), through another backbone's two sizes (a ``("growth", [...])`` item), or
    proportional to ``side**power`` without either (``power``: 2 for an image's side, its pixels).
    Never more than proportional to ``side**power``, never less than to the side."""
    (s1, r1) = measured[0]
    scale = (side / s1) ** power if s1 > 0 else 1.0
    if len(measured) > 1:
        first, second = measured[1][1] if measured[1][0] == "growth" else [measured[0], measured[1]]
        (a1, ra), (a2, rb) = first, second
        t1, t2 = sum(ra.forward), sum(rb.forward)
        if a1 != a2 and t1 > 0:
            b = max(0.0, (t2 - t1) / (a2**power - a1**power))
            a = t1 - b * a1**power
            at = lambda x: a + b * x**power  # noqa: E731
            grown = at(side) / at(s1) if at(s1) > 0 else scale
            # between growing with the side (work per pixel hidden by overhead at both sizes measured,
            # or noise) and growing with the pixels
            low, high = sorted((side / s1, scale)) if s1 > 0 else (1.0, scale)
            scale = min(high, max(low, grown))
    return Rates([f * scale for f in r1.forward], r1.backward, r1.params, r1.head_params)


def _number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


#: timed passes per measurement (the least counts), while a pass takes at most REPEAT_WITHIN_S
REPEATS = 3
REPEAT_WITHIN_S = 0.3


def measure_rates(model, inputs, prepare, preprocessing, device) -> Rates:
    """Time each layer group's forward pass, and one forward and backward of the whole backbone, on
    a few real examples. Weights, running statistics and ``requires_grad`` are left as they were."""
    import torch

    from ..training.batches import count, take
    from ..training.memory import cpu_pass_size, elements_per_example

    backbone = model.backbone
    if getattr(device, "type", "cpu") == "cuda":
        n = min(GPU_PROBE_EXAMPLES, count(inputs))
    else:
        n = min(cpu_pass_size(elements_per_example(inputs), PROBE_EXAMPLES), count(inputs))
    x = prepare(take(inputs, torch.arange(n, device=device)), preprocessing, train=False)
    groups = backbone.group_parameters()
    was_training = backbone.training
    backbone.eval()
    # each timing is the least of a few passes while they are cheap (one pass is easily 3x off on a
    # busy CPU: a warm-up, another process), one pass where a pass alone takes longer
    with torch.no_grad():
        backbone.forward_features(x)  # the first call at a shape pays one-off costs
        forward = None
        for _ in range(REPEATS):
            spent = _now(device)
            if backbone.supports_prefix:
                times, h = [], x
                for g in range(len(groups)):
                    started = _now(device)
                    h = backbone.forward_range(h, g, g + 1)
                    times.append(_now(device) - started)
            else:
                started = _now(device)
                backbone.forward_features(x)
                times = [(_now(device) - started) / len(groups)] * len(groups)
            forward = times if forward is None else [min(a, b) for a, b in zip(forward, times)]
            if _now(device) - spent > REPEAT_WITHIN_S:
                break
    params = list(backbone.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    both = float("inf")
    for _ in range(REPEATS):
        started = _now(device)
        backbone.forward_features(x).float().sum().backward()
        both = min(both, _now(device) - started)
        if both > REPEAT_WITHIN_S:
            break
    for p, flag in zip(params, flags):
        p.requires_grad_(flag)
        p.grad = None
    backbone.train(was_training)
    total = max(1e-9, sum(forward))
    return Rates(
        forward=[f / n for f in forward],
        backward=max(0.5, both / total - 1),
        params=[sum(p.numel() for p in group) for group in groups],
        head_params=sum(p.numel() for p in model.head.parameters()),
    )


def measure_optimizer(device) -> float:
    """Seconds per parameter of one AdamW step on this device."""
    import torch

    weights = torch.zeros(1_000_000, device=device, requires_grad=True)
    weights.grad = torch.ones_like(weights)
    optimizer = torch.optim.AdamW([weights], lr=1e-3)
    optimizer.step()
    started = _now(device)
    for _ in range(3):
        optimizer.step()
    return (_now(device) - started) / 3 / weights.numel()


def _now(device) -> float:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()


def device_kind(device) -> str:
    """Measurements hold for one kind of device: a GPU model, or a CPU at a thread count."""
    import torch

    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).replace(":", " ")
    return f"cpu-{torch.get_num_threads()}threads"
