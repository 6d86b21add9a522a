"""An edit session: set the photo once, then edit it at any strength (the live slider's engine).

Almost all of an edit's cost is per photo, not per strength: the face's alignment, the neighbour selection,
the shape and tone prototypes and the attribute vector. :class:`EditSession` computes them once (like
segment-anything's predictor: set the image, then predict), so that

* :meth:`EditSession.instant` shows shape and tone at any strength in milliseconds (no optimisation),
* :meth:`EditSession.refine` adds DFI's texture at the database's resolution with few iterations, warm-started
  from the nearest strength refined before (seconds on a CPU),
* :meth:`EditSession.render` is the full-quality edit (what ``edit_attribute`` returns), reusing the same setup.

Previews show the photo's face region (the box the edit can touch), scaled to at most ``side`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..edit import EditOptions, apply_vector
from ..features import Features
from ..images import split_image
from ..postprocess import blend, smooth_chroma
from ..progress import CancelFn, ProgressFn
from ..vgg import VGGFeatures
from . import align as al
from .coarse_to_fine import coarse_to_fine, iterations_of, pixel_iterations
from .pipeline import FaceEditResult, Photo, _Edit, _Frame, _frame, align_photo, at_working_size, edit_aligned

PREVIEW_SIDE = 160  # px: a preview's longer side (the face at about the database's resolution)
REFINED_KEPT = 8  # refined strengths a session keeps as warm starts (the most recent)
PREVIEW_ITERATIONS = (16, 8)  # inversion steps of a refined preview: cold, then warm-started (~3 s on 2 cores)


@dataclass(frozen=True)
class Preview:
    """One preview: the photo's face region at ``strength``, small."""

    image: np.ndarray  # (h, w, 3) uint8: the region ``box`` of the edited photo, longer side <= the session's side
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in the photo's pixels
    strength: float
    kind: str  # "instant" (shape + tone) or "refined" (+ DFI texture at low resolution)
    loss: float | None = None  # the inversion's final loss (refined previews)


