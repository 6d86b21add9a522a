"""Real portraits that ship with installed packages, and an attribute with a known truth painted on them.

Used by ``dfi demo``, ``dfi bench --quality`` and the real-feature tests, so the
three look at the same thing. The portraits: scikit-image's astronaut (public
domain, NASA) and matplotlib's grace_hopper (public domain, US Navy). The
painted attribute, "dark glasses": two near-black lenses and a bridge at the
canonical eye positions of the aligned face frame. Its *source* set is a few
jittered crops (shift, scale, rotation, flip, exposure) of one portrait, its
*target* set the same crops with the glasses painted, so the edit applied to the
*other* portrait has a truth to measure against: that portrait with the glasses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

PORTRAITS = ("astronaut", "grace_hopper")
LENS_COLOUR = (25.0, 22.0, 30.0)


class SampleUnavailable(Exception):
    """A sample portrait's package is missing; the message says which to install."""


def portrait(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    if name == "astronaut":
        try:
            from skimage import data
        except ImportError:
            msg = "The astronaut portrait comes with scikit-image: pip install scikit-image"
            raise SampleUnavailable(msg) from None
        return np.ascontiguousarray(data.astronaut())
    if name == "grace_hopper":
        try:
            import matplotlib
        except ImportError:
            raise SampleUnavailable("The grace_hopper portrait comes with matplotlib: pip install matplotlib") from None
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    raise KeyError(name)


def aligned_portrait(name: str, size: int) -> np.ndarray:
    """The portrait's face in the canonical frame (uint8 RGB, size×size), via dlib's 5 landmarks.

    uint8 like a user's photo: the engine reads float images as 0..1.
    """
    from dfi_engine.faces.pipeline import align_photo

    return np.clip(align_photo(portrait(name), size).crop, 0, 255).round().astype(np.uint8)


def glasses_mask(size: int) -> np.ndarray:
    """Soft (0..1) mask of the painted glasses in the canonical frame (eyes at 37.5% / 62.5%, 40% height)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    m = np.zeros((size, size), np.float32)
    for cx in (0.375, 0.625):
        d = ((xx - cx) / 0.105) ** 2 + ((yy - 0.405) / 0.07) ** 2
        m = np.maximum(m, np.clip((1 - d) * 8, 0, 1))
    bridge = (np.abs(yy - 0.395) < 0.012) & (xx > 0.47) & (xx < 0.53)
    return np.maximum(m, bridge.astype(np.float32))


def paint_glasses(image: np.ndarray) -> np.ndarray:
    """Float32 0..255 copy of ``image`` (0..255) with the glasses."""
    m = glasses_mask(image.shape[0])[..., None]
    return (image * (1 - m) + np.array(LENS_COLOUR, np.float32) * m).astype(np.float32)


def jittered(image: np.ndarray, n: int, seed: int = 1) -> list[np.ndarray]:
    """``n`` variants of an aligned crop: ±6° rotation, ±7% scale, ±3 px shift (at 128 px), every other one mirrored,
    exposure ×0.85–1.15 ± 12 levels. The glasses are painted afterwards, so they sit at the template
    position while the face moves a little: the misalignment real neighbours have."""
    rng = np.random.default_rng(seed)
    image = np.asarray(image, np.float32)
    size = image.shape[0]
    centre = np.array([size / 2 - 0.5, size / 2 - 0.5])
    out = []
    for i in range(n):
        angle, scale = np.deg2rad(rng.uniform(-6, 6)), rng.uniform(0.93, 1.07)
        ty, tx = rng.uniform(-3, 3, 2) * size / 128  # the same jitter relative to the face at any size
        mat = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        off = centre - mat @ (centre + [ty, tx])
        im = np.stack([ndimage.affine_transform(image[..., c], mat, off, order=1, mode="reflect")
                       for c in range(3)], -1)
        if i % 2:
            im = im[:, ::-1]
        out.append(np.clip(im * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12), 0, 255).astype(np.float32))
    return out


def glasses_sets(trainer: np.ndarray, n: int = 12, seed: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(source without, target with the painted glasses) from one aligned portrait."""
    source = jittered(trainer, n, seed)
    return source, [paint_glasses(im) for im in source]


# ------------------------------------------------------------------------------------------ measures


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (np.asarray(a, np.float64) - b) ** 2
    if where is not None:
        d = d[where]
    return float(10 * np.log10(255.0**2 / max(float(d.mean()), 1e-12)))


def high_frequency(change: np.ndarray, where: np.ndarray) -> float:
    """RMS of the Laplacian of a change (levels per pixel²): speckle and colour fringes, not smooth edits."""
    lap = np.stack([ndimage.laplace(np.asarray(change[..., c], np.float64)) for c in range(change.shape[-1])], -1)
    return float(np.sqrt((lap[where] ** 2).mean()))


def glasses_scores(result: np.ndarray, photo: np.ndarray) -> dict[str, float]:
    """How far an edit got towards the painted truth, and what it did elsewhere.

    progress: 1 − |result − truth| / |photo − truth| inside the lenses (0 = no change, 1 = the truth);
    change_in: mean |result − photo| inside (levels); psnr_out: result vs photo away from the glasses;
    hf: high-frequency energy of the change over the face outside the glasses.
    """
    size = photo.shape[0]
    photo, result = np.asarray(photo, np.float32), np.asarray(result, np.float32)
    m = glasses_mask(size)
    truth = paint_glasses(photo)
    inside = m > 0.5
    outside = ~ndimage.binary_dilation(m > 0.01, iterations=max(2, size // 20))
    face = np.zeros_like(inside)
    face[size // 8: size - size // 16, size // 6: size - size // 6] = True
    err0 = float(np.abs(photo - truth)[inside].mean())
    return {"progress": 1.0 - float(np.abs(result - truth)[inside].mean()) / err0,
            "change_in": float(np.abs(result - photo)[inside].mean()),
            "psnr_out": psnr(result, photo, outside),
            "hf": high_frequency(result - photo, face & outside)}


ATTRIBUTE = "dark_glasses"  # the painted attribute's name in the example database


def write_examples(folder: Path, size: int = 128) -> tuple[Path, Path]:
    """The two example folders; rewritten each time (cheap), so they always match this code."""
    from PIL import Image

    without, with_ = folder / "without", folder / "with"
    source, target = glasses_sets(aligned_portrait("astronaut", size))
    for d, images in ((without, source), (with_, target)):
        d.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(d / f"astronaut_{i:02d}.png")
    return without, with_


def build_database(examples: Path, db: Path) -> Path:
    from dfi_engine.faces import builder as dbb
    from dfi_engine.faces import database as dbm

    without, with_ = write_examples(examples)
    plan = dbm.plan_from_folders(with_, without, ATTRIBUTE, "Dark glasses (painted examples)")
    if (db / dbm.MANIFEST).is_file():  # the demo's own database from an earlier run: made anew, like the examples
        import shutil

        shutil.rmtree(db)
    dbb.build(db, plan, 128, True, "5", 1, "build", progress=False)
    return db
