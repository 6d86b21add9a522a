"""Small synthetic portraits and their wire form, for tests that send edits to a real daemon."""

from __future__ import annotations

import numpy as np
from dfi_wire import protocol as P

from dfi_engine.synthetic import face


def portrait(seed: int, w: int, h: int, alpha: bool) -> np.ndarray:
    """A seeded cartoon face cropped to ``w`` x ``h``, with a graded alpha channel if asked."""
    im = face(np.random.default_rng(seed), False, max(w, h))[:h, :w]
    if alpha:
        a = np.linspace(40, 255, w * h).reshape(h, w).astype(np.uint8)
        im = np.dstack([im, a])
    return np.ascontiguousarray(im)


def wire(a: np.ndarray) -> dict:
    """An H x W x 3|4 uint8 array as the protocol's image map."""
    fmt = {3: "RGB8", 4: "RGBA8"}[a.shape[2]]
    return P.image_map(a.tobytes(), a.shape[1], a.shape[0], fmt)


def small_edit(seed: int, **options: object) -> dict:
    """A quick "facehair" edit request of a 48-px portrait (few iterations, two neighbours)."""
    return P.edit_request(wire(portrait(seed, 48, 48, False)), "facehair", [1.0],
                          **{"iterations": 8, "k": 2, **options})
