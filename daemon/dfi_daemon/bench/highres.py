"""``dfi bench --highres``: editing a face at the photo's own scale against the 128-px crop with an upsampled change.

The shipped portraits are 512 px, so each is enlarged 2× (bicubic) to a ~1000-px
photo; the painted dark glasses (``dfi_daemon.samples``) are drawn into it at full
resolution, through the face's own alignment, as the truth. The neighbour sets are
jittered crops of the *other* portrait, with and without the glasses. Three paths:

* **crop**: what the daemon did before: edit the 128-px crop, upsample the change;
* **native, single-scale**: edit at the working size (the photo's own scale, capped),
  neighbours from a 128-px database resampled to it, all iterations there;
* **coarse-to-fine**: what the daemon does now: the 128-px edit, upsampled, refined at
  the working size for a quarter of the iterations (``faces.coarse_to_fine``);
* **coarse-to-fine, fine colour free**: the same with the fine stage's colour as cheap as
  the coarse stage's (as before ``fine_chroma_weight``), to show the fringes it draws;
* **coarse-to-fine, neighbours native**: the same with neighbours stored at the working
  size (what a ``--resolution 256/512`` database gives).

Measured in the photo frame around the glasses: error to the painted truth (PSNR),
progress towards it, the sharpness of the change (Laplacian RMS) as a share of the
truth's, and colour fringes (RMS chroma error to the truth in a band along the lens
rims, in levels). A sheet shows the eye region at 1:1 pixels: photo, truth, then each path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import samples
from .highres_fill import fill_paths, format_fill
from .plan import choose
from .quality import bench_network

PATHS = ("crop", "native, single-scale", "coarse-to-fine", "coarse-to-fine, fine colour free",
         "coarse-to-fine, neighbours native")


def _enlarge(photo: np.ndarray, factor: int) -> np.ndarray:
    from PIL import Image

    h, w = photo.shape[:2]
    return np.asarray(Image.fromarray(photo).resize((w * factor, h * factor), Image.BICUBIC))


def _truth_in_photo(photo: np.ndarray, af: Any) -> tuple[np.ndarray, np.ndarray]:
    """(photo with the glasses painted at full resolution, their mask in the photo frame)."""
    from dfi_engine.faces import align as al

    h, w = photo.shape[:2]
    m = al.warp_from_crop(samples.glasses_mask(af.size)[..., None], af.matrix, (h, w), (0, 0, w, h), order=1)[..., 0]
    m = np.clip(m, 0.0, 1.0)
    truth = photo * (1 - m[..., None]) + np.array(samples.LENS_COLOUR, np.float32) * m[..., None]
    return truth.astype(np.float32), m


def _scores(result: np.ndarray, photo: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    from scipy import ndimage

    from dfi_engine.reconstruct import CBCR

    result, photo = np.asarray(result, np.float32), np.asarray(photo, np.float32)
    inside = mask > 0.5
    near = ndimage.binary_dilation(mask > 0.01, iterations=6)  # the lenses and their edges
    rims = near & ~ndimage.binary_erosion(inside, iterations=3)
    err0 = float(np.abs(photo - truth)[inside].mean())
    chroma = (result - truth) @ np.asarray(CBCR, np.float32).T
    return {"psnr_to_truth": samples.psnr(result, truth, near),
            "progress": 1.0 - float(np.abs(result - truth)[inside].mean()) / err0,
            "sharpness": samples.high_frequency(result - photo, near) / samples.high_frequency(truth - photo, near),
            "fringe": float(np.sqrt(np.square(chroma[rims]).sum(-1).mean()))}


def run_highres(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import dfi_engine as dfi
    from dfi_engine.backbones import defaults_for
    from dfi_engine.faces import align as al
    from dfi_engine.faces.coarse_to_fine import coarse_to_fine
    from dfi_engine.faces.neighbours import resampled
    from dfi_engine.faces.pipeline import align_photo, edit_aligned

    net, compute = bench_network(args)
    d = defaults_for(net.backbone)
    base, cap = 128, args.highres_cap
    iters = args.quality_iterations or d.iterations
    strength = d.strength
    paths = choose(args.highres_paths, PATHS, "--highres-paths", ";") or PATHS
    out_dir = Path(args.json).with_suffix("")
    result: dict[str, Any] = {"weights": net.label, "compute_mode": compute, "iterations": iters,
                              "strength": strength, "base": base, "cap": cap, "photos": {}}
    sheet_rows, fill_rows = [], []
    for name in samples.PORTRAITS:
        other = next(n for n in samples.PORTRAITS if n != name)
        photo = _enlarge(samples.portrait(name), 2)
        af = align_photo(photo, base)
        size = al.working_size(af.matrix, base, cap)
        native = af.resized(photo.astype(np.float32), size)
        truth, mask = _truth_in_photo(photo.astype(np.float32), native)
        window = base / np.sqrt(abs(np.linalg.det(af.matrix[:, :2])))
        log(f"highres: {name} {photo.shape[1]}x{photo.shape[0]}, face window {window:.0f} px, working size {size}")
        trainer = _enlarge(samples.portrait(other), 2)
        sets = {s: samples.glasses_sets(np.clip(align_photo(trainer, s).crop, 0, 255)) for s in {base, size}}
        row: dict[str, Any] = {"size": f"{photo.shape[1]}x{photo.shape[0]}", "face_window_px": float(window),
                               "working_size": size, "paths": {}}
        images = []
        w_base = dfi.attribute_vector(net, *sets[base])
        w_up = dfi.attribute_vector(net, *(list(resampled(x, size)) for x in sets[base]))
        w_native = dfi.attribute_vector(net, *sets[size])
        options = dfi.EditOptions(reconstruct=dfi.ReconstructConfig(iterations=iters))
        free = dfi.EditOptions(reconstruct=dfi.ReconstructConfig(iterations=iters, chroma_weight=d.chroma_weight))
        for path in paths:
            t0 = time.perf_counter()
            if path == "crop":
                res = edit_aligned(net, photo, w_base, [strength], size=base, aligned=af, options=options)
            elif path == "native, single-scale":
                res = edit_aligned(net, photo, w_up, [strength], size=size, aligned=native, options=options)
            else:
                opts = free if path.endswith("colour free") else options
                runner = coarse_to_fine(net, af, w_base, w_native if path.endswith("native") else w_up, [strength],
                                        opts)
                res = edit_aligned(net, photo, None, [strength], size=size, aligned=native, options=opts, runner=runner)
            row["paths"][path] = {**_scores(res.images[0], photo, truth, mask), "seconds": time.perf_counter() - t0,
                                  "edited_at": base if path == "crop" else size}
            images.append(res.images[0])
            log(f"highres: {name} {path}: {row['paths'][path]}")
        result["photos"][name] = row
        ys, xs = np.nonzero(mask > 0.01)
        y0, y1 = max(0, ys.min() - 40), min(photo.shape[0], ys.max() + 40)
        x0, x1 = max(0, xs.min() - 40), min(photo.shape[1], xs.max() + 40)
        sheet_rows.append([im[y0:y1, x0:x1] for im in (photo, truth, *images)])
        if args.highres_fill:
            row["fill"], filled, window = fill_paths(net, photo, trainer, af, size, iters, log)
            fill_rows.append([im[window] for im in (photo, *filled)])
    _sheet(sheet_rows, out_dir / "eyes.png")
    if fill_rows:
        _sheet(fill_rows, out_dir / "mouths.png")
    return result


def _sheet(rows: list[list[np.ndarray]], path: Path) -> None:
    """Rows of crops side by side at 1:1 (rows padded to the widest)."""
    from PIL import Image

    h = sum(max(im.shape[0] for im in r) for r in rows)
    w = max(sum(im.shape[1] for im in r) for r in rows)
    canvas = np.full((h, w, 3), 255, np.uint8)
    y = 0
    for r in rows:
        x = 0
        for im in r:
            canvas[y:y + im.shape[0], x:x + im.shape[1]] = np.clip(im, 0, 255).astype(np.uint8)
            x += im.shape[1]
        y += max(im.shape[0] for im in r)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def format_highres(r: dict[str, Any]) -> str:
    lines = [f"high resolution on {r['weights']} ({r['compute_mode']}), {r['iterations']} iterations, strength "
             f"{r['strength']:g}; working size capped at {r['cap']}", "",
             f"{'photo':<13} {'size':>9} {'path':<34} {'at':>4} {'PSNR to truth':>13} {'progress':>8} "
             f"{'sharpness':>9} {'fringe':>6} {'time':>7}"]
    for name, row in r["photos"].items():
        for path, p in row["paths"].items():
            lines.append(f"{name:<13} {row['size']:>9} {path:<34} {p['edited_at']:>4} {p['psnr_to_truth']:>13.2f} "
                         f"{p['progress']:>8.2f} {p['sharpness']:>9.2f} {p.get('fringe', float('nan')):>6.1f} "
                         f"{p['seconds']:>6.1f}s")
    lines.append("sharpness = Laplacian RMS of the change around the glasses / the painted truth's (1 = as sharp); "
                 "fringe = RMS chroma error to the truth along the lens rims, in levels")
    if any(row.get("fill") for row in r["photos"].values()):
        lines += ["", *format_fill(r)]
    return "\n".join(lines)
