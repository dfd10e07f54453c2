"""The encoded streams trials train on: the split's parts and every extra stream (target domain,
related tasks), decoded once per preprocessing and kept on the training device."""

from __future__ import annotations

import time

from ..data import Dataset
from ..training.batches import take, to_device
from ..training.trainer import Stream
from .problem import Problem

#: the label-free validator looks at this many target inputs (a fixed, seeded sample)
TARGET_SAMPLE = 1000


def preprocessing_key(preprocessing: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in preprocessing.items()))


def _encoded_key(problem: Problem, dataset: Dataset, preprocessing: dict) -> tuple:
    return ("inputs", dataset.fingerprint(), preprocessing_key(preprocessing), str(problem.device))


def encoded(problem: Problem, dataset: Dataset, preprocessing: dict):
    """Every example of ``dataset`` decoded once per preprocessing, on the device."""

    def decode():
        started = time.perf_counter()
        value = to_device(dataset.encode(list(range(len(dataset))), preprocessing), problem.device)
        size = preprocessing.get(problem.task.size_key, "native") if problem.task.size_key else "native"
        problem.timings[("decode", str(size))] = (time.perf_counter() - started) / max(1, len(dataset))
        return value

    return problem.caches.inputs.get(_encoded_key(problem, dataset, preprocessing), decode)


def inputs_ready(problem: Problem, preprocessing: dict) -> bool:
    """Whether the labelled data is already decoded for this preprocessing (the cost model asks)."""
    return _encoded_key(problem, problem.dataset, preprocessing) in problem.caches.inputs


def streams(problem: Problem, preprocessing: dict, names=("train", "val")) -> dict[str, Stream]:
    """The main task's splits, plus every extra stream the search has (target, aux tasks)."""
    import torch

    inputs, device = problem.inputs, problem.device
    dataset = inputs.dataset
    everything = encoded(problem, dataset, preprocessing)
    labels = torch.tensor(dataset.labels, device=device)
    fingerprint = dataset.fingerprint()
    out = {}
    for name in names:
        index = torch.tensor(problem.split[name], device=device, dtype=torch.long)
        key = (fingerprint, name, len(index), hash(tuple(problem.split[name])))
        out[name] = Stream(inputs=take(everything, index), labels=labels[index], key=key)
    if inputs.target is not None:
        target = encoded(problem, inputs.target, preprocessing)
        key = ("target", inputs.target.fingerprint())
        out["target"] = Stream(inputs=target, labels=None, key=key)
        generator = torch.Generator().manual_seed(problem.config.seed)
        sample = torch.randperm(len(inputs.target), generator=generator)[:TARGET_SAMPLE].sort().values
        out["target_val"] = Stream(inputs=take(target, sample.to(device)), labels=None, key=(*key, "val"))
    if inputs.target_eval is not None:
        out["target_eval"] = Stream(
            inputs=encoded(problem, inputs.target_eval, preprocessing),
            labels=torch.tensor(inputs.target_eval.labels, device=device),
            key=("target_eval", inputs.target_eval.fingerprint()),
        )
    for i, aux in enumerate(inputs.aux):
        out[f"aux{i}"] = Stream(
            inputs=encoded(problem, aux, preprocessing),
            labels=torch.tensor(aux.labels, device=device),
            key=("aux", aux.fingerprint()),
        )
    return out
