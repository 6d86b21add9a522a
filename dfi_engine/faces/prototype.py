"""Shape and tone prototypes of an attribute, learnt from the neighbours' 68 landmarks and aligned crops.

Rowland & Perrett (IEEE CG&A 15(5), 1995): a set's *shape* prototype is the mean of
its landmark positions, its *colour* prototype the mean of its images each warped
to the mean shape; a face is moved towards an attribute by adding α·(target − source)
of each. Here both live in the database's canonical crop frame:

- shape: every face's 68 points are fitted (similarity, on the nose and eyes, which
  most attributes leave in place) to the set's mean shape, so the jitter of the
  alignment cancels; the target and source means are trimmed means (a face whose
  landmarks dlib got wrong does not drag the mean);
- tone: each face is warped to the mean shape and the sets are compared there
  (tone.py: a per-channel ratio, and for what covers the skin a cover with its own
  colour), shrunk and low-passed, so what is left is the attribute's tone, not the
  neighbours' identities.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import align as al
from . import tone as tn
from . import warp as wp
from .tone import FORMS

STABLE = tuple(range(27, 48))  # nose bridge, nose and eyes: what a per-face fit uses
TRIM = 0.2  # share cut from each end of the per-coordinate sorted landmarks
TONE_WARP = "similarity"  # how each neighbour is brought to the mean shape for the tone: "mls" or "similarity"
MIN_DENSE = 3  # faces with 68 points each set needs at least
OCCLUDED_REACH = 0.2  # "around": a window of this share of the crop (a detector's points shift near a repaint too)


@dataclass
class Prototype:
    """An attribute's shape and tone change in the canonical frame of ``size``×``size`` crops."""

    size: int
    mean_shape: np.ndarray  # (68, 2) crop pixels: the frame the tone lives in
    shape_delta: np.ndarray  # (68, 2) crop pixels: target − source mean landmarks
    tone: np.ndarray | None  # (S, S, tone.CHANNELS[form]) float32 in the mean-shape frame
    form: str = FORMS[0]
    counts: dict = field(default_factory=dict)
    fit_on: tuple[int, ...] = STABLE  # the points each face was fitted on (the stable ones a repaint left)
    hidden: np.ndarray | None = None  # (68,) 0..1 how far each point's move was ignored as under a repaint
    calibration: dict = field(default_factory=dict)  # what undoing the detector's gain did (see calibrate.py)

    def digest(self, *weights: float) -> bytes:
        """What identifies this prototype applied with ``weights`` (a feature cache key)."""
        h = hashlib.sha256(np.asarray(weights, np.float64).tobytes() + self.form.encode())
        h.update(np.ascontiguousarray(self.shape_delta).tobytes())
        if self.tone is not None:
            h.update(np.ascontiguousarray(self.tone).tobytes())
        return h.digest()[:16]

    def _tone_summary(self) -> dict:
        """What the tone does, readable: a ratio's or an addition's range, or a cover's opacity and colour."""
        if self.tone is None:
            return {"tone_range": None}
        if self.form != "alpha":
            return {"tone_range": [round(float(self.tone.min()), 4), round(float(self.tone.max()), 4)]}
        a = self.tone[..., 3]
        covered = a >= 0.5 * a.max()
        cover = self.tone[..., 4:7][covered].sum(0) / max(float(a[covered].sum()), 1e-9)
        return {"opacity_max": round(float(a.max()), 4), "cover_rgb": [round(float(c), 1) for c in cover]}

    def summary(self) -> dict:
        eyes = np.linalg.norm(self.mean_shape[36:42].mean(0) - self.mean_shape[42:48].mean(0))
        return {"size": self.size, "form": self.form, "counts": self.counts,
                "shape_max_px": round(float(np.linalg.norm(self.shape_delta, axis=1).max()), 3),
                "shape_max_eye_share": round(float(np.linalg.norm(self.shape_delta, axis=1).max() / eyes), 4),
                **self._tone_summary(),
                **({"calibration": self.calibration} if self.calibration else {})}


