"""Live previews: a small picture of the result as it forms, sent with progress every few seconds.

The engine hands the reconstruct stage's progress a ``render()`` that finishes the current
iterate exactly as the final result will be (colour match, warp back into the photo,
blend through the selection), so a preview is the result in miniature. It costs one
render and one resize each time it is sent, nothing in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from dfi_wire import protocol as P


class Previews:
    """Turns ``render`` functions into preview image maps, at most one per ``every_s`` seconds."""

    def __init__(self, every_s: float, fmt: str) -> None:
        self.every_s = max(float(every_s), P.PREVIEW_MIN_S) if every_s else 0.0
        self.fmt = fmt
        self.next = time.monotonic() + self.every_s  # the start image is what the user already sees

    def maybe(self, render: Callable[[], np.ndarray] | None) -> dict[str, Any] | None:
        if not self.every_s or render is None or time.monotonic() < self.next:
            return None
        image = small(np.asarray(render()))
        self.next = time.monotonic() + self.every_s
        return P.image_map(np.ascontiguousarray(image).tobytes(), image.shape[1], image.shape[0], self.fmt)


def small(image: np.ndarray, side: int = P.PREVIEW_MAX_SIDE) -> np.ndarray:
    """At most ``side`` pixels on the longer side, 8 bits, same channels."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float32) * (255.0 if image.dtype.kind == "f" else 1.0)), 0, 255)
        image = image.astype(np.uint8)
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
