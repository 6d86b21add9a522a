"""Dense warps from control-point displacements: moving least squares, checked never to fold.

Moving least squares (Schaefer, McPhail & Warren, ACM TOG 25(3), 2006) gives, at
every point, the rigid (or similarity) transform that best maps the control points
weighted by inverse squared distance: closed form, smooth, and the rigid kind folds
least. It is evaluated on a coarse grid (the displacements of a face edit vary over
tens of pixels) and interpolated bilinearly, which is exact enough and keeps a
megapixel photo's warp within milliseconds. A per-node weight (the face region's
taper times a selection) confines the motion; every grid cell is then checked for
folding (a bilinear cell is fold-free when the Jacobian determinant is positive at
its four corners) and the whole displacement is damped until none folds.

All maps here are *backward*: for an output pixel, where to read the input. A warp
that moves input point ``q`` to output point ``p`` is ``mls(p, q, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("rigid", "similarity")
MIN_DET = 0.2  # smallest area ratio a grid cell may keep (1 = unchanged, 0 = folded)
GRID = 64  # grid nodes across the longer side of the box


def _complex(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return pts[..., 0] + 1j * pts[..., 1]


def mls(p: np.ndarray, q: np.ndarray, points: np.ndarray, kind: str = "rigid", alpha: float = 1.0) -> np.ndarray:
    """The moving-least-squares map taking control points ``p`` (K, 2) to ``q`` (K, 2), at ``points`` (N, 2).

    Complex arithmetic: a 2-D similarity is z -> c·z + t, so the weighted least-squares fit at each point is one
    complex ratio (the rigid kind keeps only its angle), and its sums expand into matrix products with the
    weights: Σ w·conj(p − p*)(q − q*) = w·(conj(p) q) − Σw·conj(p*) q*.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown MLS kind {kind!r}")
    shape = np.shape(points)
    origin = np.asarray(p, np.float64).mean(0)  # centred coordinates keep the expanded sums well conditioned
    pc, qc = _complex(np.asarray(p) - origin), _complex(np.asarray(q) - origin)
    pts = np.asarray(points, np.float64).reshape(-1, 2) - origin
    dx = pts[:, 0:1] - pc.real[None, :]
    dy = pts[:, 1:2] - pc.imag[None, :]
    w = 1.0 / ((dx * dx + dy * dy) ** alpha + 1e-9)  # (N, K)
    sw = w.sum(1)

    def wsum(v: np.ndarray) -> np.ndarray:  # w @ v without BLAS, whose threads stall on a busy machine
        return (w * v.real[None]).sum(1) + 1j * (w * v.imag[None]).sum(1) if np.iscomplexobj(v) else (w * v).sum(1)

    ps = wsum(pc) / sw
    qs = wsum(qc) / sw
    c = wsum(np.conj(pc) * qc) - sw * np.conj(ps) * qs
    if kind == "similarity":
        c = c / np.maximum(wsum(np.abs(pc) ** 2) - sw * np.abs(ps) ** 2, 1e-12)
    else:
        c = c / np.maximum(np.abs(c), 1e-12)
    f = c * (pts[:, 0] + 1j * pts[:, 1] - ps) + qs
    return (np.stack([f.real, f.imag], -1) + origin).reshape(shape)


@dataclass
class Field:
    """A backward displacement (read the input at x + d(x)) on a coarse grid over a box of the image."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    xs: np.ndarray  # (gw,) grid columns in image pixels, xs[0] = x0, xs[-1] = x1 − 1
    ys: np.ndarray  # (gh,)
    d: np.ndarray  # (gh, gw, 2) displacement (dx, dy) in pixels

    @property
    def moves(self) -> bool:
        return bool(np.any(self.d != 0))

    def scaled(self, s: float) -> Field:
        return Field(self.box, self.xs, self.ys, self.d * s)


def grid_for(box: tuple[int, int, int, int], nodes: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Grid node coordinates covering ``box`` end to end, at most ``nodes`` along its longer side."""
    x0, y0, x1, y1 = box
    step = max(1.0, max(x1 - x0, y1 - y0) / (nodes - 1))
    gw = max(2, int(np.ceil((x1 - 1 - x0) / step)) + 1)
    gh = max(2, int(np.ceil((y1 - 1 - y0) / step)) + 1)
    return np.linspace(x0, x1 - 1, gw), np.linspace(y0, y1 - 1, gh)


