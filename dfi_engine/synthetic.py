"""Synthetic cartoon faces whose attributes are known by construction.

Used by the offline smoke mode, the demo, the benchmarks and the tests: no
dataset can be downloaded on project machines, and a drawn "beard" gives an
attribute with a known location and colour to check edits against.
"""

from __future__ import annotations

import numpy as np


def face(rng: np.random.Generator, beard: bool, size: int = 64) -> np.ndarray:
    """RGB uint8 face on a textured background; ``beard`` darkens the lower face."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(40, 90, 3) + 10 * np.sin(xx * 9 + rng.uniform(0, 6))[..., None]
    cx, cy = 0.5 + rng.normal(0, 0.01), 0.5 + rng.normal(0, 0.01)
    head = ((xx - cx) / 0.32) ** 2 + ((yy - cy) / 0.42) ** 2 < 1
    img[head] = np.array([200, 160, 130]) + rng.normal(0, 8, 3)
    for ex in (cx - 0.12, cx + 0.12):
        img[((xx - ex) / 0.06) ** 2 + ((yy - (cy - 0.1)) / 0.035) ** 2 < 1] = (40, 30, 30)
    mouth = (np.abs(xx - cx) < 0.1) & (np.abs(yy - (cy + 0.17)) < 0.015)
    img[mouth] = (150, 60, 60)
    if beard:
        img[head & (yy > cy + 0.1) & ~mouth] = np.array([60, 45, 35]) + rng.normal(0, 4, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def faces(seed: int, n: int, beard: bool, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [face(rng, beard, size) for _ in range(n)]


def beard_region(size: int = 64) -> np.ndarray:
    """Where every synthetic beard lies (bool (H, W)), shrunk slightly for position jitter."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    head = ((xx - 0.5) / 0.30) ** 2 + ((yy - 0.5) / 0.40) ** 2 < 1
    mouth = (np.abs(xx - 0.5) < 0.12) & (np.abs(yy - 0.67) < 0.03)
    return head & (yy > 0.63) & ~mouth
