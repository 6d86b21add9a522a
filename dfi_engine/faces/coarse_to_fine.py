"""Editing a face above the database's resolution: solve at the database's size, then refine at the working size.

Why two stages: at the face's own scale in a large photo, VGG's receptive fields
cover less of the face, so a large uniform change (dark lenses, a beard's mass)
barely moves the features and the inversion draws only its edges (measured:
progress 0.05 towards the painted truth at 336 px, against 0.39 at 128 px). The
coarse stage forms the change where the network sees it whole; its result,
upsampled, starts the fine stage, which only has to add the detail the photo's own
resolution allows. The fine stage gets a share of the iterations (it costs
(size/base)² as much per iteration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..edit import EditOptions, EditResult, apply_vector
from ..features import Features
from ..progress import CancelFn, Event, ProgressFn
from ..vgg import VGGFeatures
from .align import AlignedFace

FINE_SHARE = 0.25  # iterations of the fine stage, as a share of the request's


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Float (H, W[, C]) to size×size, bicubic (float32 in and out, no clipping)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()


def fine_iterations(iterations: int) -> int:
    return max(10, round(FINE_SHARE * iterations))


def pixel_iterations(iterations: int, base: int, size: int) -> int:
    """What a job costs, in iterations × pixels, single-scale at ``base`` or coarse-to-fine up to ``size``."""
    if size <= base:
        return iterations * base * base
    return iterations * base * base + fine_iterations(iterations) * size * size


Solve = Callable[[Any, np.ndarray, int, ProgressFn, "np.ndarray | None"], EditResult]
"""One stage: (crop 0..1 at the stage's size, or one per strength; its mask; iterations; progress; the fine crops
the coarse results upsampled to this size (0..255, one per strength) or None in the coarse stage) -> the
stage's result."""


Prepare = Callable[[dict[int, np.ndarray], ProgressFn], None]
"""Work both stages need before either runs (neighbour features), given each stage's mask by size."""


def _each(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A crop, or a list of crops (one per strength), as a list."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _per(items: list, n: int) -> list:
    """One item per strength: the one item for all ``n``, or each its own."""
    return items * n if len(items) == 1 else items


def two_stage(coarse: AlignedFace | Sequence[AlignedFace], iterations: int, solve: Solve,
              prepare: Prepare | None = None) -> Callable[[Any, np.ndarray, ProgressFn], EditResult]:
    """A runner for ``edit_aligned`` at the fine size: ``solve`` at the database's size with ``iterations``,
    then at the fine size with a share of them, from the coarse results; progress counts both stages in coarse
    iterations, and previews of the coarse stage are shown in the fine frame. ``prepare`` runs first, so the
    progress never goes back and the inversion's pace is measured on the inversion alone. ``coarse`` may be one
    face per strength (each strength edited from its own start), matched by the fine crops given to the runner."""
    n1, n2 = iterations, fine_iterations(iterations)
    faces = list(coarse) if isinstance(coarse, (list, tuple)) else [coarse]
    base = faces[0].size

    def run(crop01: Any, crop_mask: np.ndarray, progress: ProgressFn) -> EditResult:
        fine = _each(crop01)
        size = fine[0].shape[0]
        c = (size / base) ** 2  # cost of a fine iteration in coarse ones
        total = n1 + n2 * c

        def upsampled(render: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
            # a coarse result shown in the fine frame: the fine crop plus the upsampled change
            return lambda: fine[0] + resize(render() - faces[0].crop / 255.0, size)

        def stage(offset: float, scale: float, label: str, is_coarse: bool) -> ProgressFn:
            def report(ev: Event) -> None:
                if ev.stage != "reconstruct":
                    return progress(ev)
                shown = upsampled(ev.preview) if is_coarse and ev.preview is not None else ev.preview
                progress(replace(ev.scaled(offset, scale, total, f"{label} {ev.step:g}/{ev.total:g}"), preview=shown))
            return report

        small_mask = np.clip(resize(crop_mask, base), 0.0, 1.0)
        if prepare is not None:
            prepare({base: small_mask, size: crop_mask}, progress)
        crops = faces[0].crop / 255.0 if len(faces) == 1 else [f.crop / 255.0 for f in faces]
        first = solve(crops, small_mask, n1, stage(0.0, 1.0, f"coarse ({base} px)", True), None)
        ups = np.stack([resize(im * 255.0, size) for im in first.images])
        return solve(crop01, crop_mask, n2, stage(n1, c, f"fine ({size} px)", False), ups)

    return run


def coarse_to_fine(
    net: VGGFeatures,
    coarse: AlignedFace | Sequence[AlignedFace],
    w_coarse: Features,
    w_fine: Features,
    strengths: Sequence[float],
    options: EditOptions,
    cancel: CancelFn | None = None,
) -> Callable[[Any, np.ndarray, ProgressFn], EditResult]:
    """An attribute edit in two stages: the fine stage starts from the fine crop plus the upsampled coarse change
    (so the photo's own detail is kept wherever the edit does nothing), with colour dearer (``fine_chroma_weight``)."""
    cfg = options.reconstruct
    faces = list(coarse) if isinstance(coarse, (list, tuple)) else [coarse]
    fine_chroma = cfg.chroma_weight
    if fine_chroma is None:
        from ..backbones import defaults_for

        fine_chroma = defaults_for(net.backbone).fine_chroma_weight

    def solve(crop01: Any, mask: np.ndarray, n: int, progress: ProgressFn, ups: np.ndarray | None) -> EditResult:
        if ups is None:
            return apply_vector(net, crop01, w_coarse, strengths, mask=mask,
                                options=replace(options, reconstruct=replace(cfg, iterations=n)), progress=progress,
                                cancel=cancel)
        # each strength's coarse change, upsampled onto its own fine crop
        fine, small, size = _per(_each(crop01), len(ups)), _per(faces, len(ups)), ups.shape[1]
        starts = np.clip(np.stack([f * 255.0 + u - resize(c.crop, size) for f, u, c in zip(fine, ups, small)]),
                         0.0, 255.0)
        return apply_vector(net, crop01, w_fine, strengths, mask=mask,
                            options=replace(options, reconstruct=replace(cfg, iterations=n, chroma_weight=fine_chroma)),
                            progress=progress, cancel=cancel, start=starts)

    return two_stage(coarse, iterations_of(net, options), solve)


def iterations_of(net: VGGFeatures, options: EditOptions) -> int:
    """The request's iterations, or the backbone's default."""
    from ..backbones import defaults_for

    n = options.reconstruct.iterations
    return defaults_for(net.backbone).iterations if n is None else n
