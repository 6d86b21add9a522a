"""The DFI pipeline on aligned arrays: features → attribute vector → reconstruct → postprocess.

These functions take images already at the working size (face alignment and
neighbour selection live elsewhere) and return results in the input's own
layout: same size, channels, bit depth and alpha.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .attribute import attribute_vector, scale_vector, target_features
from .backbones import defaults_for
from .errors import InputError
from .features import Features, extract, to_tensor
from .images import DEFAULT_MAX_PIXELS, merge_image, split_image, to_mask
from .postprocess import blend, color_match, compose, feather
from .progress import CancelFn, ProgressFn, report
from .reconstruct import ReconstructConfig, reconstruct
from .vgg import VGGFeatures

GREY = 127.5


@dataclass(frozen=True)
class EditOptions:
    """Everything about an edit except the images and strengths; ``None`` = the backbone's default."""

    scaling: str | None = None
    color: str | None = None
    feather: float | None = None  # px; None = 4% of the shorter side
    batch_size: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_size: int | None = None  # aligned faces: edit at the photo's own scale up to this side (None: as stored)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)


@dataclass
class EditResult:
    """One output image per strength, in the input's layout."""

    images: list[np.ndarray]
    strengths: list[float]
    losses: list[float]
    weights_label: str


def _check_shapes(phi_x: Features, w: Features) -> None:
    for a, b in zip(phi_x, w):
        if a.shape[1:] != b.shape[1:]:
            raise InputError(
                f"Attribute vector was computed at another size (features {tuple(b.shape[2:])} vs "
                f"{tuple(a.shape[2:])}).",
                "Neighbours and the photo must have the same working size.",
            )


def apply_vector(
    net: VGGFeatures,
    image: np.ndarray | Sequence[np.ndarray],
    w: Features,
    strengths: Sequence[float],
    *,
    mask: np.ndarray | None = None,
    options: EditOptions = EditOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    start: np.ndarray | None = None,
    base: np.ndarray | None = None,
    feather_px: float | None = None,
    match_whole: bool = False,
) -> EditResult:
    """Add δ·w to φ(image) for every δ, reconstruct all δ as one batch, blend into the mask.

    ``image`` may also be a list of images of one size, one per strength (the shape-and-tone results, each
    edited at its own strength), still one batch. ``base`` replaces the image whose features δ·w is added to,
    ``start`` the point the inversion starts from (default: ``base``); inpainting uses the grey-filled photo
    as base (w is defined against grey) and a smooth fill as start (colours already right, the optimiser adds
    detail).
    """
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if len(images) not in (1, len(strengths)):
        raise InputError(f"{len(images)} images for {len(strengths)} strengths.",
                         "Pass one image, or one per strength.")
    parts = [split_image(im, options.max_pixels) for im in images]
    spec = parts[0][2]
    m = to_mask(mask, spec.height, spec.width)
    if not (m > 0).any():
        raise InputError("The mask/selection is empty.", "Select the region to edit, or pass no mask.")
    d = defaults_for(net.backbone)
    bases = [p[0] for p in parts] if base is None else [base]
    targets = _targets(net, bases, w, strengths, options.scaling or d.scaling)
    init = np.stack(bases) if start is None else start

    radius = feather_px if feather_px is not None else (
        options.feather if options.feather is not None else 0.04 * min(spec.height, spec.width))
    weight = feather(m, radius)

    def finish(zb: np.ndarray, i: int = 0) -> np.ndarray:
        rgb, alpha, spec = parts[min(i, len(parts) - 1)]
        matched = color_match(zb, rgb, options.color or d.color, None if match_whole else weight)
        return compose(images[min(i, len(images) - 1)], merge_image(blend(rgb, matched, weight), spec, alpha), weight)

    def on_iter(i: int, n: int, current: Callable[[], torch.Tensor]) -> None:
        # the preview: the first strength's current result, finished as the final one will be (rendered if shown)
        report(progress, "reconstruct", i, n, preview=lambda: finish(current()[0].permute(1, 2, 0).cpu().numpy()))

    z, losses = reconstruct(net, to_tensor(init, net.device), targets, options.reconstruct, cancel=cancel,
                            preview=on_iter)
    outs = [finish(zb, i) for i, zb in enumerate(z.permute(0, 2, 3, 1).cpu().numpy())]
    return EditResult(outs, [float(s) for s in strengths], losses.cpu().tolist(), net.label)