def mls_field(p_out: np.ndarray, p_in: np.ndarray, box: tuple[int, int, int, int], weight=None,
              kind: str = "rigid", nodes: int = GRID) -> Field:
    """The backward field of the warp moving ``p_in`` to ``p_out``, over ``box``, times ``weight``.

    ``weight(x, y) -> (gh, gw)`` in 0..1 (a callable on the grid's coordinates) confines the motion; where it is
    0 the field is exactly 0.
    """
    xs, ys = grid_for(box, nodes)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy], -1)
    d = mls(p_out, p_in, pts.reshape(-1, 2), kind).reshape(pts.shape) - pts
    if weight is not None:
        d *= np.asarray(weight(gx, gy), np.float64)[..., None]
    return Field(box, xs, ys, d)


def tps_field(p_out: np.ndarray, p_in: np.ndarray, box: tuple[int, int, int, int], weight=None,
              nodes: int = GRID) -> Field:
    """As :func:`mls_field`, by a thin-plate spline through the control points (Bookstein's landmark warp).

    Measured on a known smile (examples warped by a known move, dlib re-detecting): MLS concentrates a
    point's move around it, so dlib saw 0.51–0.58 of it; the spline spreads it over the cheeks as skin
    does and dlib saw 0.70–0.77, as much as it sees of the true move. Folding is checked by :func:`damp`.
    """
    from scipy.interpolate import RBFInterpolator

    xs, ys = grid_for(box, nodes)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy], -1).reshape(-1, 2)
    p_out, p_in = np.asarray(p_out, np.float64), np.asarray(p_in, np.float64)
    origin, scale = p_out.mean(0), max(float(np.ptp(p_out, 0).max()), 1.0)  # unit-sized: well conditioned
    try:
        spline = RBFInterpolator((p_out - origin) / scale, (p_in - p_out) / scale, kernel="thin_plate_spline")
    except np.linalg.LinAlgError:  # two control points on one spot: a touch of smoothing separates them
        spline = RBFInterpolator((p_out - origin) / scale, (p_in - p_out) / scale, kernel="thin_plate_spline",
                                 smoothing=1e-6)
    d = (spline((pts - origin) / scale) * scale).reshape(gx.shape + (2,))
    if weight is not None:
        d *= np.asarray(weight(gx, gy), np.float64)[..., None]
    return Field(box, xs, ys, d)


def point_field(p_out: np.ndarray, p_in: np.ndarray, box: tuple[int, int, int, int], weight=None,
                kind: str = "tps", nodes: int = GRID) -> Field:
    """The backward field moving control points ``p_in`` to ``p_out``: a thin-plate spline or an MLS kind."""
    if kind == "tps":
        return tps_field(p_out, p_in, box, weight, nodes)
    return mls_field(p_out, p_in, box, weight, kind, nodes)


def min_det(field: Field) -> float:
    """Smallest area ratio of the backward map over the grid's cells (≤ 0: it folds somewhere)."""
    gx, gy = np.meshgrid(field.xs, field.ys)
    g = np.stack([gx, gy], -1) + field.d
    ex = g[:, 1:] - g[:, :-1]  # (gh, gw−1, 2)
    ey = g[1:, :] - g[:-1, :]  # (gh−1, gw, 2)
    hx = np.diff(field.xs)[None, :]
    hy = np.diff(field.ys)[:, None]

    def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    area = hx * hy
    dets = [cross(ex[:-1], ey[:, :-1]), cross(ex[:-1], ey[:, 1:]), cross(ex[1:], ey[:, :-1]), cross(ex[1:], ey[:, 1:])]
    return float(min(np.min(dt / area) for dt in dets))