def fit_to(points: np.ndarray, reference: np.ndarray, idx: Sequence[int] = STABLE) -> np.ndarray:
    """``points`` (68, 2) moved by the similarity that best maps their ``idx`` subset onto ``reference``'s."""
    m = al.similarity(points[list(idx)], reference[list(idx)])
    return al.apply(m, points)


def procrustes(shapes: np.ndarray, idx: Sequence[int] = STABLE, rounds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(mean shape, every shape fitted to it): generalised Procrustes on ``idx``, anchored to the plain mean's
    pose and scale so the result stays in the crop frame."""
    shapes = np.asarray(shapes, np.float64)
    anchor = shapes.mean(0)
    ref = anchor
    for _ in range(rounds):
        fitted = np.stack([fit_to(s, ref, idx) for s in shapes])
        ref = fit_to(trimmed_mean(fitted), anchor, idx)
    return ref, np.stack([fit_to(s, ref, idx) for s in shapes])


def trimmed_mean(a: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """Mean over axis 0 of the values left after cutting ``trim`` of them from each end (per element)."""
    a = np.sort(np.asarray(a, np.float64), axis=0)
    n = len(a)
    k = min(int(trim * n), (n - 1) // 2)
    return a[k:n - k].mean(0)


def shape_prototype(source: np.ndarray, target: np.ndarray, trim: float = TRIM, idx: Sequence[int] = STABLE,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(mean shape of both sets, target − source) from (n, 68, 2) landmark sets in crop pixels, fitted on ``idx``.

    (Shrinking each point's change by the standard error of the means was tried and dropped: with a dozen
    examples dlib's whole-pixel scatter halved a real smile.)"""
    both = np.concatenate([source, target])
    mean, fitted = procrustes(both, idx)
    s, t = fitted[:len(source)], fitted[len(source):]
    return mean, trimmed_mean(t, trim) - trimmed_mean(s, trim)


def repainted(log_ratio: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(68,) how far each point's surroundings are repainted (0 kept … 1 repainted; ``log_ratio`` the (S, S) mean
    log ratio of the sets): a point under an occluder (dark glasses, a beard) is where the detector guesses, so
    its move is not a shape change."""
    x = np.clip(points[:, 0], 0, log_ratio.shape[1] - 1)
    y = np.clip(points[:, 1], 0, log_ratio.shape[0] - 1)
    near = ndimage.maximum_filter(tn.repaint_area(log_ratio), size=max(3, int(OCCLUDED_REACH * log_ratio.shape[0])))
    return tn.repaint_weight(ndimage.map_coordinates(near, [y, x], order=1))


def border_anchors(size: int, n: int = 8) -> np.ndarray:
    """Points around the square crop's edge (n per side): they hold the frame while the face moves."""
    t = np.linspace(-0.5, size - 0.5, n, endpoint=False)
    e = size - 0.5
    return np.concatenate([np.stack([t, np.full(n, -0.5)], 1), np.stack([np.full(n, e), t], 1),
                           np.stack([e - t, np.full(n, e)], 1), np.stack([np.full(n, -0.5), e - t], 1)])


def to_mean_shape(image: np.ndarray, points: np.ndarray, mean_shape: np.ndarray, how: str = "mls") -> np.ndarray:
    """A crop (S, S, 3) warped so its 68 ``points`` land on ``mean_shape``: by MLS (the crop's edge follows the
    face's overall similarity, so only the face's own shape is undone), or by that similarity alone."""
    size = image.shape[0]
    m = al.similarity(mean_shape, points)  # mean frame -> this face
    if how == "similarity":
        return al.warp_to_crop(np.asarray(image, np.float32), al.invert(m), size)
    anchors = border_anchors(size)
    p_out = np.concatenate([mean_shape, anchors])
    p_in = np.concatenate([points, al.apply(m, anchors)])
    f = wp.mls_field(p_out, p_in, (0, 0, size, size), nodes=max(2, size // 2))
    return wp.apply_field(np.asarray(image, np.float32), f)


def placed(images: Sequence[np.ndarray], pts: np.ndarray, mean_shape: np.ndarray, how: str) -> np.ndarray:
    """(n, S, S, 3) float32 levels: a set's crops each warped to the mean shape."""
    return np.stack([to_mean_shape(im, p, mean_shape, how) for im, p in zip(images, pts)]).astype(np.float32)


def tone_prototype(source: Sequence[np.ndarray], source_pts: np.ndarray, target: Sequence[np.ndarray],
                   target_pts: np.ndarray, mean_shape: np.ndarray, form: str = FORMS[0],
                   sigma: float | None = None, how: str = "mls") -> np.ndarray:
    """The tone map of ``form`` (tone.py) from the sets' crops and 68 points."""
    return tn.tone_map(placed(target, target_pts, mean_shape, how), placed(source, source_pts, mean_shape, how),
                       form, sigma)


# ------------------------------------------------------------------------------------------ from a database

CACHE_ENTRIES = 16
CACHE_BYTES = 64 * 2**20  # a 256 px tone map is 0.75 MiB: the entry count binds first on usual databases


def proto_bytes(p: Prototype) -> int:
    """The arrays a kept prototype holds (its tone map dominates)."""
    return sum(a.nbytes for a in (p.mean_shape, p.shape_delta, p.tone, p.hidden) if a is not None)


class PrototypeCache(OrderedDict):
    """LRU of prototypes by key, at most ``entries`` of them and ``max_bytes`` of arrays: what a daemon keeps
    between jobs must have a bound in bytes, whatever the database's resolution."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        super().__init__()
        self.entries, self.max_bytes, self.bytes = entries, max_bytes, 0

    def put(self, key: bytes, proto: Prototype) -> None:
        if key in self:
            self.bytes -= proto_bytes(self.pop(key))
        self[key] = proto
        self.bytes += proto_bytes(proto)
        while self and (len(self) > self.entries or self.bytes > self.max_bytes):
            self.bytes -= proto_bytes(self.popitem(last=False)[1])

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


_CACHE = PrototypeCache()


def learn(db, source: np.ndarray, target: np.ndarray, tone: bool = True, form: str = FORMS[0],
          minimum: int = MIN_DENSE, sigma: float | None = None, how: str | None = None) -> Prototype:
    """The prototype of a neighbour selection (``source``/``target`` database indices), kept in memory by set.

    Faces without 68 points are left out; a database that has too few says how to rebuild it.
    """
    src = db.require_dense(source, minimum)
    tgt = db.require_dense(target, minimum)
    how = how or TONE_WARP
    h = hashlib.sha256(f"{db.id}:{db.count}:{tone}:{form}:{sigma}:{how}".encode())
    h.update(np.asarray(src, np.int64).tobytes() + b"|" + np.asarray(tgt, np.int64).tobytes())
    key = h.digest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    sp, tp = db.dense[src].astype(np.float64), db.dense[tgt].astype(np.float64)
    s_img, t_img = list(db.images(src)), list(db.images(tgt))
    mean, delta = shape_prototype(sp, tp)
    on_mean = placed(t_img, tp, mean, how), placed(s_img, sp, mean, how)
    ratio = tn.tone_map(*on_mean, "ratio", sigma)
    tone_map = ratio if form == "ratio" else tn.tone_map(*on_mean, form, sigma)
    hidden = repainted(ratio.mean(-1), mean)  # where the examples are repainted: the sets' log ratio, any form
    fit_on = STABLE
    if hidden.any():  # a repaint (an occluder): the points near it are where the detector guessed
        kept = [i for i in range(len(mean)) if hidden[i] < 1]
        stable = [i for i in STABLE if hidden[i] < 1]
        if len(kept) >= 6:
            fit_on = tuple(stable if len(stable) >= 6 else kept)
            _, delta = shape_prototype(sp, tp, idx=fit_on)
        delta = delta * (1.0 - hidden)[:, None]
    if not tone:
        tone_map = None
    proto = Prototype(db.resolution, mean, delta, tone_map, form,
                      {"source": len(src), "target": len(tgt),
                       "left_out": int(len(source) + len(target) - len(src) - len(tgt))}, fit_on, hidden)
    _CACHE.put(key, proto)
    return proto
