"""Known-truth example sets for shape and tone edits (the prototype tests and ``dfi bench --quality``).

Examples are jittered crops of scikit-image's astronaut; the held-out photo is matplotlib's grace_hopper.
Shape: each "with" example is a "without" one warped by a known smooth field that raises and widens the
mouth corners by ~8 % of the eye distance (the lips follow, nose, eyes and jaw stay).
Tone: a dark patch painted on the cheek, its darkness and position
varying between examples. Each truth can be drawn on grace_hopper the same way, with the sets' mean values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .samples import portrait

CORNERS = (48, 54)
LIFT = 0.08  # mouth-corner move, up and outward each, as a share of the eye distance


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(portrait("astronaut"))


def grace() -> np.ndarray:
    return np.ascontiguousarray(portrait("grace_hopper"))


def detector():
    from dfi_engine.faces.landmarks import FaceDetector

    return FaceDetector()


def dense_points(det, image: np.ndarray) -> np.ndarray:
    """The 68 points of the largest face."""
    faces = det.detect(image)
    assert faces, "no face found"
    return det.dense(image, max(faces, key=lambda f: f.area))


def eye_distance(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0)))


def face_axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors across the face (image left to right eye) and up it."""
    across = pts[42:48].mean(0) - pts[36:42].mean(0)
    across /= np.linalg.norm(across)
    return across, np.array([across[1], -across[0]])  # image y grows downwards


def smile_moves(pts: np.ndarray, share: float = LIFT) -> np.ndarray:
    """(68, 2) landmark moves of a smile: each mouth point t (−1 at corner 48, +1 at corner 54, along the face)
    moves outward by share·t and up by share·t² eye distances; nothing else moves."""
    across, up = face_axes(pts)
    e = eye_distance(pts)
    centre = 0.5 * (pts[48] + pts[54])
    half = 0.5 * np.linalg.norm(pts[54] - pts[48])
    t = np.clip((pts[48:68] - centre) @ across / half, -1.0, 1.0)
    moves = np.zeros((68, 2))
    moves[48:68] = share * e * (t[:, None] * across + (t ** 2)[:, None] * up)
    return moves


def corner_moves(pts: np.ndarray, share: float = LIFT) -> np.ndarray:
    """(2, 2) moves of the mouth corners 48 and 54 (up and outward by ``share`` of the eye distance each)."""
    return smile_moves(pts, share)[list(CORNERS)]


def truth_warp(image: np.ndarray, pts: np.ndarray, share: float = LIFT) -> np.ndarray:
    """``image`` with its 68 points moved by :func:`smile_moves`: a thin-plate spline through the landmarks (the
    others and the image's edge held), inverted by fixed-point iteration. Not the engine's warp (MLS)."""
    from scipy.interpolate import RBFInterpolator

    h, w = image.shape[:2]
    edge = np.array([(x, y) for x in np.linspace(0, w - 1, 9) for y in (0, h - 1)]
                    + [(x, y) for y in np.linspace(0, h - 1, 9)[1:-1] for x in (0, w - 1)], np.float64)
    ctrl = np.concatenate([pts, edge])
    moves = np.concatenate([smile_moves(pts, share), np.zeros_like(edge)])
    step = 4
    gy, gx = np.mgrid[0:h + step:step, 0:w + step:step].astype(np.float64)
    field = RBFInterpolator(ctrl, moves, kernel="thin_plate_spline")(np.stack([gx.ravel(), gy.ravel()], 1))
    fx, fy = (field[:, k].reshape(gx.shape) for k in range(2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def forward(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = [y / step, x / step]
        return (ndimage.map_coordinates(fx, at, order=1, mode="nearest"),
                ndimage.map_coordinates(fy, at, order=1, mode="nearest"))

    sx, sy = xx.copy(), yy.copy()
    for _ in range(20):  # source s with s + f(s) = output pixel
        dx, dy = forward(sx, sy)
        sx, sy = xx - dx, yy - dy
    out = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float64), [sy, sx], order=3, mode="nearest")
                    for c in range(3)], -1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def origin_reader(photo_shape: tuple[int, int], apply):
    """f(photo point) -> where an edit took that point's pixel from: a coordinate image edited by ``apply``
    (image -> image, the same warp), read at the point. Exact to a fraction of a pixel, where re-detecting
    landmarks is not (dlib answers in whole pixels)."""
    h, w = photo_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = apply(np.stack([xx, yy, np.zeros_like(xx)], -1) / max(h, w)) * max(h, w)

    def origin(p: np.ndarray) -> np.ndarray:
        tx, ty = np.rint(p).astype(int)
        return warped[ty, tx, :2] + (p - [tx, ty])  # one pixel's neighbourhood moves almost rigidly

    return origin


