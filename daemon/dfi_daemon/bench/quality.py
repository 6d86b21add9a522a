"""``dfi bench --quality``: how good the edits are, on real photos with real features.

Three measurements, each on both sample portraits (aligned face crops):

* **inversion**: from a blurred copy (Gaussian σ=2) invert φ(photo) for 50/150/300
  iterations (TV on the image): PSNR/SSIM to the photo; and *drift*: the edit
  path at strength 0 from the photo itself (how much an edit damages what it
  should leave alone);
* **painted attribute** (dark glasses, see ``dfi_daemon.samples``): learnt from
  jittered crops of the other portrait, applied at several strengths: progress
  towards the painted truth inside the lenses, PSNR outside, high-frequency
  energy of the change (speckle), with the engine's defaults and with the
  original's settings as a baseline row;
* **inpainting**: a box over the mouth filled from the other portrait's crops:
  PSNR in the box against the photo, next to the grey start;
* **prototype**: the shape and tone components against a known warp and a known paint
  (``bench/prototype.py``).

Prints a table, writes JSON and image sheets (input, results, differences).
Quality is judged here, never speed: timings are informative only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import samples
from .plan import choose
from .speed import PIXELS

ORIGINAL_STEP = {"scaling": "beta", "strength": 0.4}  # with PIXELS: the 2017 code's settings
ORIGINAL = {**ORIGINAL_STEP, **PIXELS}
PARTS = ("inversion", "painted", "inpainting", "prototype")


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), channel_axis=2,
                                       data_range=255.0))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(x[..., c], sigma) for c in range(3)], -1)


def inversion(net: Any, photo: np.ndarray, steps: list[int]) -> dict[str, Any]:
    import dfi_engine as dfi
    from dfi_engine.features import extract, to_tensor

    target = extract(net, photo)
    start = _blur(photo.astype(np.float32), 2.0)
    rows: dict[str, Any] = {"start_psnr": samples.psnr(start, photo), "start_ssim": _ssim(start, photo)}
    for n in steps:
        for key, cfg in ((f"blur_{n}", dfi.ReconstructConfig(iterations=n, tv_on="image")),
                         (f"blur_original_{n}", dfi.ReconstructConfig(iterations=n, **PIXELS))):
            stats: dict[str, Any] = {}
            z, _ = dfi.reconstruct(net, to_tensor(start, net.device), target, cfg, stats=stats)
            zi = z[0].permute(1, 2, 0).cpu().numpy()
            # a rejected trial point is an evaluation the lazy backtracking wasted (what a better line search saves)
            rows[key] = {"psnr": samples.psnr(zi, photo), "ssim": _ssim(zi, photo),
                         "rejected_steps": int(stats["rejected"].sum())}
        zero = [t * 0 for t in target]
        res = dfi.apply_vector(net, photo, zero, [0.0], options=dfi.EditOptions(
            scaling="none", color="none", reconstruct=dfi.ReconstructConfig(iterations=n)))
        rows[f"drift_{n}"] = {"psnr": samples.psnr(res.images[0], photo)}
    return rows


def painted(net: Any, photo: np.ndarray, trainer: np.ndarray, strengths: list[float], iterations: int,
            settings: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Scores per strength for the glasses edit; ``settings`` replaces the defaults (e.g. ORIGINAL)."""
    import dfi_engine as dfi

    source, target = samples.glasses_sets(trainer)
    w = dfi.attribute_vector(net, source, target)
    cfg = dfi.ReconstructConfig(iterations=iterations)
    scaling = None
    if settings:
        cfg = replace(cfg, **{k: v for k, v in settings.items() if k not in ORIGINAL_STEP})
        scaling = settings["scaling"]
    t0 = time.perf_counter()
    res = dfi.apply_vector(net, photo, w, strengths, options=dfi.EditOptions(scaling=scaling, reconstruct=cfg))
    seconds = time.perf_counter() - t0
    rows = [{"strength": s, **samples.glasses_scores(im, photo), "seconds": seconds}
            for s, im in zip(strengths, res.images)]
    return rows, res.images


def mouth_box(size: int) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    m[int(0.66 * size):int(0.82 * size), int(0.36 * size):int(0.64 * size)] = 1.0
    return m


def inpainting(net: Any, photo: np.ndarray, trainer: np.ndarray, iterations: int) -> tuple[dict[str, Any], np.ndarray]:
    import dfi_engine as dfi
    from dfi_engine.edit import fill_grey

    box = mouth_box(photo.shape[0])
    inside = box > 0
    neighbours = samples.jittered(trainer, 12, seed=3)
    res = dfi.inpaint(net, photo, box, neighbours, options=dfi.EditOptions(
        reconstruct=dfi.ReconstructConfig(iterations=iterations)))
    grey = fill_grey(photo, inside)
    return {"psnr_box": samples.psnr(res.images[0], photo, inside), "grey_psnr_box": samples.psnr(grey, photo, inside),
            "ssim": _ssim(res.images[0], photo)}, res.images[0]


