"""The real ``dfi demo``: real features on a real portrait, through a real daemon and a real face database.

Without LFW or CelebA on the machine, the neighbours are made from what ships
with the installed packages: twelve jittered crops of the astronaut portrait
(folder ``without``) and the same crops with dark glasses painted on (folder
``with``) become a two-folder face database defining the custom attribute
``dark_glasses`` (``dfi db build --with --without --aligned``). A private daemon
serves it with the real network (``--weights auto``: the paper's VGG-19 if its
file is cached, else VGG-16 from HED) and edits grace_hopper, a portrait not in
the examples: the glasses at several strengths, then Fill selection over the
mouth. The contact sheet names the network and how the attribute was learnt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import samples
from .sheet import contact_sheet

LEARNT = "dark glasses learnt from 12 painted examples (jittered astronaut crops)"


def mouth_mask(photo: np.ndarray) -> np.ndarray:
    """A box over the mouth from the five landmarks (below the nose base, about one eye span wide)."""
    from dfi_engine.faces import FaceDetector

    faces = FaceDetector().detect(photo / 255.0)
    if not faces:
        raise RuntimeError("no face found in the demo portrait")
    lm = max(faces, key=lambda f: f.area).landmarks
    span = float(np.linalg.norm(lm[0] - lm[2]))  # outer eye corners
    nose = lm[4]
    mask = np.zeros(photo.shape[:2], np.uint8)
    top, bottom = int(nose[1] + 0.18 * span), int(nose[1] + 0.62 * span)
    left, right = int(nose[0] - 0.42 * span), int(nose[0] + 0.42 * span)
    mask[max(top, 0):bottom, max(left, 0):right] = 255
    return mask


def run_real(args: argparse.Namespace, endpoint: str, weights: str) -> dict[str, Any]:
    """Edit grace_hopper through a private daemon; returns what the sheet needs."""
    from dfi_wire import protocol as P

    from . import common, imageio, launch

    out = Path(args.output)
    db = samples.build_database(out / "examples", out / "glasses.db")
    photo = samples.portrait("grace_hopper")
    h, w = photo.shape[:2]
    wire = P.image_map(np.ascontiguousarray(photo).tobytes(), w, h, "RGB8")
    mask = mouth_mask(photo)
    daemon_args = ["--weights", weights, "--database", str(db), "--device", args.device,
                   "--threads", str(args.threads)]
    client, proc = launch.connect(endpoint, args.timeout, True, daemon_args, args.start_timeout)
    try:
        with client:
            attrs = {a["name"]: a for a in client.attributes().get("attributes", [])}
            base = float(attrs[samples.ATTRIBUTE]["default_strength"])
            strengths = [float(s) for s in args.strength.split(",")] if args.strength else \
                [round(base * f, 3) for f in (0.5, 1.0, 1.5)]
            msg = P.edit_request(wire, samples.ATTRIBUTE, strengths, iterations=args.iterations, k=12)
            bar, on_event = common.progress_bar(f"demo {samples.ATTRIBUTE}")
            try:
                edited = client.run_job(msg, on_event)
            finally:
                bar.close()
            fills = []
            for s in (0.2, 0.35):
                msg = P.inpaint_request(wire, P.image_map(mask.tobytes(), w, h, "L8"), s, iterations=args.iterations,
                                        k=12)
                bar, on_event = common.progress_bar(f"demo fill {s:g}")
                try:
                    fills.append((s, client.run_job(msg, on_event)))
                finally:
                    bar.close()
    finally:
        if proc is not None and not args.keep_daemon:
            launch.stop(endpoint)
            proc.wait(timeout=30)
    loaded = imageio.Loaded(out / "input.png", wire, "RGB")
    return {"loaded": loaded, "photo": photo, "mask": mask, "edited": edited, "fills": fills}


def save_real(args: argparse.Namespace, r: dict[str, Any], t0: float) -> None:
    from . import imageio

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    imageio.save_atomic(imageio.to_pil(r["loaded"].wire), out / "input.png")
    edited, photo = r["edited"], r["photo"]
    tiles, captions = [photo], ["input"]
    for s, wire in zip(edited["strengths"], edited["images"]):
        path = out / f"demo_{samples.ATTRIBUTE}_{s:g}.png"
        imageio.save_result(wire, r["loaded"], path)
        tiles.append(np.asarray(imageio.to_pil(wire)))
        captions.append(f"glasses {s:g}")
        print(path)
    shown = photo.copy()
    shown[r["mask"] > 0] = (shown[r["mask"] > 0] * 0.5 + np.array([255, 0, 0]) * 0.5).astype(np.uint8)
    tiles.append(shown)
    captions.append("fill: selection")
    for s, res in r["fills"]:
        path = out / f"demo_fill_{s:g}.png"
        imageio.save_result(res["images"][0], r["loaded"], path)
        tiles.append(np.asarray(imageio.to_pil(res["images"][0])))
        captions.append(f"fill {s:g}")
        print(path)
    title = f"{edited['weights']} | {LEARNT} | Fill selection from the same 24 faces"
    sheet = contact_sheet([_half(t) for t in tiles], captions, title, scale=1)
    imageio.save_atomic(sheet, out / "contact_sheet.png")
    print(out / "contact_sheet.png")
    print(f"dfi demo: {len(edited['strengths'])} strengths and {len(r['fills'])} fills in "
          f"{time.perf_counter() - t0:.1f} s (weights: {edited['weights']}; attribute: {LEARNT})")


def _half(image: np.ndarray) -> np.ndarray:
    """Tiles at half size: seven full portraits side by side would make a sheet 3,600 px wide."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image[:, :, :3]))
    return np.asarray(im.resize((im.width // 2, im.height // 2), Image.LANCZOS))
