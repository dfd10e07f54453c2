"""Datasets as tasks load them, and the one stratified, seeded split a study keeps."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """Items (file paths or row ids), integer labels and class names, plus how to encode them.

    ``encode(indices, preprocessing)`` returns model inputs for those items, decoded once (a uint8
    image tensor, or token ids); ``prepare(batch, preprocessing, train)`` turns a batch of encoded
    inputs into what the backbone takes (normalisation, augmentation).
    """

    root: str
    task: str
    modality: str
    items: list[str]
    labels: list[int] | None
    classes: list[str]
    encode: Callable[[Sequence[int], dict], Any]
    prepare: Callable[..., Any] = lambda batch, preprocessing, train=False, augment="off": batch
    notes: list[str] = field(default_factory=list)
    #: the inputs' typical size (images: the median side in pixels), from which the search picks
    #: the resolutions worth trying; None when the task has no such notion
    input_size: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for item, label in zip(self.items, self.labels or [None] * len(self.items)):
            digest.update(f"{item}\0{label}\n".encode())
        return digest.hexdigest()[:16]


def check_labels(dataset: Dataset, where: str) -> None:
    """Refuse data no classifier can be trained and checked on."""
    if not dataset.items:
        raise UserError(f"{where}: no examples found; add labelled examples")
    if len(dataset.classes) < 2:
        only = dataset.classes[0] if dataset.classes else "none"
        raise UserError(f"{where}: only one class ({only}); a classifier needs at least two classes")
    counts = {c: 0 for c in range(len(dataset.classes))}
    for label in dataset.labels:
        counts[label] += 1
    for index, count in counts.items():
        if count == 0:
            raise UserError(
                f"{where}: class {dataset.classes[index]!r} has no examples; add some or remove it"
            )
        if count == 1:
            raise UserError(
                f"{where}: class {dataset.classes[index]!r} has a single example; "
                "give it at least 2 (one to train on, one to validate)"
            )


def split_indices(
    labels: Sequence[int], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Stratified, seeded train/val/test split.

    Per class: at least one example trains; with 2 examples the other validates (no test one);
    with 3 or more at least one validates and one is held out for test.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rng = random.Random(seed)
    out = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        members = by_class[label][:]
        rng.shuffle(members)
        n = len(members)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 2 else 0
        n_val = min(n_val, n - n_test - 1)
        out["test"] += members[:n_test]
        out["val"] += members[n_test : n_test + n_val]
        out["train"] += members[n_test + n_val :]
    return {name: sorted(indices) for name, indices in out.items()}


def subsample(
    labels: Sequence[int],
    indices: Sequence[int],
    *,
    fraction: float | None = None,
    shots: int | None = None,
    seed: int,
) -> list[int]:
    """A stratified, seeded subset of ``indices`` (the training split) for learning from less data:
    ``fraction`` of each class (at least one example), or ``shots`` examples per class (all of a
    class that has fewer). Smaller subsets are prefixes of larger ones for the same seed, so a curve
    over sizes adds examples instead of drawing new ones; validation and test are not touched."""
    if fraction is None and shots is None:
        return list(indices)
    by_class: dict[int, list[int]] = {}
    for index in indices:
        by_class.setdefault(labels[index], []).append(index)
    rng = random.Random(f"subsample-{seed}")
    kept = []
    for label in sorted(by_class):
        members = sorted(by_class[label])
        rng.shuffle(members)
        n = max(1, round(len(members) * fraction)) if fraction is not None else shots
        kept += members[:n]
    return sorted(kept)


def split_to_items(dataset: Dataset, split: dict[str, list[int]]) -> dict[str, list[str]]:
    return {name: [dataset.items[i] for i in indices] for name, indices in split.items()}


def split_from_items(dataset: Dataset, saved: dict[str, list[str]], where: str) -> dict[str, list[int]]:
    """Map a saved split back to indices; refuse when the data changed under the study."""
    position = {item: i for i, item in enumerate(dataset.items)}
    missing = [item for items in saved.values() for item in items if item not in position]
    if missing:
        raise UserError(
            f"{where}: the study's saved split names {len(missing)} examples no longer in the data "
            f"(first: {missing[0]}); restore them or search into a new --output/--study-name"
        )
    return {name: [position[item] for item in items] for name, items in saved.items()}


def dumps_split(split_items: dict[str, list[str]]) -> str:
    return json.dumps(split_items, ensure_ascii=False)