def sheet(rows: list[list[np.ndarray]], path: Path, scale: int = 2) -> None:
    """Rows of images (0..255) into one PNG; differences are drawn around mid-grey."""
    from PIL import Image

    width = max(len(r) for r in rows)
    size = rows[0][0].shape[0]
    canvas = np.full((size * len(rows), size * width, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            canvas[i * size:(i + 1) * size, j * size:(j + 1) * size] = np.clip(im, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(path)


def bench_network(args: argparse.Namespace) -> tuple[Any, str]:
    """The network the quality benches judge (real features by default) and its compute mode."""
    import dfi_engine as dfi
    from dfi_engine.compute import set_compute
    from dfi_engine.devices import resolve_device

    net = dfi.load_network(args.weights or "vgg16-hed", resolve_device(args.device))
    return net, set_compute(net, args.compute)


def run_quality(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from dfi_engine.backbones import defaults_for

    if args.threads:
        torch.set_num_threads(args.threads)
    net, compute = bench_network(args)
    d = defaults_for(net.backbone)
    size, iters = args.quality_size, args.quality_iterations or d.iterations
    strengths = [float(s) for s in args.quality_strengths.split(",")] if args.quality_strengths else \
        [round(d.strength * f, 3) for f in (0.5, 1.0, 1.5)]
    out_dir = Path(args.json).with_suffix("")
    photos = {n: samples.aligned_portrait(n, size) for n in samples.PORTRAITS}
    result: dict[str, Any] = {"weights": net.label, "backbone": net.backbone, "compute_mode": compute, "size": size,
                              "iterations": iters,
                              "defaults": d.__dict__, "original_settings": ORIGINAL, "photos": {}}
    parts = set(choose(args.quality_parts, PARTS, "--quality-parts") or PARTS)
    for name, photo in photos.items():
        other = photos[next(n for n in photos if n != name)]
        r: dict[str, Any] = {}
        if "inversion" in parts:
            log(f"quality: {name}: inversion")
            r["inversion"] = inversion(net, photo, [50, 150, 300])
        if "painted" in parts:
            log(f"quality: {name}: painted glasses at {strengths}")
            r["painted"], images = painted(net, photo, other, strengths, iters)
            r["painted_original"], orig = painted(net, photo, other,
                                                  [ORIGINAL["strength"], 4.0 * ORIGINAL["strength"]], iters, ORIGINAL)
            diffs = [128 + 2 * (im - photo) for im in images]
            sheet([[photo, samples.paint_glasses(photo), *images], [photo, *diffs], [photo, *orig]],
                  out_dir / f"{name}.png")
        if "inpainting" in parts:
            log(f"quality: {name}: inpainting")
            r["inpaint"], filled = inpainting(net, photo, other, iters)
            sheet([[photo, filled]], out_dir / f"{name}_fill.png")
        result["photos"][name] = r
    if "prototype" in parts:
        from . import prototype

        result["prototype"] = prototype.measure(out_dir / "prototype", log)
    return result


def format_quality(r: dict[str, Any]) -> str:
    photos = r["photos"]
    lines = [f"quality on {r['weights']} ({r.get('compute_mode', 'fp32')}) at {r['size']}x{r['size']}, "
             f"{r['iterations']} iterations"]
    if any("inversion" in p for p in photos.values()):
        lines += ["", f"{'photo':<13} {'settings':<9} {'inversion from blur: PSNR/SSIM at 50 | 150 | 300 it':<56} "
                      "drift PSNR 50|150|300"]
    for name, p in photos.items():
        inv = p.get("inversion")
        for label, key in (("defaults", "blur"), ("original", "blur_original")) if inv else ():
            blur = " | ".join(f"{inv[f'{key}_{n}']['psnr']:.1f}/{inv[f'{key}_{n}']['ssim']:.3f}"
                              for n in (50, 150, 300))
            drift = "|".join(f"{inv[f'drift_{n}']['psnr']:.1f}" for n in (50, 150, 300)) if key == "blur" else ""
            rejected = "|".join(str(inv[f"{key}_{n}"].get("rejected_steps", "-")) for n in (50, 150, 300))
            lines.append(f"{name:<13} {label:<9} start {inv['start_psnr']:.1f}/{inv['start_ssim']:.3f} -> "
                         f"{blur:<36} {drift:<16} rejected steps {rejected}")
    if any("painted" in p for p in photos.values()):
        lines += ["", f"{'photo':<13} {'settings':<10} {'strength':>8} {'progress':>8} {'change':>7} "
                      f"{'PSNR out':>8} {'HF':>6}"]
    for name, p in photos.items():
        for label, rows in (("defaults", p.get("painted", [])), ("original", p.get("painted_original", []))):
            for row in rows:
                lines.append(f"{name:<13} {label:<10} {row['strength']:>8g} {row['progress']:>8.2f} "
                             f"{row['change_in']:>7.1f} {row['psnr_out']:>8.1f} {row['hf']:>6.1f}")
    if any("inpaint" in p for p in photos.values()):
        lines += ["", "inpainting (mouth box): PSNR in the box, grey start -> filled"]
    for name, p in photos.items():
        if "inpaint" in p:
            lines.append(f"{name:<13} {p['inpaint']['grey_psnr_box']:.1f} -> {p['inpaint']['psnr_box']:.1f} dB")
    if "prototype" in r:
        from .prototype import format_prototype

        lines += format_prototype(r["prototype"])
    return "\n".join(lines)


def run(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    result = run_quality(args, log)
    print(format_quality(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False, default=float))
    print(f"JSON: {out}; sheets: {out.with_suffix('')}/")
    return 0
