"""Which of an edit's components run (shape, tone, texture) and the shape-and-tone stage of a face edit.

Shape and tone are prototype transforms (see ``prototype.py``): no optimisation, at
the photo's own resolution. Texture is DFI, which then starts from their result. A
request names the components it wants (a set, or weights); left open, the attribute's
weights from ``data/attributes.toml`` decide. Strength keeps DFI's meaning; shape and
tone take it relative to the default strength, so the default applies the prototype
in full (Rowland & Perrett's 100 %) and twice the default exaggerates it (200 %).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..images import split_image
from . import align as al
from .attributes import COMPONENTS
from .calibrate import learn_calibrated
from .errors import DatabaseError
from .landmarks import FaceDetector
from .prototype import MIN_DENSE, Prototype, learn
from .shape_tone import ShapeToneResult, apply_prototype, prototype_on_crop
from .tone import FORMS


def component_weights(attribute, components: Collection[str] | Mapping[str, float] | None = None
                      ) -> dict[str, float]:
    """{shape, tone, texture} -> weight: the attribute's own, or those of ``components`` (names: weight 1, others 0;
    a mapping: its weights, names left out 0)."""
    if components is None:
        return dict(attribute.weights())
    if isinstance(components, str):
        components = [components]
    given = dict(components) if isinstance(components, Mapping) else {c: 1.0 for c in components}
    unknown = sorted(set(given) - set(COMPONENTS))
    if unknown or not given:
        raise InputError(f"Unknown edit components {unknown or '(none given)'}.",
                         f"Use a non-empty subset of {', '.join(COMPONENTS)}.")
    out = {c: float(given.get(c, 0.0)) for c in COMPONENTS}
    if attribute.kind == "inpaint" and (out["shape"] or out["tone"]):
        raise InputError("Fill selection has no shape or tone component.", "Use components=['texture'].")
    return out


class ShapeTone:
    """The shape and tone prototypes of one photo and neighbour set, learnt once: any strength then costs one
    warp (milliseconds), which is what the live preview shows first."""

    def __init__(self, photo: np.ndarray, face: al.AlignedFace, database, selection, default_strength: float,
                 weights: Mapping[str, float], detector: FaceDetector | None = None, mask: np.ndarray | None = None,
                 max_pixels: int = 50_000_000, tone_form: str = FORMS[0]) -> None:
        if not face.aligned:
            raise InputError("Shape and tone edits need a detected face.",
                             "Run with components=['texture'] instead.")
        det = detector or FaceDetector()
        learnt = dict(tone=bool(weights.get("tone")), form=tone_form)
        self.proto: Prototype = (
            learn_calibrated(database, selection.source, selection.target, det, **learnt) if weights.get("shape")
            else learn(database, selection.source, selection.target, **learnt))
        self.photo, self.face, self.mask, self.max_pixels = photo, face, mask, max_pixels
        self.dense = det.dense(split_image(photo, max_pixels)[0] / 255.0, face.face)
        self.scale = 1.0 / default_strength if default_strength else 1.0  # the default strength = 100 %
        self.shape, self.tone = weights.get("shape", 0.0), weights.get("tone", 0.0)

    def apply(self, strength: float) -> ShapeToneResult:
        """The photo at ``strength`` (shape and tone only)."""
        s = strength * self.scale
        return apply_prototype(self.photo, self.face, self.dense, self.proto, self.shape * s, self.tone * s,
                               self.mask, self.max_pixels)

    def photos(self, strengths: Sequence[float]) -> tuple[list[np.ndarray], dict]:
        """One photo per strength, and what was done."""
        runs = [self.apply(s) for s in strengths]
        return [r.image for r in runs], {"prototype": self.proto.summary(), "runs": [r.info for r in runs]}


def residual_change(database, proto: Prototype, weights: Mapping[str, float]) -> tuple[Callable, bytes]:
    """(change of a source neighbour, its cache key): the face moved by the prototype as the photo is at its
    default strength, so DFI's vector holds only the texture that shape and tone leave to it."""
    shape, tone = weights.get("shape", 0.0), weights.get("tone", 0.0)
    dense = database.dense

    def change(image: np.ndarray, index: int) -> np.ndarray:
        return prototype_on_crop(image, dense[index], proto, shape, tone)

    return change, b"prototype:" + proto.digest(shape, tone)


def dense_missing(database, selection) -> DatabaseError | None:
    """Why shape and tone cannot run on this database's neighbours (its message says how to rebuild), or None."""
    try:
        database.require_dense(selection.source, MIN_DENSE)
        database.require_dense(selection.target, MIN_DENSE)
    except DatabaseError as e:
        return e
    return None
