"""Aligned editing end to end: photo -> detect -> canonical crop -> DFI -> change warped back -> composite.

Only the change (edited crop − crop) goes back to the photo, upsampled, so
the photo keeps its full-resolution detail wherever the edit does nothing;
the result is composited through the feathered face region times the user's
mask, and every pixel outside it is bit-identical to the input.

The photo is split (RGB, alpha, layout) and the user's mask converted once per
edit, into a :class:`Photo` that every step reads; progress and cancel follow
:mod:`dfi_engine.progress`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..edit import EditOptions, EditResult, apply_vector, fill_grey, fill_smooth, inpaint_options
from ..features import Features
from ..images import ImageSpec, merge_image, split_image, to_mask
from ..postprocess import CHROMA_SIGMA, blend, compose, feather, smooth_chroma
from ..progress import CancelFn, Event, ProgressFn
from ..vgg import VGGFeatures
from . import align as al
from .coarse_to_fine import iterations_of, pixel_iterations, resize, two_stage
from .errors import NoFaceError
from .landmarks import FaceDetector, choose_face


@dataclass(frozen=True)
class Photo:
    """A photo split once: float RGB 0..255, alpha, its layout, and the user's mask as weights 0..1 (1 without
    a mask). Every step of one edit reads this instead of splitting the array again."""

    pixels: np.ndarray  # as given: the layout results come back in
    rgb: np.ndarray
    alpha: np.ndarray | None
    spec: ImageSpec
    mask: np.ndarray | None  # as given (None: no selection)
    weights: np.ndarray

    @classmethod
    def of(cls, photo: np.ndarray | Photo, mask: np.ndarray | None = None, max_pixels: int = 50_000_000) -> Photo:
        """``photo`` split (an already split :class:`Photo` is returned as is, with its own mask)."""
        if isinstance(photo, Photo):
            return photo
        rgb, alpha, spec = split_image(photo, max_pixels)
        return cls(photo, rgb, alpha, spec, mask, to_mask(mask, spec.height, spec.width))

    def with_pixels(self, pixels: np.ndarray, max_pixels: int = 50_000_000) -> Photo:
        """Another image of the same layout (a shape-and-tone start) under the same, already converted mask."""
        if pixels is self.pixels:
            return self
        rgb, alpha, spec = split_image(pixels, max_pixels)
        return replace(self, pixels=pixels, rgb=rgb, alpha=alpha, spec=spec)

    @property
    def hw(self) -> tuple[int, int]:
        return self.spec.height, self.spec.width


@dataclass
class FaceEditResult:
    """One photo per strength (input layout), plus how the face was found and the edited crops."""

    images: list[np.ndarray]
    strengths: list[float]
    losses: list[float]
    weights_label: str
    face: al.AlignedFace
    crops: list[np.ndarray] = field(default_factory=list)  # edited canonical crops, uint8
    info: dict = field(default_factory=dict)


def align_photo(photo: np.ndarray | Photo, size: int, detector: FaceDetector | None = None,
                mask: np.ndarray | None = None, whole_image: bool = False,
                max_pixels: int = 50_000_000) -> al.AlignedFace:
    """Detect the face (inside the mask if given, else the largest) and map it to the canonical crop.

    ``whole_image=True`` skips detection and squeezes the whole image into the
    square instead (the explicit fall-back when no face is found).
    """
    p = Photo.of(photo, mask, max_pixels)
    if whole_image:
        m = al.whole_matrix(p.spec.height, p.spec.width, size)
        return al.AlignedFace(al.warp_to_crop(p.rgb, m, size), m, size, None, None, [], "whole image, unaligned")
    det = detector or FaceDetector()
    faces = det.detect(p.rgb / 255.0)
    if not faces:
        raise NoFaceError(
            f"No face found in the {p.spec.width}x{p.spec.height} image.",
            "Select a larger region around a frontal face, or run without alignment on the whole image "
            "(whole_image=True; CLI --no-align).",
        )
    i, why = choose_face(faces, None if p.mask is None else p.weights)
    crop, m = al.align_rgb(p.rgb, faces[i], size)
    return al.AlignedFace(crop, m, size, faces[i].landmarks, faces[i], faces, why)


CropRunner = Callable[[Any, np.ndarray, ProgressFn], EditResult]
"""Edits the aligned crop instead of ``apply_vector``: (crop 0..1, or a list of them, one per strength; crop mask
0..1; progress) -> result."""


@dataclass(frozen=True)
class _Frame:
    """Where the edit lands in the photo: the crop's mask, the photo's blend weight and the crop's box."""

    crop_mask: np.ndarray
    weight: np.ndarray
    box: tuple[int, int, int, int]
    radius: float