def jitter_crops(image: np.ndarray, pts: np.ndarray, n: int, seed: int, side: int = 256) -> list[np.ndarray]:
    """``n`` photo-like crops around the face: shifted, scaled and rotated a little, resized to ``side``."""
    rng = np.random.default_rng(seed)
    centre = pts.mean(0)
    e = eye_distance(pts)
    out = []
    for _ in range(n):
        half = e * rng.uniform(1.9, 2.3)
        c = centre + rng.uniform(-0.15, 0.15, 2) * e
        angle = rng.uniform(-5, 5)
        im = Image.fromarray(image).rotate(angle, resample=Image.BICUBIC, center=tuple(c))
        box = tuple(int(round(v)) for v in (c[0] - half, c[1] - half, c[0] + half, c[1] + half))
        out.append(np.asarray(im.crop(box).resize((side, side), Image.LANCZOS)))
    return out


def patch_mask(shape: tuple[int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    """Soft round patch (0..1), 2 px edge."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(xx - centre[0], yy - centre[1])
    return np.clip((radius - r) / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)


PATCH_COLOUR = np.array([40.0, 28.0, 30.0])


def patch_place(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius of the painted patch: on the image-left cheek, clear of the eye, nose and mouth (paint
    over a landmark moves dlib's points, which is not what the tone test is about)."""
    return pts[[1, 2, 3, 31, 40, 41, 48]].mean(0), 0.22 * eye_distance(pts)


def paint_patch(image: np.ndarray, pts: np.ndarray, opacity: float, offset=(0.0, 0.0)) -> np.ndarray:
    """``image`` with the dark patch blended in at ``opacity``, moved by ``offset`` eye distances."""
    centre, radius = patch_place(pts)
    centre = centre + np.asarray(offset) * eye_distance(pts)
    m = patch_mask(image.shape[:2], centre, radius)[..., None] * opacity
    out = image.astype(np.float64) * (1 - m) + PATCH_COLOUR * m
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    return folder


def sheet(path: str, images: list[np.ndarray], box: tuple[int, int, int, int] | None = None, zoom: int = 2) -> None:
    """A PNG of images side by side (cut to ``box`` and enlarged), for looking at."""
    tiles = []
    for im in images:
        a = np.clip(np.asarray(im, np.float64), 0, 255).astype(np.uint8)
        if box is not None:
            a = a[box[1]:box[3], box[0]:box[2]]
        tiles.append(np.kron(a, np.ones((zoom, zoom, 1), np.uint8)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 1)).save(path)


def smile_set(root: Path, det, n: int = 12, seed: int = 5) -> dict:
    """A two-folder database under ``root``: ``n`` jittered astronaut crops, and each warped by a known smile
    (LIFT ± 20 %, varied between examples as real smiles vary). Returns the database and what is known."""
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    astro = astronaut()
    without = jitter_crops(astro, dense_points(det, astro), n, seed=1)
    shares = LIFT * (1 + np.random.default_rng(seed).uniform(-0.2, 0.2, len(without)))
    pts = [dense_points(det, im) for im in without]
    with_ = [truth_warp(im, p, s) for im, p, s in zip(without, pts, shares)]
    measured = np.stack([dense_points(det, im) - p for im, p in zip(with_, pts)])  # what dlib sees, per pair
    plan = dbm.plan_from_folders(write(root / "with", with_), write(root / "without", without), "smile_x")
    build(root / "db", plan, 128, progress=False)
    return {"db": dbm.Database(root / "db"), "shares": shares, "pts": np.stack(pts), "measured": measured,
            "column": "smile_x"}


def patch_set(root: Path, det, n: int = 12, seed: int = 7) -> dict:
    """``n`` jittered astronaut crops, and each with a dark patch (opacity 0.6–0.9, moved ±6 % of the eye
    distance: not one fixed paint)."""
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    astro = astronaut()
    rng = np.random.default_rng(seed)
    without = jitter_crops(astro, dense_points(det, astro), n, seed=1)
    opacity = rng.uniform(0.6, 0.9, len(without))
    offsets = rng.uniform(-0.06, 0.06, (len(without), 2))
    with_ = [paint_patch(im, dense_points(det, im), o, off) for im, o, off in zip(without, opacity, offsets)]
    plan = dbm.plan_from_folders(write(root / "with", with_), write(root / "without", without), "dark_patch")
    build(root / "db", plan, 128, progress=False)
    return {"db": dbm.Database(root / "db"), "opacity": float(opacity.mean()), "column": "dark_patch"}


def sets(db, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) indices of a two-folder database."""
    col = db.column(column)
    return np.flatnonzero(col < 0), np.flatnonzero(col > 0)
