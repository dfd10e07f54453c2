"""In-process caches: decoded inputs and frozen-prefix activations, under a byte cap.

A key names everything the value depends on (dataset fingerprint, split, backbone and its weights,
preprocessing, depth), so any change misses. Least recently used entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable


def nbytes(value: Any) -> int:
    if hasattr(value, "element_size"):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class Cache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def used_bytes(self) -> int:
        return sum(nbytes(v) for v in self.entries.values())

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        value = compute()
        size = nbytes(value)
        if size <= self.max_bytes:
            while self.entries and self.used_bytes + size > self.max_bytes:
                self.entries.popitem(last=False)
            self.entries[key] = value
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


#: decoded inputs, per dataset and preprocessing
inputs = Cache(max_bytes=8 << 30)
#: activations at a frozen boundary, per backbone, depth, split and preprocessing
activations = Cache(max_bytes=4 << 30)
