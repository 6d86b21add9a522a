"""Cache of mean VGG features of neighbour sets, LRU-bounded by bytes.

A second edit of the same photo (another strength, another mask) selects
the same neighbours, so the expensive part, φ of 2×K neighbour images, is
looked up instead of recomputed. The key names everything the mean depends
on: database (id and size), the exact neighbour set, resolution, network
weights and layers, and any extra transform (e.g. an inpainting mask).

The cache is the daemon's largest keeper of memory between jobs, so it is
bounded by bytes (LRU); ``DFI_FEATURE_CACHE_MB`` overrides the limit a caller
gives (0 keeps nothing), for a machine with less memory to spare.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

Features = list[torch.Tensor]
LIMIT_ENV = "DFI_FEATURE_CACHE_MB"
log = logging.getLogger("dfi.engine")


def limit_bytes(max_bytes: int) -> int:
    """``max_bytes``, or ``DFI_FEATURE_CACHE_MB`` MiB where that is set to a whole number (a bad value is
    logged and ignored: a typo must not stop the daemon)."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return int(max_bytes)
    if raw.isdigit():
        return int(raw) * 2**20
    log.warning("%s=%r is not a whole number of MiB; keeping the limit of %d MiB", LIMIT_ENV, raw, max_bytes >> 20)
    return int(max_bytes)


def set_key(db_id: str, db_count: int, indices: Sequence[int], resolution: int, weights_label: str,
            layers: Sequence[str], extra: bytes | str = b"") -> str:
    """Stable key of one neighbour set's mean features."""
    h = hashlib.sha256()
    h.update(f"{db_id}|{db_count}|{resolution}|{weights_label}|{','.join(layers)}|".encode())
    h.update(np.asarray(sorted(int(i) for i in indices), np.int64).tobytes())
    h.update(extra.encode() if isinstance(extra, str) else extra)
    return h.hexdigest()


def nbytes(feats: Features) -> int:
    """Bytes the entry keeps alive: a view keeps its whole storage, so that is what is counted."""
    return sum(max(t.untyped_storage().nbytes(), t.numel() * t.element_size()) for t in feats)


class FeatureCache:
    """Thread-safe LRU of feature lists, evicting least recently used entries beyond ``max_bytes``
    (see :func:`limit_bytes`); ``bytes`` is what it holds now."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = limit_bytes(max_bytes)
        self._data: OrderedDict[str, tuple[Features, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evicted = 0  # entries dropped or turned away for the bound: shows the bound at work

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
                self.evicted += 1
                return
            self._data[key] = ([f.detach() for f in feats], size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, s) = self._data.popitem(last=False)
                self.bytes -= s
                self.evicted += 1

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0
