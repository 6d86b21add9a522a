"""The attribute vector w and the target features φ* = φ(x) + δ·w."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .errors import InputError
from .features import Features, ProgressFn, mean_features
from .vgg import VGG19Features

SCALINGS = ("none", "beta")


def attribute_vector(
    net: VGG19Features,
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


def scale_vector(w: Features, scaling: str) -> Features:
    """"none" leaves w as is (strength range ≈0–5); "beta" divides by mean(w²) (range ≈0–1).

    The "beta" normalisation makes one strength mean roughly the same amount of
    change whatever the attribute and neighbour set, which is why it is the
    default for user-facing edits.
    """
    if scaling == "none":
        return w
    if scaling == "beta":
        total = sum(float(t.double().square().sum()) for t in w)
        n = sum(t.numel() for t in w)
        msq = total / n
        if msq == 0.0:
            raise InputError(
                "The attribute vector is zero: source and target neighbours look identical.",
                "Use neighbour sets that actually differ in the attribute.",
            )
        return [t / msq for t in w]
    raise InputError(f"Unknown scaling {scaling!r}.", f"Use one of {', '.join(SCALINGS)}.")


def target_features(phi_x: Features, w: Features, strengths: Sequence[float]) -> Features:
    """φ* for every strength at once: a batch of len(strengths)."""
    if not strengths:
        raise InputError("No strengths given.", "Pass at least one strength, e.g. 0.4.")
    d = torch.tensor([float(s) for s in strengths], device=phi_x[0].device).view(-1, 1, 1, 1)
    return [p + d * wl for p, wl in zip(phi_x, w)]
