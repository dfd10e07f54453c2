"""In-process caches: decoded inputs and frozen-prefix activations, under a byte cap.

A key names everything the value depends on (dataset fingerprint, split, backbone and its weights,
preprocessing, depth), so any change misses. Least recently used entries leave memory first; with
a spill folder they go to disk as safetensors (up to a disk cap) and come back on the next hit.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import MemoryModel


def nbytes(value: Any) -> int:
    if hasattr(value, "element_size"):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


class Cache:
    def __init__(self, max_bytes: int, spill_dir: Path | None = None, max_disk_bytes: int = 20 << 30) -> None:
        self.max_bytes = max_bytes
        self.spill_dir = spill_dir
        self.max_disk_bytes = max_disk_bytes
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.spilled: OrderedDict[Hashable, tuple[Path, str, int]] = OrderedDict()
        self.hits = self.misses = self.disk_hits = 0

    @property
    def used_bytes(self) -> int:
        return sum(nbytes(v) for v in self.entries.values())

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries or key in self.spilled

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        if key in self.spilled:
            self.hits += 1
            self.disk_hits += 1
            value = self._load(key)
        else:
            self.misses += 1
            value = compute()
        self._store(key, value)
        return value

    def _store(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        if size > self.max_bytes:
            self._spill(key, value)
            return
        while self.entries and self.used_bytes + size > self.max_bytes:
            old_key, old_value = self.entries.popitem(last=False)
            self._spill(old_key, old_value)
        self.entries[key] = value

    def _spill(self, key: Hashable, value: Any) -> None:
        if self.spill_dir is None or key in self.spilled or not hasattr(value, "element_size"):
            return
        from safetensors.torch import save_file

        size = nbytes(value)
        while self.spilled and sum(s for _, _, s in self.spilled.values()) + size > self.max_disk_bytes:
            _, (path, _, _) = self.spilled.popitem(last=False)
            path.unlink(missing_ok=True)
        if size > self.max_disk_bytes:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / (hashlib.sha1(repr(key).encode()).hexdigest() + ".safetensors")
        save_file({"value": value.detach().contiguous().cpu()}, str(path))
        self.spilled[key] = (path, str(value.device), size)

    def _load(self, key: Hashable) -> Any:
        from safetensors.torch import load_file

        path, device, _ = self.spilled[key]
        return load_file(str(path))["value"].to(device)

    def clear(self) -> None:
        self.entries.clear()
        for path, _, _ in self.spilled.values():
            path.unlink(missing_ok=True)
        self.spilled.clear()
        self.hits = self.misses = self.disk_hits = 0


@dataclass
class Caches:
    """What one search computes once and reuses across its trials, dropped with the search:
    decoded inputs, frozen-prefix activations and the GPU memory model."""

    inputs: Cache
    activations: Cache
    memory: MemoryModel = field(default_factory=MemoryModel)

    @classmethod
    def create(cls, *, activation_bytes: int = 4 << 30, spill_dir: Path | None = None) -> Caches:
        return cls(inputs=Cache(max_bytes=8 << 30), activations=Cache(activation_bytes, spill_dir=spill_dir))

    def clear(self) -> None:
        """Free memory and delete spilled files (valid only inside this process)."""
        self.inputs.clear()
        self.activations.clear()
