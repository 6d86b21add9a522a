"""The landmark detector's gain on a shape change, measured on the neighbours themselves and undone.

dlib's 68-point predictor regresses towards its mean face: on a known smile (examples warped
by a known move) it reports only 55–80 % of the mouth corners' move, so a shape prototype
learnt from its points is a weaker change than the one in the photos, and the edit comes out
weaker still. The gain is a property of the detector on such faces, so it can be measured
where the change is known exactly: warp the source neighbours by a trial move (with the warp
the edit itself uses), ask the detector what moved, and correct the trial move until what
the detector sees of it is what it saw between the sets. Both sides are measured alike (the
crops the database keeps, the same fixed box, an upsampled copy), so the detector's box
jitter and whole-pixel steps cancel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from . import warp as wp
from .landmarks import FaceDetector
from .prototype import Prototype, PrototypeCache, border_anchors, fit_to, learn, shape_prototype
from .shape_tone import prototype_on_crop

ROUNDS = 2  # corrections after the first measurement (each costs one warp and one prediction per face)
FACES = 10  # source neighbours the gain is measured on
SETS = 32  # neighbours of each set whose detected difference the corrected move must reproduce
LIMIT = 2.5  # a point's corrected move is at most this many times what the detector saw (and a little)
UPSAMPLE = 3  # the crops are read by the detector this many times larger (finer than its whole-pixel steps)
WARP = "tps"  # the edit's own warp (shape_tone.SHAPE_WARP): the gain depends on how a move is spread
COLOUR_READ = (0.55, 0.75)  # share of the detected change dlib also reads off the sets' colour change alone where
# the shape change starts to be dropped, and is (measured: a painted patch 1.0-1.08, painted glasses 0.74, a known
# smile 0.44-0.47)


def warped_crop(crop: np.ndarray, points: np.ndarray, move: np.ndarray, kind: str = WARP) -> np.ndarray:
    """A square crop with its 68 ``points`` moved by ``move`` (crop pixels), its edge held."""
    size = crop.shape[0]
    anchors = border_anchors(size)
    field = wp.point_field(np.concatenate([points + move, anchors]), np.concatenate([points, anchors]),
                           (0, 0, size, size), kind=kind, nodes=max(2, size // 4))
    return wp.apply_field(np.asarray(crop, np.float32), field)


def _points(detector: FaceDetector, crop: np.ndarray) -> np.ndarray:
    """The detector's 68 points on a crop of 0..255 values (rounded as a saved crop would be)."""
    return detector.dense_in_template_box(np.clip(np.rint(crop), 0, 255).astype(np.uint8), UPSAMPLE)


def seen(detector: FaceDetector, crops: Sequence[np.ndarray], points: np.ndarray, before: np.ndarray,
         mean_shape: np.ndarray, move: np.ndarray, fit_on: Sequence[int]) -> np.ndarray:
    """(68, 2) the mean move the detector reports when each crop is warped by ``move`` (mean-shape frame);
    ``before`` are its reports on the crops as they are."""
    from .align import similarity

    out = []
    for crop, p, b in zip(crops, points, before):
        m = similarity(mean_shape, p)  # mean frame -> this face
        after = _points(detector, warped_crop(crop, p, move @ m[:, :2].T))
        out.append(fit_to(after, mean_shape, fit_on) - fit_to(b, mean_shape, fit_on))
    return np.mean(out, 0)


def colour_read(detector: FaceDetector, crops: Sequence[np.ndarray], points: np.ndarray, before: np.ndarray,
                colour, wanted: np.ndarray, mean_shape: np.ndarray, fit_on: Sequence[int]) -> float:
    """The share of ``wanted`` (the detected change, (68, 2)) the detector also reports when the crops only get
    the sets' colour change (``colour(crop, points)``): about 1 for a repaint with no shape change at all (dlib
    answers a painted cheek with moved brows and jaw), well under for a real one."""
    got = np.mean([fit_to(_points(detector, colour(c, p)), mean_shape, fit_on) - fit_to(b, mean_shape, fit_on)
                   for c, p, b in zip(crops, points, before)], 0)
    return float(np.sum(got * wanted) / max(float(np.sum(wanted * wanted)), 1e-12))


