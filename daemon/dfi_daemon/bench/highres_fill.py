"""``dfi bench --highres``, Fill selection: the mouth filled from another face, at 128 px or coarse-to-fine.

The neighbours are 12 jittered crops of the *other* portrait, stored in a small
face database (Fill needs one: it picks neighbours by appearance). The truth is
the photo's own mouth: PSNR in the box, and its detail (Laplacian RMS of the
filled box as a share of the photo's own there; 1 = as detailed as the photo).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import samples
from .quality import mouth_box

PATHS = ("crop", "coarse-to-fine")


def neighbour_database(other: np.ndarray, folder: Path, base: int) -> Any:
    """A database of jittered aligned crops of ``other`` (a photo), at ``base`` px."""
    from PIL import Image

    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build
    from dfi_engine.faces.pipeline import align_photo

    crop = np.clip(align_photo(other, base).crop, 0, 255)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(samples.jittered(crop, 12, seed=3)):
        Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(images / f"{i:02d}.png")
    build(folder / "db", dbm.plan_from_folder(images), base, assume_aligned=True, progress=False)
    return dbm.Database(folder / "db")


def fill_paths(net: Any, photo: np.ndarray, other: np.ndarray, af: Any, size: int, iterations: int,
               log: Any) -> tuple[dict[str, Any], list[np.ndarray], tuple[slice, slice]]:
    """Scores per path, the results, and the box around the mouth in the photo (for the sheet)."""
    import dfi_engine as dfi
    from dfi_engine.faces import align as al
    from dfi_engine.faces.pipeline import inpaint_face

    h, w = photo.shape[:2]
    box = al.warp_from_crop(mouth_box(af.size)[..., None], af.matrix, (h, w), (0, 0, w, h), order=0)[..., 0] > 0.5
    mask = (box * 255).astype(np.uint8)
    rows, images = {}, []
    with tempfile.TemporaryDirectory(prefix="dfi-bench-fill-") as tmp:
        db = neighbour_database(other, Path(tmp), af.size)
        for path in PATHS:
            options = dfi.EditOptions(work_size=af.size if path == "crop" else size,
                                      reconstruct=dfi.ReconstructConfig(iterations=iterations))
            t0 = time.perf_counter()
            res = inpaint_face(net, photo, db, mask, strength=None, options=options, k=12, minimum=4)
            out = res.images[0]
            rows[path] = {"psnr_box": samples.psnr(out, photo, box), "edited_at": res.info["work_size"],
                          "detail": samples.high_frequency(out.astype(np.float32), box)
                          / samples.high_frequency(photo.astype(np.float32), box),
                          "seconds": time.perf_counter() - t0}
            log(f"highres: fill {path}: {rows[path]}")
            images.append(out)
    ys, xs = np.nonzero(box)
    window = (slice(max(0, ys.min() - 30), ys.max() + 30), slice(max(0, xs.min() - 30), xs.max() + 30))
    return rows, images, window


def format_fill(r: dict[str, Any]) -> list[str]:
    lines = ["Fill selection (the mouth, from 12 crops of the other portrait): PSNR in the box to the photo's own "
             "mouth; detail = Laplacian RMS in the box / the photo's"]
    for name, row in r["photos"].items():
        for path, p in (row.get("fill") or {}).items():
            lines.append(f"{name:<13} {path:<16} at {p['edited_at']:>4}: PSNR {p['psnr_box']:.2f} dB, detail "
                         f"{p['detail']:.2f}, {p['seconds']:.1f}s")
    return lines