class EditSession:
    """One photo, one attribute: the per-photo work done once, then edits at any strength."""

    def __init__(self, net: VGGFeatures, photo: np.ndarray, database, attribute, *,
                 mask: np.ndarray | None = None, options: EditOptions = EditOptions(),
                 detector=None, whole_image: bool = False, k: int = 100, minimum: int = 10, cache=None,
                 components: Collection[str] | Mapping[str, float] | None = None,
                 given: Mapping[str, float] | None = None, rerank_landmarks: bool = False,
                 tone_form: str | None = None, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 side: int = PREVIEW_SIDE) -> None:
        from .components import component_weights

        if attribute.kind == "inpaint":
            from ..errors import InputError

            raise InputError("Fill selection has no strength to preview.", "Use an attribute edit, or run the fill.")
        self.attribute, self.side = attribute, int(side)
        self.job = _Edit(net, Photo.of(photo, mask, options.max_pixels), database, options, detector, whole_image,
                         cache, progress, cancel)
        self.face = align_photo(self.job.photo, database.resolution, detector, whole_image=whole_image)
        _check(cancel)
        self.selection, self.info = _neighbours(self.job, attribute, self.face, k, minimum, given, rerank_landmarks)
        self.weights = _usable(self.job, self.selection, self.face, component_weights(attribute, components),
                               components is not None, self.info)
        _check(cancel)
        self.shape_tone, self.change = _shape_tone(self.job, attribute, self.face, self.selection, self.weights,
                                                   tone_form)
        self._frame: _Frame | None = None
        self._vector: Features | None = None
        self._refined: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # strength -> (start crop, edited crop)

    # ------------------------------------------------------------------ the full edit
    def starts(self, strengths: Sequence[float]) -> tuple[list[np.ndarray], dict | None]:
        """The photo with shape and tone at each strength (the photo itself without them), and what was done."""
        if self.shape_tone is None:
            return [self.job.photo.pixels] * len(strengths), None
        return self.shape_tone.photos(strengths)

    def render(self, strengths: Sequence[float], *, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None) -> FaceEditResult:
        """The edit at full quality, one photo per strength (as ``edit_attribute``)."""
        job = replace(self.job, progress=progress, cancel=cancel)
        info = {**self.info, "notes": list(self.info["notes"])}
        starts, done = self.starts(strengths)
        if done is not None:
            info["shape_tone"] = done
        af, max_pixels = self.face, job.options.max_pixels
        if not self.weights["texture"]:
            crops = [np.clip(np.rint(al.warp_to_crop(split_image(im, max_pixels)[0], af.matrix, af.size)), 0, 255)
                     .astype(np.uint8) for im in starts]
            return FaceEditResult(starts, [float(s) for s in strengths], [0.0] * len(strengths), "shape+tone", af,
                                  crops, {**info, "face": af.report(), "work_size": af.size})
        return _texture_all(job, af, self.selection, starts, strengths, self.weights, self.change, info)

    # ------------------------------------------------------------------ previews
    def instant(self, strength: float) -> Preview:
        """Shape and tone at ``strength``: no optimisation (the photo itself for a texture-only attribute)."""
        return self._preview(self._start(strength), float(strength), "instant")

    def refine(self, strength: float, *, iterations: int | None = None, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None) -> Preview:
        """Shape, tone and DFI's texture at the database's resolution, with few iterations, starting from the
        nearest strength refined before (its texture carried over onto this strength's shape and tone)."""
        s = float(strength)
        start = self._start(s)
        if not self.weights["texture"]:
            return self._preview(start, s, "refined")
        p, af, fr = self.job.photo.with_pixels(start, self.job.options.max_pixels), self.face, self.frame
        crop = al.warp_to_crop(p.rgb, af.matrix, af.size)
        warm = self._warm(s, crop)
        n = iterations or PREVIEW_ITERATIONS[warm is not None]
        opts = self.job.options
        opts = replace(opts, reconstruct=replace(opts.reconstruct, iterations=n))
        res = apply_vector(self.job.net, crop / 255.0, self.vector(progress), [s * self.weights["texture"]],
                           mask=fr.crop_mask, options=opts, progress=progress, cancel=cancel, start=warm)
        edited = np.asarray(res.images[0], np.float32) * 255.0
        self._refined.pop(s, None)
        self._refined[s] = (crop, edited)
        while len(self._refined) > REFINED_KEPT:  # a long drag must not grow the session without bound
            self._refined.pop(next(iter(self._refined)))
        return replace(self._preview(start, s, "refined", edited - crop), loss=float(res.losses[0]))

    def vector(self, progress: ProgressFn | None = None) -> Features:
        """DFI's attribute vector at the database's resolution (what shape and tone leave to texture)."""
        if self._vector is None:
            from .neighbours import attribute_vector_cached

            moved = {"source_change": self.change[0], "change_key": self.change[1]} if self.change else {}
            self._vector = attribute_vector_cached(self.job.net, self.job.database, self.selection,
                                                   self.job.options.batch_size, self.job.cache, progress, **moved)
        return self._vector

    @property
    def frame(self) -> _Frame:
        """Where the edit lands: the crop's mask, the photo's feathered weight, the region's box."""
        if self._frame is None:
            self._frame = _frame(self.job.photo, self.face, self.face.size, self.job.options, 0.06)
        return self._frame

    @property
    def nbytes(self) -> int:
        """The memory this session holds (arrays and tensors), what a session budget counts."""
        arrays: list[Any] = [self.job.photo.pixels, self.job.photo.rgb, self.job.photo.weights, self.face.crop]
        if self._frame is not None:
            arrays += [self._frame.crop_mask, self._frame.weight]
        if self.shape_tone is not None:
            arrays.append(self.shape_tone.proto.tone)
        arrays += [t for pair in self._refined.values() for t in pair]
        total = sum(int(a.nbytes) for a in arrays if a is not None)
        if self._vector is not None:
            total += sum(int(t.element_size() * t.nelement()) for t in self._vector)
        return total

    def _start(self, strength: float) -> np.ndarray:
        return self.job.photo.pixels if self.shape_tone is None else self.shape_tone.apply(strength).image

    def _warm(self, strength: float, crop: np.ndarray) -> np.ndarray | None:
        """The nearest refined strength's texture on this strength's start (0..255), or None (cold start)."""
        if not self._refined:
            return None
        near = min(self._refined, key=lambda t: abs(t - strength))
        old_crop, old_edited = self._refined[near]
        return np.clip(old_edited + (crop - old_crop), 0.0, 255.0)

    def _preview(self, start: np.ndarray, strength: float, kind: str, change: np.ndarray | None = None) -> Preview:
        """The region box of ``start`` (plus the crop's ``change`` warped back and feathered), small, uint8."""
        from PIL import Image

        x0, y0, x1, y1 = box = self.frame.box
        rgb = split_image(start[y0:y1, x0:x1], self.job.options.max_pixels)[0]
        if change is not None:
            m = self.face.matrix.copy()
            m[:, 2] += m[:, 0] * x0 + m[:, 1] * y0  # photo -> crop, read from the box's own pixels
            back = al.warp_from_crop(smooth_chroma(change), m, rgb.shape[:2], (0, 0, x1 - x0, y1 - y0))
            rgb = blend(rgb, np.clip(rgb + back, 0.0, 255.0), self.frame.weight[y0:y1, x0:x1])
        im = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        scale = min(1.0, self.side / max(im.size))
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
        return Preview(np.asarray(im), box, strength, kind)