def corrected_move(detector: FaceDetector, source: Sequence[np.ndarray], source_pts: np.ndarray,
                   target: Sequence[np.ndarray], mean_shape: np.ndarray, fit_on: Sequence[int],
                   rounds: int = ROUNDS, colour=None, kept: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(68, 2) the move whose detector reading equals the sets' detected difference, and what was measured.

    A fixed-point iteration, move += (wanted − seen(move)) / gain, the gain (one number, how much of a move
    the detector reports) read off the first measurement so two corrections are enough. With ``colour`` (the
    sets' colour change, applied to a crop), a change the detector reads off the colour alone is dropped
    (``kept``: (68,) weights of the points that count)."""
    before = np.stack([_points(detector, c) for c in source])
    after = np.stack([_points(detector, c) for c in target])
    _, wanted = shape_prototype(before, after, idx=fit_on)
    info: dict = {}
    if colour is not None:
        w = (np.ones(len(wanted)) if kept is None else kept)[:, None]
        share = colour_read(detector, source[:FACES], source_pts[:FACES], before[:FACES], colour, wanted * w,
                            mean_shape, fit_on)
        keep = float(np.clip((COLOUR_READ[1] - share) / (COLOUR_READ[1] - COLOUR_READ[0]), 0.0, 1.0))
        info = {"colour_read": round(share, 3), "shape_kept": round(keep, 3)}
        if keep == 0:
            return np.zeros_like(wanted), info
        wanted = wanted * keep
    scale = np.linalg.norm(wanted, axis=1)
    big = scale > 0.25 * scale.max()  # the points that carry the change tell the gain; the rest is noise
    pick = slice(0, FACES)
    move, gain, trail = wanted.copy(), 1.0, []
    for k in range(rounds + 1):
        got = seen(detector, source[pick], source_pts[pick], before[pick], mean_shape, move, fit_on)
        if k == 0:
            gain = float(np.clip(np.sum(got[big] * move[big]) / max(np.sum(move[big] ** 2), 1e-12), 1 / LIMIT, 1.0))
        trail.append(round(float(np.linalg.norm(wanted[big] - got[big], axis=1).mean()), 3))
        if k == rounds:
            break
        move = move + (wanted - got) / gain
        cap = LIMIT * scale + 0.01 * len(source[0])  # noise on a still point is not amplified without bound
        move *= np.minimum(1.0, cap / np.maximum(np.linalg.norm(move, axis=1), 1e-12))[:, None]
    return move, {**info, "gain": round(gain, 3), "residual_px": trail, "faces": len(source[pick])}


_CACHE = PrototypeCache()  # bounded by entries and bytes, as prototype.learn's


def learn_calibrated(db, source: np.ndarray, target: np.ndarray, detector: FaceDetector, **learn_args
                     ) -> Prototype:
    """:func:`prototype.learn`, its shape change replaced by the detector-corrected one (kept in memory)."""
    proto = learn(db, source, target, **learn_args)
    if not np.any(proto.shape_delta):
        return proto
    key = hashlib.sha256(proto.digest(1.0) + repr(sorted(learn_args.items())).encode()).digest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    src, tgt = db.require_dense(source)[:SETS], db.require_dense(target)[:SETS]  # the nearest come first
    toned = proto if proto.tone is not None else learn(db, source, target, **{**learn_args, "tone": True})
    colour = None if toned.tone is None else (lambda c, p: prototype_on_crop(c, p, toned, shape=0.0, tone=1.0))
    kept = None if proto.hidden is None else 1.0 - proto.hidden
    move, info = corrected_move(detector, [np.asarray(c, np.float32) for c in db.images(src)],
                                db.dense[src].astype(np.float64), [np.asarray(c, np.float32) for c in db.images(tgt)],
                                proto.mean_shape, proto.fit_on, colour=colour, kept=kept)
    if proto.hidden is not None:
        move = move * (1.0 - proto.hidden)[:, None]
    out = Prototype(proto.size, proto.mean_shape, move, proto.tone, proto.form, proto.counts, proto.fit_on,
                    proto.hidden, {**info, "detected_max_px": round(float(np.linalg.norm(proto.shape_delta, axis=1)
                                                                                 .max()), 3)})
    _CACHE.put(key, out)
    return out
