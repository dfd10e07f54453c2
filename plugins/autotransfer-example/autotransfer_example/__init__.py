"""An example autotransfer plugin: one backbone, one strategy, one task.

Found through the ``autotransfer`` entry-point group (see pyproject.toml). Like every plugin it
imports no torch at module level: listing plugins stays fast, and torch loads when a trial runs.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.errors import UserError
from autotransfer.specs import IMAGE, BackboneSpec, StrategySpec, TaskSpec

__version__ = "0.1.0"


# a backbone: EfficientNet-Lite0 with generalised-mean pooling ---------------------------------
def _lite0():
    from autotransfer.plugins import default_host

    return default_host().backbone("tf_efficientnet_lite0")


def build_lite0_gem(pretrained: bool = True):
    """The registered Lite0 (its weights, layer groups and stages), with GeM pooling on top."""
    from .gem import GeM

    backbone = _lite0().build(pretrained=pretrained)
    backbone.body.global_pool = GeM(p=3.0)  # body: the timm model the Backbone wraps
    return backbone


@hookimpl
def register_backbones(register):
    register(
        BackboneSpec(
            name="lite0-gem",
            modality=IMAGE,
            build=build_lite0_gem,
            feature_dim=1280,
            description="EfficientNet-Lite0 (ImageNet weights) with generalised-mean pooling, p=3",
            available=lambda: _lite0().available(),
            preprocessing={
                "image_size": 224,
                "mean": (0.5, 0.5, 0.5),
                "std": (0.5, 0.5, 0.5),
                "interpolation": "bicubic",
            },
        )
    )


# a strategy: L2-SP -----------------------------------------------------------------------------
def suggest_l2_sp(trial, context):
    return {"alpha": trial.suggest_float("l2-sp.alpha", 1e-4, 1e-1, log=True)}


def prepare_l2_sp(model, params, context):
    """Fine-tune every layer; the extra loss is alpha/2 * ||w - w_pretrained||^2 over the backbone."""
    from autotransfer.strategy import fine_tune_plan

    plan = fine_tune_plan(model, 0, {})  # freeze nothing: every layer group and the head train
    anchors = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    alpha = params["alpha"]

    def extra_loss(model, source_features, extras, progress):
        total = 0.0
        for name, p in model.backbone.named_parameters():
            if anchors[name].device != p.device:  # prepare runs before the model moves to the GPU
                anchors[name] = anchors[name].to(p.device)
            total = total + (p - anchors[name]).pow(2).sum()
        return alpha / 2 * total

    plan.extra_loss = extra_loss
    # the pull is towards the pretrained weights: no weight decay towards zero on top of it
    plan.training = replace(plan.training, weight_decay=0.0)
    return plan


@hookimpl
def register_strategies(register):
    register(
        StrategySpec(
            name="l2-sp",
            description="fine-tune everything, pulled towards the pretrained weights (L2-SP, Li et al. 2018)",
            prepare=prepare_l2_sp,
            suggest=suggest_l2_sp,
            lr_range=(1e-5, 1e-2),
            modalities=frozenset({IMAGE}),
            default=False,  # searched when named: --strategies l2-sp
        )
    )


# a task: a CSV that lists image files and their labels ------------------------------------------
def _header(path: Path) -> list[str]:
    """The CSV's column names, lower-cased; none when the file is not UTF-8 text."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [name.strip().lower() for name in next(csv.reader(handle), [])]
    except UnicodeDecodeError:
        return []


def detect(path: str) -> bool:
    p = Path(path)
    return p.suffix.lower() == ".csv" and p.is_file() and {"image", "label"} <= set(_header(p))


def load(path: str, options=None):
    """The labelled images the CSV lists; ``options`` (a TaskOptions) has nothing this task needs."""
    from autotransfer.data import Dataset, check_labels
    from autotransfer_image import encode_files, prepare

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such CSV file; give a CSV with image and label columns")
    missing = {"image", "label"} - set(_header(p))
    if missing:
        raise UserError(f"{path}: no {' or '.join(sorted(missing))} column; the header needs image,label")
    with p.open(newline="", encoding="utf-8") as handle:
        rows = [{k.strip().lower(): v.strip() for k, v in row.items()} for row in csv.DictReader(handle)]
    items = [row["image"] for row in rows]
    files = [p.parent / item for item in items]
    for line, file in enumerate(files, start=2):
        if not file.is_file():
            raise UserError(
                f"{path}, line {line}: image {file} does not exist; fix the path (relative to the CSV)"
            )
    if len(set(items)) < len(items):
        raise UserError(f"{path}: an image is listed twice; list each image once")
    classes = sorted({row["label"] for row in rows})
    dataset = Dataset(
        root=str(p.resolve()),
        task="image-csv",
        modality=IMAGE,
        items=items,
        labels=[classes.index(row["label"]) for row in rows],
        classes=classes,
        encode=lambda indices, preprocessing: encode_files([files[i] for i in indices], preprocessing),
        prepare=prepare,
    )
    check_labels(dataset, path)
    return dataset


def load_unlabeled(paths, options=None):
    from autotransfer_image import load_unlabeled

    return load_unlabeled(paths, options)  # predicting reads image files, as the image task does


@hookimpl
def register_tasks(register):
    from autotransfer_image import input_sizes

    register(
        TaskSpec(
            name="image-csv",
            modality=IMAGE,
            description="a CSV with image (a path relative to the CSV) and label columns",
            detect=detect,
            load=load,
            load_unlabeled=load_unlabeled,
            layouts=("DATA.csv with columns image,label",),
            augmentations=("off", "light", "strong"),  # what the image plugin's prepare() applies
            size_key="image_size",  # the resolution is searched...
            input_sizes=input_sizes,  # ...over the sizes the image plugin picks
        )
    )
