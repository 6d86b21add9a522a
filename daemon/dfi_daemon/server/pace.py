"""How long a job will take, before it runs: this device's measured pace, not a guess.

Two parts. The inversion costs a steady time per iteration per pixel per strength
(measured by the warm-up, then by every job's reconstruct stage; a coarse-to-fine
edit counts the pixel-iterations of both stages). The preparation
(finding neighbours, their features) depends on what is cached, so it is learnt per
kind of request; a kind never seen is priced as the neighbours' forward passes.
Thread-safe: the worker observes, the main thread estimates.
"""

from __future__ import annotations

import threading
from typing import Any

SMOOTHING = 0.5  # weight of the newest observation (paces change with load and warm caches)
FORWARD_SHARE = 0.5  # a forward pass costs about half a forward+backward iteration


class Pace:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.per_unit: float | None = None  # seconds per (iteration × pixel × strength)
        self.prep: dict[Any, float] = {}

    def observe_iterations(self, seconds: float, pixel_iterations: float, strengths: int) -> None:
        if pixel_iterations <= 0 or seconds <= 0:
            return
        rate = seconds / (pixel_iterations * max(strengths, 1))
        with self._lock:
            self.per_unit = rate if self.per_unit is None else SMOOTHING * rate + (1 - SMOOTHING) * self.per_unit

    def observe_prep(self, key: Any, seconds: float) -> None:
        with self._lock:
            old = self.prep.get(key)
            self.prep[key] = seconds if old is None else SMOOTHING * seconds + (1 - SMOOTHING) * old

    def estimate(self, key: Any, pixel_iterations: float, strengths: int, neighbour_pixels: float) -> float | None:
        """Seconds for the whole job, or None before anything was measured."""
        with self._lock:
            if self.per_unit is None:
                return None
            prep = self.prep.get(key)
            if prep is None:
                prep = neighbour_pixels * self.per_unit * FORWARD_SHARE
            return prep + pixel_iterations * max(strengths, 1) * self.per_unit
