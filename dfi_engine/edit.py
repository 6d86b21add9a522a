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
    image: np.ndarray,
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

    ``base`` replaces the image whose features δ·w is added to, ``start`` the point the inversion
    starts from (default: ``base``); inpainting uses the grey-filled photo as base (w is defined
    against grey) and a smooth fill as start (colours already right, the optimiser adds detail).
    """
    rgb, alpha, spec = split_image(image, options.max_pixels)
    m = to_mask(mask, spec.height, spec.width)
    if not (m > 0).any():
        raise InputError("The mask/selection is empty.", "Select the region to edit, or pass no mask.")
    d = defaults_for(net.backbone)
    base = rgb if base is None else base
    init = base if start is None else start
    phi_x = extract(net, base)
    _check_shapes(phi_x, w)
    targets = target_features(phi_x, scale_vector(w, options.scaling or d.scaling, phi_x), strengths)
    del phi_x

    radius = feather_px if feather_px is not None else (
        options.feather if options.feather is not None else 0.04 * min(spec.height, spec.width))
    weight = feather(m, radius)

    def finish(zb: np.ndarray) -> np.ndarray:
        matched = color_match(zb, rgb, options.color or d.color, None if match_whole else weight)
        return compose(image, merge_image(blend(rgb, matched, weight), spec, alpha), weight)

    def on_iter(i: int, n: int, current: Callable[[], torch.Tensor]) -> None:
        # the preview: the first strength's current result, finished as the final one will be (rendered if shown)
        report(progress, "reconstruct", i, n, preview=lambda: finish(current()[0].permute(1, 2, 0).cpu().numpy()))

    z, losses = reconstruct(net, to_tensor(init, net.device), targets, options.reconstruct, cancel=cancel,
                            preview=on_iter)
    outs = [finish(zb) for zb in z.permute(0, 2, 3, 1).cpu().numpy()]
    return EditResult(outs, [float(s) for s in strengths], losses.cpu().tolist(), net.label)


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