def _frame(p: Photo, af: al.AlignedFace, size: int, options: EditOptions, feather_frac: float) -> _Frame:
    """The face region in the crop (times the selection) and its feathered weight in the photo."""
    from ..errors import InputError

    ellipse = af.aligned
    crop_region = al.region_in_crop(size, ellipse)
    if p.mask is not None:
        crop_region = crop_region * np.clip(al.warp_to_crop(p.weights, af.matrix, size), 0.0, 1.0)
    if not (crop_region > 0.01).any():
        raise InputError("The selection does not overlap the face.", "Select (part of) the face, or select nothing.")
    crop_mask = np.where(crop_region > 0.01, crop_region, 0.0).astype(np.float32)
    region, box = al.region_in_photo(af.matrix, size, p.hw, ellipse)
    face_px = (box[2] - box[0] + box[3] - box[1]) / 2.0
    radius = options.feather if options.feather is not None else feather_frac * face_px
    weight = feather(region * p.weights, radius if ellipse else 0.02 * min(p.hw))
    return _Frame(crop_mask, weight, box, radius)


def edit_aligned(
    net: VGGFeatures,
    photo: np.ndarray | Photo,
    w: Features | None,
    strengths: Sequence[float],
    *,
    size: int,
    mask: np.ndarray | None = None,
    options: EditOptions = EditOptions(),
    detector: FaceDetector | None = None,
    whole_image: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    aligned: al.AlignedFace | Sequence[al.AlignedFace] | None = None,
    starts: Sequence[Photo] | None = None,
    feather_frac: float = 0.06,
    runner: CropRunner | None = None,
    chroma_sigma: float = CHROMA_SIGMA,
) -> FaceEditResult:
    """Apply an attribute vector ``w`` (computed on size×size aligned neighbours) to the face in ``photo``.

    ``photo`` is the array (with ``mask``) or a :class:`Photo` (which carries its mask). ``w`` may be None
    when ``runner(crop 0..1, crop mask, progress)`` does the edit on the crop instead. ``starts``: one photo per
    strength that strength is edited from (the shape-and-tone results), with ``aligned`` their crops (one
    :class:`AlignedFace` each, the photo's frame); all strengths still run as one batch. ``chroma_sigma``: the
    change's colour is low-passed (:func:`smooth_chroma`; 0 keeps it, as a fill must).
    """
    p = Photo.of(photo, mask, options.max_pixels)
    faces = list(aligned) if isinstance(aligned, (list, tuple)) else \
        [aligned or align_photo(p, size, detector, whole_image=whole_image)]
    af, shown = faces[0], list(starts) if starts else [p]
    fr = _frame(p, af, size, options, feather_frac)

    def to_photo(edited: np.ndarray, i: int = 0) -> np.ndarray:
        """An edited crop (0..1) back into its start: only the change is warped, then blended."""
        q, crop = shown[min(i, len(shown) - 1)], faces[min(i, len(faces) - 1)].crop
        change = smooth_chroma(edited.astype(np.float32) * 255.0 - crop, chroma_sigma)
        back = al.warp_from_crop(change, af.matrix, p.hw, fr.box)
        out_rgb = blend(q.rgb, np.clip(q.rgb + back, 0.0, 255.0), fr.weight)
        return compose(q.pixels, merge_image(out_rgb, q.spec, q.alpha), fr.weight)

    def photo_progress(ev: Event) -> None:
        if progress:  # a live preview shows the photo, not the aligned crop
            progress(ev if ev.preview is None else replace(ev, preview=lambda: to_photo(ev.preview())))

    crops01 = faces[0].crop / 255.0 if len(faces) == 1 else [f.crop / 255.0 for f in faces]
    if runner is not None:  # e.g. inpainting, which needs the crop mask to build its vector
        res = runner(crops01, fr.crop_mask, photo_progress)
    else:
        res = apply_vector(net, crops01, w, strengths, mask=fr.crop_mask, options=options,
                           progress=photo_progress, cancel=cancel)
    outs = [to_photo(edited, i) for i, edited in enumerate(res.images)]
    crops = [np.clip(np.rint(edited * 255.0), 0, 255).astype(np.uint8) for edited in res.images]
    info = {"face": af.report(), "work_size": size, "feather_px": round(float(fr.radius), 2),
            "region_box": list(fr.box)}
    return FaceEditResult(outs, res.strengths, res.losses, res.weights_label, af, crops, info)


