"""Applying a shape and tone prototype to a photo, at the photo's own resolution, without optimisation.

The prototype's landmark change (canonical frame) is mapped into the photo through
the face's alignment, added to the photo's own 68 points, and the photo is warped
by moving least squares with the face region's edge held still; the tone map is
carried from the prototype's mean shape onto the edited face by a second MLS map
and applied as a per-channel ratio (or added, for an additive prototype). Both are
evaluated on one coarse grid over the face region and interpolated, so the cost is
a few passes over the face's pixels. Every pixel outside the face region (and the
selection, if any) is the input's, bit for bit; strength 0 returns the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..images import merge_image, split_image, to_mask
from ..postprocess import compose, feather
from . import align as al
from . import warp as wp
from .prototype import Prototype, border_anchors
from .tone import apply_tone

TAPER = (0.72, 0.95)  # elliptical radius (1 = the face region's edge) where the edit starts to fade, and is gone
ANCHORS = 32  # fixed points on the region's edge
SHAPE_WARP = "tps"  # how the landmarks' move is spread: "tps" (as skin follows) or an MLS kind (wp.KINDS)


@dataclass
class ShapeToneResult:
    image: np.ndarray  # the photo in its own layout
    landmarks: np.ndarray  # (68, 2) the edited face's points in the photo (where the warp put them)
    info: dict = field(default_factory=dict)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def region_radius(m: np.ndarray, size: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elliptical radius of photo points in the face region of a size×size crop (1 on its edge)."""
    cx = (m[0, 0] * x + m[0, 1] * y + m[0, 2] + 0.5) / size
    cy = (m[1, 0] * x + m[1, 1] * y + m[1, 2] + 0.5) / size
    u = (cx - al.REGION_CENTRE[0]) / al.REGION_RADII[0]
    v = (cy - al.REGION_CENTRE[1]) / al.REGION_RADII[1]
    return np.sqrt(u * u + v * v)