def damp(field: Field, floor: float = MIN_DET, steps: int = 12) -> tuple[Field, float]:
    """The field scaled down (by bisection) until no cell folds or shrinks below ``floor``; (field, scale)."""
    if not field.moves or min_det(field) > floor:
        return field, 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if min_det(field.scaled(mid)) > floor:
            lo = mid
        else:
            hi = mid
    return field.scaled(lo), lo


def _lerp_index(nodes: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For pixels start..start+count−1: the grid cell each lies in and its fraction across it (float32)."""
    x = np.arange(start, start + count, dtype=np.float64)
    i = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    t = np.clip((x - nodes[i]) / (nodes[i + 1] - nodes[i]), 0.0, 1.0)
    return i, t.astype(np.float32)


def dense(field: Field, values: np.ndarray | None = None) -> np.ndarray:
    """The field (or other ``values`` on its grid, (gh, gw, C)) at every pixel of its box, (h, w, C) float32:
    bilinear, separably (along x on the grid's rows, then along y), with no matrix library call."""
    x0, y0, x1, y1 = field.box
    ix, tx = _lerp_index(field.xs, x0, x1 - x0)
    iy, ty = _lerp_index(field.ys, y0, y1 - y0)
    v = (field.d if values is None else values).astype(np.float32)
    rows = v[:, ix] + (v[:, ix + 1] - v[:, ix]) * tx[None, :, None]  # (gh, w, C)
    top = np.take(rows, iy, axis=0)
    return top + (np.take(rows, iy + 1, axis=0) - top) * ty[:, None, None]


def bilinear(src: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``src`` (H, W, C) float32 read at fractional (x, y) arrays, edges replicated (one gather per corner).

    Where x and y are whole numbers the result is the pixel itself, bit for bit.
    """
    h, w = src.shape[:2]
    x = np.clip(x, 0, w - 1).astype(np.float32)
    y = np.clip(y, 0, h - 1).astype(np.float32)
    x0 = np.minimum(x.astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(y.astype(np.int64), max(h - 2, 0))
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    flat = src.reshape(h * w, -1)
    i = y0 * w + x0
    dx, dy = (1 if w > 1 else 0), (w if h > 1 else 0)
    a, b, c, d = (np.take(flat, j, axis=0) for j in (i, i + dx, i + dy, i + dy + dx))  # take: a fast gather
    top = a + (b - a) * fx
    return top + (c + (d - c) * fx - top) * fy


def apply_field(image: np.ndarray, field: Field) -> np.ndarray:
    """``image`` (H, W, C) float32 warped by a backward field; pixels that do not move are copied bit for bit."""
    out = np.array(image, np.float32, copy=True)
    if not field.moves:
        return out
    x0, y0, x1, y1 = field.box
    d = dense(field)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = bilinear(np.asarray(image, np.float32), xx + d[..., 0], yy + d[..., 1])
    return out


def bicubic(src: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``src`` (H, W, C) float32 read at fractional (x, y) by bicubic convolution, edges replicated.

    For the photo itself: a bilinear read softens every pixel a warp moves by a fraction (the whole face
    under a smile), a cubic one keeps its detail. Torch's sampler (the engine's own dependency) is fast."""
    return sample(src, x, y, "bicubic")


def sample(src: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    """``src`` (H, W, C) read at fractional (x, y) by torch's sampler (``mode`` "bilinear" or "bicubic"), edges
    replicated: a fast read of many pixels (a tone map at every pixel of a 1000-px face)."""
    import torch
    import torch.nn.functional as F

    h, w = src.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(src, np.float32)).permute(2, 0, 1)[None]
    gx = torch.from_numpy(np.asarray(x, np.float32)) * (2.0 / max(w - 1, 1)) - 1.0
    gy = torch.from_numpy(np.asarray(y, np.float32)) * (2.0 / max(h - 1, 1)) - 1.0
    out = F.grid_sample(img, torch.stack([gx, gy], -1)[None], mode=mode, padding_mode="border",
                        align_corners=True)
    return out[0].permute(1, 2, 0).numpy()