@dataclass(frozen=True)
class _Edit:
    """What every phase of one face edit reads, so each phase takes this and what it adds, not eleven values."""

    net: VGGFeatures
    photo: Photo
    database: Any
    options: EditOptions
    detector: FaceDetector | None
    whole_image: bool
    cache: Any
    progress: ProgressFn | None
    cancel: CancelFn | None


def edit_attribute(
    net: VGGFeatures,
    photo: np.ndarray,
    database,
    attribute,
    strengths: Sequence[float],
    *,
    mask: np.ndarray | None = None,
    options: EditOptions = EditOptions(),
    detector: FaceDetector | None = None,
    whole_image: bool = False,
    k: int = 100,
    minimum: int = 10,
    cache=None,
    given: Mapping[str, float] | None = None,
    rerank_landmarks: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    components: Collection[str] | Mapping[str, float] | None = None,
    tone_form: str | None = None,
) -> FaceEditResult:
    """The whole edit for a named attribute: align, pick neighbours, shape and tone prototypes, then DFI texture.

    ``database`` is an opened :class:`~dfi_engine.faces.database.Database`,
    ``attribute`` an :class:`~dfi_engine.faces.attributes.AttributeDef`,
    ``cache`` an optional :class:`~dfi_engine.faces.cache.FeatureCache`.
    ``components`` picks what runs (a subset of shape, tone, texture, or weights; default: the attribute's
    weights, see ``components.component_weights``). Shape and tone need the database's 68-point landmarks: a
    database built before them edits texture only when ``components`` is left open, and says how to rebuild
    when shape or tone is asked for. Texture (DFI) starts from the shape and tone result.
    """
    if attribute.kind == "inpaint":
        return _fill_attribute(net, photo, database, attribute, strengths, mask=mask, options=options,
                               detector=detector, whole_image=whole_image, k=k, minimum=minimum, cache=cache,
                               progress=progress, cancel=cancel)
    from .session import EditSession

    session = EditSession(net, photo, database, attribute, mask=mask, options=options, detector=detector,
                          whole_image=whole_image, k=k, minimum=minimum, cache=cache, components=components,
                          given=given, rerank_landmarks=rerank_landmarks, tone_form=tone_form, progress=progress,
                          cancel=cancel)
    return session.render(strengths, progress=progress, cancel=cancel)


def _fill_attribute(net: VGGFeatures, photo: np.ndarray, database, attribute, strengths: Sequence[float], *,
                    mask: np.ndarray | None, **kw: Any) -> FaceEditResult:
    """An attribute of kind "inpaint" (Fill selection) asked for through ``edit_attribute``."""
    if mask is None:
        from ..errors import InputError

        raise InputError("Filling a selection needs a selection.", "Select the region to fill.")
    return inpaint_face(net, photo, database, mask, strength=strengths[0] if strengths else attribute.strength,
                        **kw)


def at_working_size(af: al.AlignedFace, photo: np.ndarray | Photo, options: EditOptions) -> al.AlignedFace:
    """The face at the side it is edited at (``options.work_size`` caps it; see ``align.working_size``)."""
    size = al.working_size(af.matrix, af.size, options.work_size)
    if size == af.size:
        return af
    return af.resized(Photo.of(photo, None, options.max_pixels).rgb, size)


