"""Canonical face frame: a similarity transform from five landmarks to a fixed template.

Photo and neighbours are all mapped into one square frame of the database's
resolution (eyes level, fixed eye spacing), the edit happens there, and only
the *change* is warped back to the photo at full resolution, so pixels the
edit leaves alone keep their original detail. The template puts the outer eye
corners 0.35·S apart at 40% height and the nose base at 58%, which leaves the
chin (~84%) and the forehead inside the square.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .landmarks import Face

# (x, y) in units of the crop side, in the 5-point order (see landmarks.POINT_NAMES).
TEMPLATE = np.array([
    [0.675, 0.40],
    [0.575, 0.40],
    [0.325, 0.40],
    [0.425, 0.40],
    [0.500, 0.58],
])
# Face region in the crop: an ellipse around face, beard and forehead (centre, radii; units of the side).
REGION_CENTRE = (0.5, 0.53)
REGION_RADII = (0.40, 0.49)


def template(size: int) -> np.ndarray:
    """Template landmarks in pixel coordinates of a size×size crop (pixel centres at integers)."""
    return TEMPLATE * size - 0.5


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 matrix of the least-squares similarity (scale, rotation, shift; no reflection) src -> dst (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = (a ** 2).sum() / len(a)
    if var <= 1e-12:
        raise InputError("Landmarks are degenerate (all at one point).", "Check the detected face.")
    cov = b.T @ a / len(a)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1
    r = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / var
    t = md - scale * r @ ms
    return np.hstack([scale * r, t[:, None]])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points (x, y) through a 2×3 matrix."""
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def rescale(m: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """The same photo -> crop mapping for a crop of another side (pixel centres at integers)."""
    f = to_size / from_size
    out = np.array(m, np.float64) * f
    out[:, 2] = f * (m[:, 2] + 0.5) - 0.5
    return out


WORK_MULTIPLE = 16  # VGG pools four times: sides that divide by 16 keep every layer's grid aligned


def working_size(m: np.ndarray, size: int, cap: int | None) -> int:
    """The side to edit a face at: as many pixels as the photo has across the crop window, in [size, cap].

    ``m`` maps the photo to a size×size crop. Editing at the photo's own scale keeps the change as
    sharp as the photo; above ``cap`` (a device's budget) the change is resampled back up.
    """
    if not cap or cap <= size:
        return size
    photo_px = size / np.sqrt(abs(np.linalg.det(m[:, :2])))  # photo pixels across the crop window
    return max(size, int(min(cap, photo_px) // WORK_MULTIPLE * WORK_MULTIPLE))


def _sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    """Sample (H, W[, C]) at fractional (rows, cols), replicating edges."""
    if image.ndim == 2:
        return ndimage.map_coordinates(image, [rows, cols], order=order, mode="nearest")
    return np.stack([ndimage.map_coordinates(image[:, :, c], [rows, cols], order=order, mode="nearest")
                     for c in range(image.shape[2])], axis=-1)


def warp_to_crop(image: np.ndarray, m: np.ndarray, size: int | tuple[int, int], order: int = 1) -> np.ndarray:
    """The crop (size×size) whose pixel q shows the photo at m⁻¹·q; anti-aliased when shrinking.

    ``image`` is float (H, W[, C]). Only the photo region under the crop is
    touched, so this stays cheap on large photos.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    inv = invert(m)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float64)
    px = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    py = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    # photo pixels per crop pixel, per axis; blur the photo first when shrinking (σ = (f − 1)/2, as skimage does)
    fx, fy = np.hypot(inv[0, 0], inv[1, 0]), np.hypot(inv[0, 1], inv[1, 1])
    sigma = max(0.0, (max(fx, fy) - 1.0) / 2.0)
    h, w = image.shape[:2]
    pad = int(np.ceil(3 * sigma)) + 2
    x0 = int(np.clip(np.floor(px.min()) - pad, 0, w - 1))
    x1 = int(np.clip(np.ceil(px.max()) + pad + 1, x0 + 1, w))
    y0 = int(np.clip(np.floor(py.min()) - pad, 0, h - 1))
    y1 = int(np.clip(np.ceil(py.max()) + pad + 1, y0 + 1, h))
    region = np.asarray(image[y0:y1, x0:x1], np.float32)
    if sigma > 0.3:
        sig = (sigma, sigma) + ((0.0,) if region.ndim == 3 else ())
        region = ndimage.gaussian_filter(region, sig, mode="nearest")
    return _sample(region, py - y0, px - x0, order).astype(np.float32)


def warp_from_crop(crop: np.ndarray, m: np.ndarray, shape: tuple[int, int], box: tuple[int, int, int, int],
                   order: int = 3) -> np.ndarray:
    """Crop content back in the photo frame, only within ``box`` (x0, y0, x1, y1); zeros elsewhere.

    Cubic interpolation by default: the crop is usually smaller than the face
    in the photo, and bilinear upsampling would show its pixel grid.
    """
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros((h, w) + crop.shape[2:], np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    cx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    cy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    out[y0:y1, x0:x1] = _sample(np.asarray(crop, np.float32), cy, cx, order)
    return out


def region_in_crop(size: int | tuple[int, int], ellipse: bool = True) -> np.ndarray:
    """Where an edit may act inside the crop (float 0/1)."""
    sh, sw = (size, size) if isinstance(size, int) else size
    if not ellipse:
        return np.ones((sh, sw), np.float32)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float64)
    u = ((xx + 0.5) / sw - REGION_CENTRE[0]) / REGION_RADII[0]
    v = ((yy + 0.5) / sh - REGION_CENTRE[1]) / REGION_RADII[1]
    return (u * u + v * v <= 1.0).astype(np.float32)


def region_box(m: np.ndarray, size: int | tuple[int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) in the photo, clipped to it, that holds the whole size×size crop."""
    sh, sw = (size, size) if isinstance(size, int) else size
    h, w = shape
    corners = apply(invert(m), np.array([[-0.5, -0.5], [sw - 0.5, -0.5], [-0.5, sh - 0.5], [sw - 0.5, sh - 0.5]]))
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, w))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, h))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, 0, h))
    return x0, y0, x1, y1