def _targets(net: VGGFeatures, bases: list[np.ndarray], w: Features, strengths: Sequence[float],
             scaling: str) -> Features:
    """φ(base) + δ·w for every δ: one base for all strengths, or one base per strength (its own φ and scale)."""
    phi = extract(net, np.stack(bases))
    for b in range(len(bases)):
        _check_shapes([p[b:b + 1] for p in phi], w)
    if len(bases) == 1:
        return target_features(phi, scale_vector(w, scaling, phi), strengths)
    rows = [target_features(one, scale_vector(w, scaling, one), [s])
            for s, one in zip(strengths, ([p[b:b + 1] for p in phi] for b in range(len(bases))))]
    return [torch.cat(layer) for layer in zip(*rows)]


def edit(
    net: VGGFeatures,
    image: np.ndarray,
    source: Iterable[np.ndarray],
    target: Iterable[np.ndarray],
    strengths: Sequence[float],
    *,
    mask: np.ndarray | None = None,
    options: EditOptions = EditOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> EditResult:
    """Full DFI edit: w from source (without) and target (with the attribute) neighbours."""
    shape = image.shape[:2]
    w = attribute_vector(net, source, target, batch_size=options.batch_size, shape=shape, progress=progress)
    return apply_vector(net, image, w, strengths, mask=mask, options=options, progress=progress, cancel=cancel)


def fill_grey(images: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Images (…, H, W, 3) with the region (H, W bool) set to mid-grey."""
    out = np.array(images, dtype=np.float32, copy=True)
    out[..., region, :] = GREY
    return out


def inpaint_options(options: EditOptions, backbone: str) -> EditOptions:
    """Fill selection's own defaults where ``options`` leaves them open (scaling, colour cost)."""
    d = defaults_for(backbone)
    cfg = options.reconstruct
    if cfg.chroma_weight is None:
        cfg = replace(cfg, chroma_weight=d.inpaint_chroma_weight)
    return replace(options, scaling=options.scaling or d.inpaint_scaling, reconstruct=cfg)


def fill_smooth(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The region (H, W bool) filled from its surroundings: normalised Gaussian convolution, coarse to fine,
    so a large hole gets the colours around it and a small one its neighbours' detail."""
    from scipy import ndimage

    out = np.array(image, dtype=np.float32, copy=True)
    known = (~region).astype(np.float32)
    if not known.any():
        out[region] = GREY
        return out
    for sigma in (32.0, 16.0, 8.0, 4.0, 2.0, 1.0):
        den = ndimage.gaussian_filter(known, sigma)
        ok = region & (den > 1e-3)
        for c in range(out.shape[-1]):
            num = ndimage.gaussian_filter(out[..., c] * known, sigma)
            out[..., c][ok] = num[ok] / den[ok]
    return out


def inpaint(
    net: VGGFeatures,
    image: np.ndarray,
    mask: np.ndarray,
    neighbours: Iterable[np.ndarray],
    *,
    strength: float | None = None,
    options: EditOptions = EditOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> EditResult:
    """Fill the masked region: w = mean φ(neighbour) − mean φ(neighbour with the region grey).

    ``strength`` and the scaling default to the backbone's ``inpaint_*`` values.
    """
    if mask is None:
        raise InputError("Inpainting needs a mask.", "Select the region to fill.")
    rgb, _, spec = split_image(image, options.max_pixels)
    region = to_mask(mask, spec.height, spec.width) > 0
    if not region.any():
        raise InputError("The mask/selection is empty.", "Select the region to fill.")
    nb = neighbours if isinstance(neighbours, Collection) else list(neighbours)  # read twice, streamed if it can be
    if not len(nb):
        raise InputError("No neighbour images for inpainting.", "Provide at least one image.")
    masked = (fill_grey(n, region) for n in nb)
    w = attribute_vector(net, masked, nb, batch_size=options.batch_size, shape=rgb.shape[:2], progress=progress,
                         totals=(len(nb), len(nb)))
    options = inpaint_options(options, net.backbone)
    strength = defaults_for(net.backbone).inpaint_strength if strength is None else strength
    return apply_vector(net, image, w, [strength], mask=mask, options=options, progress=progress, cancel=cancel,
                        base=fill_grey(rgb, region), start=fill_smooth(rgb, region), feather_px=0.0,
                        match_whole=True)