class _Fill:
    """Inpainting's two steps at any stage's size: the vector (cached per region), then the solve."""

    def __init__(self, net: VGGFeatures, database, idx: np.ndarray, options: EditOptions, cache,
                 strength: float, coarse: al.AlignedFace, cancel: CancelFn | None) -> None:
        self.net, self.database, self.idx, self.options, self.cache = net, database, idx, options, cache
        self.strength, self.coarse, self.cancel = strength, coarse, cancel
        self.vectors: dict[int, tuple[np.ndarray, Features]] = {}  # size -> (region, w)

    def prepare(self, masks: dict[int, np.ndarray], progress: ProgressFn) -> None:
        """w = mean φ(neighbours) − mean φ(neighbours, region grey), at every stage's size, cached per region."""
        import hashlib

        from .neighbours import mean_cached

        for size, crop_mask in masks.items():
            region = crop_mask > 0.5
            if not region.any():
                from ..errors import InputError

                raise InputError("The selection is too small in the face's frame.", "Select a larger region.")
            tag = hashlib.sha256(np.packbits(region).tobytes()).digest()
            args = (self.net, self.database, self.idx, self.options.batch_size, self.cache, progress)
            full = mean_cached(*args, "neighbour features", size=size)
            grey = mean_cached(*args, "masked features", transform=lambda im, r=region: fill_grey(im, r),
                               extra=b"grey:" + tag, size=size)
            self.vectors[size] = (region, [a - b for a, b in zip(full, grey)])

    def solve(self, crop01: np.ndarray, crop_mask: np.ndarray, n: int, progress: ProgressFn,
              ups: np.ndarray | None = None) -> EditResult:
        """Fill at the crop's size; the fine stage starts from the upsampled coarse fill, not the photo's pixels."""
        size = crop01.shape[0]
        if size not in self.vectors:
            self.prepare({size: crop_mask}, progress)
        region, w = self.vectors[size]
        if ups is None:
            start = fill_smooth(crop01 * 255.0, region)
        else:  # where the coarse region did not reach (its edge, sampled coarser), fill from around
            coarse_region = self.vectors[self.coarse.size][0].astype(np.float32)
            covered = np.clip(resize(coarse_region, size), 0.0, 1.0) > 0.5
            start = fill_smooth(np.where((region & covered)[..., None], ups[0], crop01 * 255.0), region & ~covered)
        options = replace(self.options, reconstruct=replace(self.options.reconstruct, iterations=n))
        return apply_vector(self.net, crop01, w, [self.strength], mask=region.astype(np.float32), options=options,
                            progress=progress, cancel=self.cancel, base=fill_grey(crop01 * 255.0, region),
                            start=start, feather_px=0.0, match_whole=True)


def inpaint_face(
    net: VGGFeatures,
    photo: np.ndarray,
    database,
    mask: np.ndarray,
    *,
    strength: float | None = None,
    options: EditOptions = EditOptions(),
    detector: FaceDetector | None = None,
    whole_image: bool = False,
    k: int = 100,
    minimum: int = 10,
    cache=None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> FaceEditResult:
    """Fill the selected part of a face from the K database faces nearest in appearance (DFI inpainting).

    w = mean φ(neighbours) − mean φ(neighbours with the selection grey), both
    cached per (neighbour set, selection in the crop).
    """
    from ..backbones import defaults_for
    from .database import content_hash, thumbnail
    from .neighbours import select_appearance

    strength = defaults_for(net.backbone).inpaint_strength if strength is None else strength
    options = inpaint_options(options, net.backbone)
    p = Photo.of(photo, mask, options.max_pixels)
    af = align_photo(p, database.resolution, detector, whole_image=whole_image)
    idx = select_appearance(database, thumbnail(af.crop), k, minimum, database.find(content_hash(photo)))
    fine = at_working_size(af, p, options)
    fill = _Fill(net, database, idx, options, cache, strength, af, cancel)
    n = iterations_of(net, options)
    if fine is af:
        runner: CropRunner = lambda crop01, crop_mask, pr: fill.solve(crop01, crop_mask, n, pr)  # noqa: E731
    else:
        runner = two_stage(af, n, fill.solve, fill.prepare)
    res = edit_aligned(net, p, None, [strength], size=fine.size, options=options, detector=detector,
                       whole_image=whole_image, progress=progress, cancel=cancel, aligned=fine, runner=runner,
                       chroma_sigma=0.0)
    res.info["pixel_iterations"] = pixel_iterations(n, af.size, fine.size)
    res.info.update({"attribute": "inpaint", "neighbours": {"count": len(idx)}})
    return res