def region_in_photo(m: np.ndarray, size: int | tuple[int, int], shape: tuple[int, int],
                    ellipse: bool = True) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The crop's edit region mapped exactly into the photo (float 0/1 (H, W)) and its bounding box."""
    sh, sw = (size, size) if isinstance(size, int) else size
    x0, y0, x1, y1 = region_box(m, size, shape)
    out = np.zeros(shape, np.float32)
    if x1 > x0 and y1 > y0:
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        cx = (m[0, 0] * xx + m[0, 1] * yy + m[0, 2] + 0.5) / sw
        cy = (m[1, 0] * xx + m[1, 1] * yy + m[1, 2] + 0.5) / sh
        if ellipse:
            u = (cx - REGION_CENTRE[0]) / REGION_RADII[0]
            v = (cy - REGION_CENTRE[1]) / REGION_RADII[1]
            inside = u * u + v * v <= 1.0
        else:
            inside = (cx >= 0) & (cx <= 1) & (cy >= 0) & (cy <= 1)
        out[y0:y1, x0:x1] = inside
    return out, (x0, y0, x1, y1)


@dataclass
class AlignedFace:
    """A photo's face in the canonical frame, and how to get back."""

    crop: np.ndarray  # (S, S, 3) float32 0..255
    matrix: np.ndarray  # 2×3, photo -> crop
    size: int
    landmarks: np.ndarray | None  # (5, 2) in the photo; None when the whole image was used unaligned
    face: Face | None
    faces: list[Face]
    choice: str  # which face was used and why (or "whole image, unaligned")

    @property
    def aligned(self) -> bool:
        return self.face is not None

    @property
    def crop_landmarks(self) -> np.ndarray:
        """Landmarks in crop pixels (the template itself when unaligned)."""
        return apply(self.matrix, self.landmarks) if self.landmarks is not None else template(self.size)

    def resized(self, rgb: np.ndarray, size: int) -> AlignedFace:
        """The same face in a crop of another side, sampled afresh from the photo (float RGB 0..255)."""
        if size == self.size:
            return self
        m = rescale(self.matrix, self.size, size)
        return replace(self, crop=warp_to_crop(rgb, m, size), matrix=m, size=size)

    def report(self) -> dict:
        return {"aligned": self.aligned, "choice": self.choice, "faces": [f.as_dict() for f in self.faces],
                "size": self.size, "matrix": np.round(self.matrix, 6).tolist()}


def face_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Photo -> crop similarity for a face's five landmarks."""
    return similarity(landmarks, template(size))


def whole_matrix(height: int, width: int, size: int) -> np.ndarray:
    """Photo -> crop for the unaligned fall-back: the whole image squeezed into the square (per-axis scale)."""
    return np.array([[size / width, 0.0, 0.5 * size / width - 0.5],
                     [0.0, size / height, 0.5 * size / height - 0.5]])


def align_rgb(rgb: np.ndarray, face: Face, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(crop float32 0..255, matrix) for one detected face of a float RGB 0..255 photo."""
    m = face_matrix(face.landmarks, size)
    return warp_to_crop(rgb, m, size), m
