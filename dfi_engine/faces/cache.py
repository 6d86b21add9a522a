"""Cache of mean VGG features of neighbour sets, LRU-bounded by bytes.

A second edit of the same photo (another strength, another mask) selects
the same neighbours, so the expensive part, φ of 2×K neighbour images, is
looked up instead of recomputed. The key names everything the mean depends
on: database (id and size), the exact neighbour set, resolution, network
weights and layers, and any extra transform (e.g. an inpainting mask).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

Features = list[torch.Tensor]


def set_key(db_id: str, db_count: int, indices: Sequence[int], resolution: int, weights_label: str,
            layers: Sequence[str], extra: bytes | str = b"") -> str:
    """Stable key of one neighbour set's mean features."""
    h = hashlib.sha256()
    h.update(f"{db_id}|{db_count}|{resolution}|{weights_label}|{','.join(layers)}|".encode())
    h.update(np.asarray(sorted(int(i) for i in indices), np.int64).tobytes())
    h.update(extra.encode() if isinstance(extra, str) else extra)
    return h.hexdigest()


def nbytes(feats: Features) -> int:
    return sum(t.numel() * t.element_size() for t in feats)


class FeatureCache:
    """Thread-safe LRU of feature lists, evicting least recently used entries beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[str, tuple[Features, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Features | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, feats: Features) -> None:
        size = nbytes(feats)
        with self._lock:
            if key in self._data:
                self.bytes -= self._data.pop(key)[1]
            if size > self.max_bytes:
                return
            self._data[key] = ([f.detach() for f in feats], size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, s) = self._data.popitem(last=False)
                self.bytes -= s

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0
