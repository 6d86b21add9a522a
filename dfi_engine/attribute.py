"""The attribute vector w and the target features φ* = φ(x) + δ·w."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .errors import InputError
from .features import Features, mean_features
from .progress import ProgressFn
from .vgg import VGGFeatures

SCALINGS = ("relative", "none", "beta")


def attribute_vector(
    net: VGGFeatures,
    source: Iterable[np.ndarray],
    target: Iterable[np.ndarray],
    batch_size: int = 8,
    shape: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    totals: tuple[int, int] = (0, 0),
) -> Features:
    """w = mean φ(target) − mean φ(source), both means streamed."""
    mt, _ = mean_features(net, target, batch_size, shape, progress, "target features", totals[1])
    ms, _ = mean_features(net, source, batch_size, shape, progress, "source features", totals[0])
    return [t - s for t, s in zip(mt, ms)]


def _norm(features: Features) -> float:
    return sum(float(t.double().square().sum()) for t in features) ** 0.5


def scale_vector(w: Features, scaling: str, phi_x: Features | None = None) -> Features:
    """The step per unit of strength.

    * "relative" (default): w · ‖φ(x)‖/‖w‖, so strength 0.4 moves the photo's
      deep features by 40% of their own norm, on any backbone and for any
      neighbour set. Needs φ(x).
    * "none": w itself, the mean feature difference (DFI's range ≈0–5 on faces).
    * "beta": the original's w / mean(w²) (range ≈0–1 there). Its unit is
      1/activation, so a strength's effect scales as 1/(activation scale)²: right
      for the normalised VGG-19 it was tuned on, ~400× too weak on ImageNet
      VGG-16 features (docs/quality.md). Kept for comparison.
    """
    if scaling == "none":
        return w
    norm_w = _norm(w)
    if norm_w == 0.0:
        raise InputError(
            "The attribute vector is zero: source and target neighbours look identical.",
            "Use neighbour sets that actually differ in the attribute.",
        )
    if scaling == "relative":
        if phi_x is None:
            raise InputError("Relative scaling needs the photo's features.")
        return [t * (_norm(phi_x) / norm_w) for t in w]
    if scaling == "beta":
        msq = norm_w**2 / sum(t.numel() for t in w)
        return [t / msq for t in w]
    raise InputError(f"Unknown scaling {scaling!r}.", f"Use one of {', '.join(SCALINGS)}.")


def target_features(phi_x: Features, w: Features, strengths: Sequence[float]) -> Features:
    """φ* for every strength at once: a batch of len(strengths)."""
    if not strengths:
        raise InputError("No strengths given.", "Pass at least one strength, e.g. 0.4.")
    d = torch.tensor([float(s) for s in strengths], device=phi_x[0].device).view(-1, 1, 1, 1)
    return [p + d * wl for p, wl in zip(phi_x, w)]