# ---------------------------------------------------------------------- the steps of a session


def _check(cancel: CancelFn | None) -> None:
    """Stop between the steps of opening a session when its job was cancelled (e.g. a newer preview)."""
    if cancel is not None and cancel():
        from ..errors import CancelledError

        raise CancelledError("The job was cancelled.")


def _neighbours(job: _Edit, attribute, af: al.AlignedFace, k: int, minimum: int,
                given: Mapping[str, float] | None, rerank_landmarks: bool) -> tuple[Any, dict]:
    """The neighbour selection for ``attribute`` and the start of the result's info."""
    from .neighbours import input_scores, select

    scores, how, thumb = input_scores(job.database, job.photo.pixels, af, given)
    sel = select(job.database, attribute, scores, k=k, minimum=minimum, exclude=how.get("index"),
                 identity=how.get("identity"), input_landmarks=af.crop_landmarks if rerank_landmarks else None,
                 thumb=thumb)
    return sel, {"attribute": attribute.name, "input_scores": how, "neighbours": sel.summary(), "notes": []}


def _usable(job: _Edit, sel, af: al.AlignedFace, weights: dict[str, float], asked: bool,
            info: dict) -> dict[str, float]:
    """The component weights that can run: shape and tone need dense landmarks and an aligned face."""
    from .components import dense_missing

    if (weights["shape"] or weights["tone"]) and (missing := dense_missing(job.database, sel)) is not None:
        if asked:  # asked for: say how to get it
            raise missing
        info["notes"].append(str(missing))  # the attribute's default: texture only, and why
        weights = {**weights, "shape": 0.0, "tone": 0.0}
    if not af.aligned:
        weights = {**weights, "shape": 0.0, "tone": 0.0}
    info["components"] = weights
    return weights


def _shape_tone(job: _Edit, attribute, af: al.AlignedFace, sel, weights: Mapping[str, float],
                tone_form: str | None) -> tuple[Any, Any]:
    """The shape and tone prototypes learnt for this photo (None without them), and the change DFI's texture is
    learnt on top of (None without them)."""
    if not (weights["shape"] or weights["tone"]):
        return None, None
    from ..backbones import defaults_for
    from .components import ShapeTone, residual_change

    base = attribute.strength if attribute.strength is not None else defaults_for(job.net.backbone).strength
    st = ShapeTone(job.photo.pixels, af, job.database, sel, base, weights, job.detector, job.photo.mask,
                   job.options.max_pixels, tone_form or attribute.tone_form)
    return st, residual_change(job.database, st.proto, weights)  # DFI learns the texture shape and tone leave


def _texture_all(job: _Edit, af: al.AlignedFace, sel, starts: list[np.ndarray], strengths: Sequence[float],
                 weights: Mapping[str, float], change: tuple[Callable, bytes] | None, info: dict) -> FaceEditResult:
    """DFI's texture on every start, all strengths as one batch: each strength is edited from its own start
    (its shape and tone result; the photo itself without them) in the face frame found on the photo.
    ``change``: (how each source neighbour is moved first, its cache key), see ``components.residual_change``."""
    from .neighbours import attribute_vector_cached

    opts, progress = job.options, job.progress
    shown = [job.photo.with_pixels(im, opts.max_pixels) for im in starts]
    if shown[0] is job.photo and all(p is shown[0] for p in shown):
        shown = [job.photo]  # no shape or tone: one start for all strengths
    coarse = [af if p is job.photo or not af.aligned else replace(af, crop=al.warp_to_crop(p.rgb, af.matrix, af.size))
              for p in shown]
    moved = {"source_change": change[0], "change_key": change[1]} if change else {}
    w = attribute_vector_cached(job.net, job.database, sel, opts.batch_size, job.cache, progress, **moved)
    fine = [at_working_size(c, p, opts) for c, p in zip(coarse, shown)]
    common = {"options": opts, "detector": job.detector, "whole_image": job.whole_image, "progress": progress,
              "cancel": job.cancel, "starts": None if shown[0] is job.photo else shown}
    texture = [s * weights["texture"] for s in strengths]
    if fine[0] is coarse[0]:
        res = edit_aligned(job.net, job.photo, w, texture, size=af.size, aligned=coarse, **common)
    else:
        w_fine = attribute_vector_cached(job.net, job.database, sel, opts.batch_size, job.cache, progress,
                                         size=fine[0].size, **moved)
        res = edit_aligned(job.net, job.photo, None, texture, size=fine[0].size, aligned=fine, **common,
                           runner=coarse_to_fine(job.net, coarse, w, w_fine, texture, opts, job.cancel))
    res.strengths = [float(s) for s in strengths]
    res.info.update(info)
    res.info["pixel_iterations"] = pixel_iterations(iterations_of(job.net, opts), af.size, fine[0].size)
    return res