def edge_anchors(m: np.ndarray, size: int, n: int = ANCHORS) -> np.ndarray:
    """``n`` points on the face region's edge, in photo pixels."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    cx = (al.REGION_CENTRE[0] + al.REGION_RADII[0] * np.cos(a)) * size - 0.5
    cy = (al.REGION_CENTRE[1] + al.REGION_RADII[1] * np.sin(a)) * size - 0.5
    return al.apply(al.invert(m), np.stack([cx, cy], 1))


def _grid_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return wp.bilinear(np.asarray(image, np.float32), x, y)


def apply_prototype(photo: np.ndarray, face: al.AlignedFace, dense: np.ndarray, proto: Prototype,
                    shape: float = 1.0, tone: float = 1.0, mask: np.ndarray | None = None,
                    max_pixels: int = 50_000_000, feather_px: float | None = None) -> ShapeToneResult:
    """``photo`` moved ``shape``×(target − source) in landmark shape and ``tone``×(the tone change).

    ``face`` is the photo's alignment (any crop size), ``dense`` its 68 points in photo pixels, ``mask`` the
    user's selection (soft edges feathered inward by ``feather_px``, default 6% of the face).
    """
    if (shape == 0 or not np.any(proto.shape_delta)) and (tone == 0 or proto.tone is None):
        return ShapeToneResult(np.array(photo, copy=True), np.asarray(dense, np.float64).copy(),
                               {"shape": 0.0, "tone": 0.0})
    rgb, alpha, spec = split_image(photo, max_pixels)
    size = proto.size
    m = al.rescale(face.matrix, face.size, size)  # photo -> the prototype's crop
    box = al.region_box(m, size, (spec.height, spec.width))
    inv_lin = al.invert(m)[:, :2]
    pts = np.asarray(dense, np.float64)
    moved = pts + (shape * proto.shape_delta) @ inv_lin.T
    anchors = edge_anchors(m, size)

    user_w = None
    if mask is not None:
        user = to_mask(mask, spec.height, spec.width)
        x0, y0, x1, y1 = box
        face_px = (x1 - x0 + y1 - y0) / 2.0
        user_w = np.zeros_like(user)
        user_w[y0:y1, x0:x1] = feather(user[y0:y1, x0:x1], 0.06 * face_px if feather_px is None else feather_px)

    def weight(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        r = region_radius(m, size, gx, gy)
        w = _smoothstep((TAPER[1] - r) / (TAPER[1] - TAPER[0]))
        if user_w is not None:
            w = w * _grid_sample(user_w[..., None], gx, gy)[..., 0]
        return w

    fld = wp.point_field(np.concatenate([moved, anchors]), np.concatenate([pts, anchors]), box, weight, SHAPE_WARP)
    fld, damping = wp.damp(fld)
    info = {"shape": float(shape) * damping, "damped": damping < 1.0, "min_det": round(wp.min_det(fld), 4),
            "tone": 0.0, "box": list(box)}
    gx, gy = np.meshgrid(fld.xs, fld.ys)
    gw = weight(gx, gy)

    tone_nodes = None
    if tone != 0 and proto.tone is not None:
        # grid node (output, edited shape) -> crop coordinates -> the mean shape's frame -> tone map
        crop_nodes = al.apply(m, np.stack([gx.ravel(), gy.ravel()], 1))
        edited_crop = al.apply(m, pts) + damping * shape * proto.shape_delta
        src = wp.mls(edited_crop, proto.mean_shape, crop_nodes).reshape(gx.shape + (2,))
        # the map's coordinates and weight are smooth, so the grid carries them; the map itself is read at
        # every pixel (read at the nodes, a painted edge would be spread over a grid cell)
        tone_nodes = np.concatenate([src, (tone * gw)[..., None]], -1)
        info["tone"] = float(tone)

    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    d = wp.dense(fld)
    # the field is still at the box's edge, so the box alone is read (a small gather is a fast one)
    out = wp.bicubic(np.asarray(rgb[y0:y1, x0:x1], np.float32), xx + d[..., 0], yy + d[..., 1])
    changed = np.any(d != 0, axis=-1)
    if tone_nodes is not None:
        at = wp.dense(fld, tone_nodes)
        t = wp.sample(proto.tone, at[..., 0], at[..., 1]) * at[..., 2:]
        out = apply_tone(out, t, proto.form)
        changed |= np.any(t != 0, axis=-1)
    # only the box is laid back into the input's format; every pixel that did not change is the input's own
    sub = merge_image(out, spec, None if alpha is None else alpha[y0:y1, x0:x1])
    image = np.array(photo, copy=True)
    image[y0:y1, x0:x1] = compose(photo[y0:y1, x0:x1], sub, changed.astype(np.float32))
    # the edited points: where the (damped) warp sends the photo's points
    info["changed_px"] = int(changed.sum())
    return ShapeToneResult(image, pts + damping * (moved - pts), info)


def prototype_on_crop(crop: np.ndarray, points: np.ndarray, proto: Prototype, shape: float = 1.0,
                      tone: float = 1.0) -> np.ndarray:
    """A database crop (S, S, 3, in the prototype's frame) moved by the prototype: ``points`` its 68 landmarks.

    Used on the source neighbours before DFI's vector is taken, so the texture component learns only what
    shape and tone do not already explain (no dark rim painted again over a tone that is already dark)."""
    if not np.all(np.isfinite(points)):
        return crop
    size = proto.size
    anchors = border_anchors(size)
    moved = points + shape * proto.shape_delta
    out = np.asarray(crop, np.float32)
    if shape and np.any(proto.shape_delta):
        out = wp.apply_field(out, wp.point_field(np.concatenate([moved, anchors]), np.concatenate([points, anchors]),
                                                 (0, 0, size, size), kind=SHAPE_WARP, nodes=max(2, size // 4)))
    if tone and proto.tone is not None:
        m = al.similarity(proto.mean_shape, moved)  # the mean frame -> this face, for the crop's edge
        f = wp.mls_field(np.concatenate([moved, anchors]), np.concatenate([proto.mean_shape, al.apply(al.invert(m),
                         anchors)]), (0, 0, size, size), nodes=max(2, size // 2))
        t = wp.apply_field(proto.tone, f)
        out = apply_tone(out, tone * t, proto.form)
    return np.clip(out, 0, 255)
