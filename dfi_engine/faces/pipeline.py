"""Aligned editing end to end: photo -> detect -> canonical crop -> DFI -> change warped back -> composite.

Only the change (edited crop − crop) goes back to the photo, upsampled, so
the photo keeps its full-resolution detail wherever the edit does nothing;
the result is composited through the feathered face region times the user's
mask, and every pixel outside it is bit-identical to the input.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..edit import EditOptions, EditResult, apply_vector, fill_grey, fill_smooth, inpaint_options
from ..features import Features, ProgressFn
from ..images import merge_image, split_image, to_mask
from ..postprocess import blend, compose, feather
from ..vgg import VGGFeatures
from . import align as al
from .coarse_to_fine import coarse_to_fine, iterations_of, pixel_iterations, resize, two_stage
from .errors import NoFaceError
from .landmarks import FaceDetector, choose_face


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


def align_photo(photo: np.ndarray, size: int, detector: FaceDetector | None = None,
                mask: np.ndarray | None = None, whole_image: bool = False,
                max_pixels: int = 50_000_000) -> al.AlignedFace:
    """Detect the face (inside the mask if given, else the largest) and map it to the canonical crop.

    ``whole_image=True`` skips detection and squeezes the whole image into the
    square instead (the explicit fall-back when no face is found).
    """
    rgb, _, spec = split_image(photo, max_pixels)
    if whole_image:
        m = al.whole_matrix(spec.height, spec.width, size)
        return al.AlignedFace(al.warp_to_crop(rgb, m, size), m, size, None, None, [], "whole image, unaligned")
    det = detector or FaceDetector()
    faces = det.detect(rgb / 255.0)
    if not faces:
        raise NoFaceError(
            f"No face found in the {spec.width}x{spec.height} image.",
            "Select a larger region around a frontal face, or run without alignment on the whole image "
            "(whole_image=True; CLI --no-align).",
        )
    i, why = choose_face(faces, None if mask is None else to_mask(mask, spec.height, spec.width))
    crop, m = al.align_rgb(rgb, faces[i], size)
    return al.AlignedFace(crop, m, size, faces[i].landmarks, faces[i], faces, why)


def edit_aligned(
    net: VGGFeatures,
    photo: np.ndarray,
    w: Features,
    strengths: Sequence[float],
    size: int,
    mask: np.ndarray | None = None,
    options: EditOptions = EditOptions(),
    detector: FaceDetector | None = None,
    whole_image: bool = False,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    aligned: al.AlignedFace | None = None,
    feather_frac: float = 0.06,
    runner: Callable[[np.ndarray, np.ndarray, ProgressFn], EditResult] | None = None,
) -> FaceEditResult:
    """Apply an attribute vector ``w`` (computed on size×size aligned neighbours) to the face in ``photo``.

    ``w`` may be None when ``runner(crop 0..1, crop mask, progress)`` does the edit on the crop instead.
    """
    rgb, alpha, spec = split_image(photo, options.max_pixels)
    user = to_mask(mask, spec.height, spec.width)
    af = aligned or align_photo(photo, size, detector, mask, whole_image, options.max_pixels)
    ellipse = af.aligned
    crop_region = al.region_in_crop(size, ellipse)
    if mask is not None:
        crop_region = crop_region * np.clip(al.warp_to_crop(user, af.matrix, size), 0.0, 1.0)
    if not (crop_region > 0.01).any():
        from ..errors import InputError

        raise InputError("The selection does not overlap the face.", "Select (part of) the face, or select nothing.")
    crop_mask = np.where(crop_region > 0.01, crop_region, 0.0).astype(np.float32)
    region, box = al.region_in_photo(af.matrix, size, (spec.height, spec.width), ellipse)
    weight_mask = region * user
    face_px = (box[2] - box[0] + box[3] - box[1]) / 2.0
    radius = options.feather if options.feather is not None else feather_frac * face_px
    weight = feather(weight_mask, radius) if ellipse else feather(weight_mask, 0.02 * min(spec.height, spec.width))

    def to_photo(edited: np.ndarray) -> np.ndarray:
        """An edited crop (0..1) back into the photo: only the change is warped, then blended."""
        delta = edited.astype(np.float32) * 255.0 - af.crop
        back = al.warp_from_crop(delta, af.matrix, (spec.height, spec.width), box)
        out_rgb = blend(rgb, np.clip(rgb + back, 0.0, 255.0), weight)
        return compose(photo, merge_image(out_rgb, spec, alpha), weight)

    def photo_progress(stage: str, done: int, total: int, render: Callable[[], np.ndarray] | None = None,
                       **extra) -> None:
        if progress:
            if render is not None:  # a live preview shows the photo, not the aligned crop
                extra["render"] = lambda: to_photo(render())
            progress(stage, done, total, **extra)

    if runner is not None:  # e.g. inpainting, which needs the crop mask to build its vector
        res = runner(af.crop / 255.0, crop_mask, photo_progress)
    else:
        res = apply_vector(net, af.crop / 255.0, w, strengths, crop_mask, options, photo_progress, cancel)
    outs = [to_photo(edited) for edited in res.images]
    crops = [np.clip(np.rint(edited * 255.0), 0, 255).astype(np.uint8) for edited in res.images]
    info = {"face": af.report(), "work_size": size, "feather_px": round(float(radius), 2), "region_box": list(box)}
    return FaceEditResult(outs, res.strengths, res.losses, res.weights_label, af, crops, info)


def edit_attribute(
    net: VGGFeatures,
    photo: np.ndarray,
    database,
    attribute,
    strengths: Sequence[float],
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
    cancel: Callable[[], bool] | None = None,
    *,
    components: Collection[str] | Mapping[str, float] | None = None,
    tone_form: str = "ratio",
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
    from .components import component_weights, dense_missing, residual_change, shape_tone_photos
    from .neighbours import input_scores, select

    weights = component_weights(attribute, components)
    if attribute.kind == "inpaint":
        if mask is None:
            from ..errors import InputError

            raise InputError("Filling a selection needs a selection.", "Select the region to fill.")
        return inpaint_face(net, photo, database, mask, strengths[0] if strengths else attribute.strength,
                            options, detector, whole_image, k, minimum, cache, progress, cancel)
    af = align_photo(photo, database.resolution, detector, mask, whole_image, options.max_pixels)
    scores, how, thumb = input_scores(database, photo, af, given)
    sel = select(database, attribute, scores, k=k, minimum=minimum, exclude=how.get("index"),
                 identity=how.get("identity"), input_landmarks=af.crop_landmarks if rerank_landmarks else None,
                 thumb=thumb)
    notes: list[str] = []
    if (weights["shape"] or weights["tone"]) and (missing := dense_missing(database, sel)) is not None:
        if components is not None:  # asked for: say how to get it
            raise missing
        notes.append(str(missing))  # the attribute's default: texture only, and why
        weights = {**weights, "shape": 0.0, "tone": 0.0}
    if not af.aligned:
        weights = {**weights, "shape": 0.0, "tone": 0.0}
    info: dict = {"attribute": attribute.name, "input_scores": how, "neighbours": sel.summary(),
                  "components": weights, "notes": notes}
    if weights["shape"] or weights["tone"]:
        from ..backbones import defaults_for

        base = attribute.strength if attribute.strength is not None else defaults_for(net.backbone).strength
        starts, info["shape_tone"], proto = shape_tone_photos(photo, af, database, sel, strengths, base, weights,
                                                              detector, mask, options.max_pixels, tone_form)
        change = residual_change(database, proto, weights)  # DFI learns the texture shape and tone leave
    else:
        starts, change = [photo] * len(strengths), None
    if not weights["texture"]:
        crops = [np.clip(np.rint(al.warp_to_crop(split_image(im, options.max_pixels)[0], af.matrix, af.size)),
                         0, 255).astype(np.uint8) for im in starts]
        return FaceEditResult(starts, [float(s) for s in strengths], [0.0] * len(strengths), "shape+tone", af,
                              crops, {**info, "face": af.report(), "work_size": af.size})
    # each strength has its own shape-and-tone start, so texture runs once per start (one batch without them)
    groups = [(starts[0], list(strengths))] if weights["shape"] == weights["tone"] == 0 else \
        [(im, [s]) for im, s in zip(starts, strengths)]
    parts = [_texture(net, start, photo, database, sel, [s * weights["texture"] for s in group], af, mask, options,
                      detector, whole_image, cache, _share(progress, i, len(groups)), cancel, change)
             for i, (start, group) in enumerate(groups)]
    res = parts[0]
    for part in parts[1:]:
        res.images, res.crops, res.losses = res.images + part.images, res.crops + part.crops, res.losses + part.losses
    res.strengths = [float(s) for s in strengths]
    res.info.update(info)
    res.info["pixel_iterations"] = sum(p.info["pixel_iterations"] for p in parts)
    return res


def _share(progress: ProgressFn | None, i: int, n: int) -> ProgressFn | None:
    """Progress of the ``i``-th of ``n`` inversions run one after another, as one that never goes back."""
    if progress is None or n == 1:
        return progress

    def report(stage: str, done: int, total: int, **extra) -> None:
        if stage == "reconstruct":
            progress(stage, i * total + done, n * total, **extra)
        elif i == 0:  # the later ones' neighbour features come from the cache: no step back to "features"
            progress(stage, done, total, **extra)

    return report


def _texture(net: VGGFeatures, photo: np.ndarray, af_photo: np.ndarray, database, sel, strengths: Sequence[float],
             af: al.AlignedFace, mask: np.ndarray | None, options: EditOptions, detector: FaceDetector | None,
             whole_image: bool, cache, progress: ProgressFn | None, cancel: Callable[[], bool] | None,
             change: tuple[Callable, bytes] | None = None) -> FaceEditResult:
    """DFI on ``photo`` (the input, or its shape and tone result) in the face frame found on ``af_photo``;
    ``change``: (how each source neighbour is moved first, its cache key), see ``components.residual_change``."""
    from .neighbours import attribute_vector_cached

    if af.aligned and photo is not af_photo:
        af = replace(af, crop=al.warp_to_crop(split_image(photo, options.max_pixels)[0], af.matrix, af.size))
    moved = {"source_change": change[0], "change_key": change[1]} if change else {}
    w = attribute_vector_cached(net, database, sel, options.batch_size, cache, progress, **moved)
    fine = at_working_size(af, photo, options)
    if fine is af:
        res = edit_aligned(net, photo, w, strengths, af.size, mask, options, detector, whole_image, progress,
                           cancel, aligned=af)
    else:
        w_fine = attribute_vector_cached(net, database, sel, options.batch_size, cache, progress, size=fine.size,
                                         **moved)
        res = edit_aligned(net, photo, None, strengths, fine.size, mask, options, detector, whole_image, progress,
                           cancel, aligned=fine, runner=coarse_to_fine(net, af, w, w_fine, strengths, options, cancel))
    res.info["pixel_iterations"] = pixel_iterations(iterations_of(net, options), af.size, fine.size)
    return res


def at_working_size(af: al.AlignedFace, photo: np.ndarray, options: EditOptions) -> al.AlignedFace:
    """The face at the side it is edited at (``options.work_size`` caps it; see ``align.working_size``)."""
    size = al.working_size(af.matrix, af.size, options.work_size)
    if size == af.size:
        return af
    return af.resized(split_image(photo, options.max_pixels)[0], size)


def inpaint_face(
    net: VGGFeatures,
    photo: np.ndarray,
    database,
    mask: np.ndarray,
    strength: float | None = None,
    options: EditOptions = EditOptions(),
    detector: FaceDetector | None = None,
    whole_image: bool = False,
    k: int = 100,
    minimum: int = 10,
    cache=None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FaceEditResult:
    """Fill the selected part of a face from the K database faces nearest in appearance (DFI inpainting).

    w = mean φ(neighbours) − mean φ(neighbours with the selection grey), both
    cached per (neighbour set, selection in the crop).
    """
    import hashlib

    from ..backbones import defaults_for
    from .database import content_hash, thumbnail
    from .neighbours import mean_cached, select_appearance

    strength = defaults_for(net.backbone).inpaint_strength if strength is None else strength
    options = inpaint_options(options, net.backbone)
    af = align_photo(photo, database.resolution, detector, mask, whole_image, options.max_pixels)
    idx = select_appearance(database, thumbnail(af.crop), k, minimum, database.find(content_hash(photo)))
    fine = at_working_size(af, photo, options)
    vectors: dict[int, tuple[np.ndarray, Features]] = {}  # size -> (region, w)

    def prepare(masks: dict[int, np.ndarray], progress: ProgressFn) -> None:
        """w = mean φ(neighbours) − mean φ(neighbours, region grey), at every stage's size, cached per region."""
        for size, crop_mask in masks.items():
            region = crop_mask > 0.5
            if not region.any():
                from ..errors import InputError

                raise InputError("The selection is too small in the face's frame.", "Select a larger region.")
            tag = hashlib.sha256(np.packbits(region).tobytes()).digest()
            full = mean_cached(net, database, idx, options.batch_size, cache, progress, "neighbour features",
                               size=size)
            grey = mean_cached(net, database, idx, options.batch_size, cache, progress, "masked features",
                               transform=lambda im, r=region: fill_grey(im, r), extra=b"grey:" + tag, size=size)
            vectors[size] = (region, [a - b for a, b in zip(full, grey)])

    def solve(crop01: np.ndarray, crop_mask: np.ndarray, n: int, progress: ProgressFn,
              ups: np.ndarray | None = None) -> EditResult:
        """Fill at the crop's size; the fine stage starts from the upsampled coarse fill, not the photo's pixels."""
        size = crop01.shape[0]
        if size not in vectors:
            prepare({size: crop_mask}, progress)
        region, w = vectors[size]
        if ups is None:
            start = fill_smooth(crop01 * 255.0, region)
        else:  # where the coarse region did not reach (its edge, sampled coarser), fill from around
            covered = np.clip(resize(vectors[af.size][0].astype(np.float32), size), 0.0, 1.0) > 0.5
            start = fill_smooth(np.where((region & covered)[..., None], ups[0], crop01 * 255.0), region & ~covered)
        return apply_vector(net, crop01, w, [strength], region.astype(np.float32),
                            replace(options, reconstruct=replace(options.reconstruct, iterations=n)), progress,
                            cancel, base=fill_grey(crop01 * 255.0, region), start=start, feather_px=0.0,
                            match_whole=True)

    n = iterations_of(net, options)
    if fine is af:
        runner = lambda crop01, crop_mask, progress: solve(crop01, crop_mask, n, progress)  # noqa: E731
    else:
        runner = two_stage(af, n, solve, prepare)
    res = edit_aligned(net, photo, None, [strength], fine.size, mask, options, detector, whole_image, progress,
                       cancel, aligned=fine, runner=runner)
    res.info["pixel_iterations"] = pixel_iterations(n, af.size, fine.size)
    res.info.update({"attribute": "inpaint", "neighbours": {"count": len(idx)}})
    return res
