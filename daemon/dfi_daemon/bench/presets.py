"""``dfi bench`` section ``presets``: what a user waits for a default aligned face edit, by preset.

A private daemon with real features (vgg16-hed) and a face database of painted
examples (the demo's, built in a temporary folder) edits grace_hopper's face
twice over: once as a 128-px face (the aligned crop itself, so the working size
is the database's) and once in the portrait enlarged to about 1000 px, where the
working size is the device's cap. Each edit is sent as the plug-in sends it
(quality preset by name, one strength), first cold and then warm; the daemon's
own estimate at acceptance is recorded next to the time taken.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from dfi_wire import protocol as P

from .. import samples
from ..private_daemon import PrivateDaemon
from .plan import choose

PORTRAIT_SIDE = 1000  # px: the longer side of the "high-resolution portrait" case


def _photos() -> dict[str, np.ndarray]:
    from PIL import Image

    photo = samples.portrait("grace_hopper")
    h, w = photo.shape[:2]
    scale = PORTRAIT_SIDE / max(h, w)
    big = Image.fromarray(photo).resize((round(w * scale), round(h * scale)), Image.LANCZOS)
    crop = np.clip(samples.aligned_portrait("grace_hopper", 128), 0, 255).astype(np.uint8)
    return {"128-px face": crop, f"{big.width}x{big.height} portrait": np.asarray(big)}


def run(args: argparse.Namespace, log: Callable[[str], None], device: str) -> dict[str, Any]:
    from ..samples import ATTRIBUTE, build_database

    qualities = choose(args.presets, P.QUALITIES, "--presets") or [P.DEFAULT_QUALITY]
    base = Path(tempfile.mkdtemp(prefix="dfi-bench-presets-"))
    try:
        db = build_database(base / "examples", base / "db")
        d = PrivateDaemon(base / "daemon", "--device", device, weights=args.real_weights, database=str(db),
                          threads=args.threads or 0)
        rows = []
        with d:
            with d.client(timeout=600.0) as c:
                presets = c.status()["presets"]
                for name, photo in _photos().items():
                    image = P.image_map(np.ascontiguousarray(photo).tobytes(), photo.shape[1], photo.shape[0], "RGB8")
                    for q in qualities:
                        runs = []
                        for _ in range(2):  # cold (first of its kind), then warm
                            events: list[dict[str, Any]] = []
                            t0 = time.perf_counter()
                            reply = c.run_job(P.edit_request(image, ATTRIBUTE, [0.3], quality=q), events.append,
                                              timeout=600.0)
                            runs.append({"seconds": time.perf_counter() - t0,
                                         "estimate_s": events[0].get("estimate_s") if events else None})
                        row = {"photo": name, "quality": q, "iterations": reply["quality"]["iterations"],
                               "work_size": reply["quality"]["work_size"], "cold_s": runs[0]["seconds"],
                               "warm_s": runs[1]["seconds"], "estimate_warm_s": runs[1]["estimate_s"]}
                        log(f"presets: {name} {q}: {row}")
                        rows.append(row)
        return {"weights": args.real_weights, "attribute": ATTRIBUTE, "presets": presets, "rows": rows}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def format_presets(r: dict[str, Any]) -> list[str]:
    lines = [f"default aligned face edit through a daemon ({r['weights']}, {r['attribute']} 0.3, one strength):",
             f"  {'photo':<22} {'quality':<9} {'iterations':>10} {'face at':>8} {'cold':>8} {'warm':>8} "
             f"{'estimate':>9}"]
    for x in r["rows"]:
        est = f"{x['estimate_warm_s']:.1f}s" if x["estimate_warm_s"] else "-"
        lines.append(f"  {x['photo']:<22} {x['quality']:<9} {x['iterations']:>10} {x['work_size'] or '-':>8} "
                     f"{x['cold_s']:>7.1f}s {x['warm_s']:>7.1f}s {est:>9}")
    return lines
