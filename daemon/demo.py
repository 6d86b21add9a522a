"""``dfi demo``: the whole engine path on an embedded default, offline.

Draws synthetic faces (with and without a dark "beard"), computes the
attribute vector and reconstructs several strengths as one batch, then writes
each result and a contact sheet. With ``--weights random`` (the default here,
since no weights can be assumed present) every output is labelled as such.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def contact_sheet(images: list[np.ndarray], captions: list[str], title: str) -> Image.Image:  # noqa: F821
    from PIL import Image, ImageDraw

    h, w = images[0].shape[:2]
    sheet = Image.new("RGB", (w * len(images), h + 30), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, cap) in enumerate(zip(images, captions)):
        sheet.paste(Image.fromarray(im[:, :, :3]), (i * w, 30))
        draw.text((i * w + 3, 16), cap, fill="black")
    draw.text((3, 2), title, fill="red")
    return sheet


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import dfi_engine as dfi
    from dfi_engine.synthetic import face

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    size = args.size
    photo = face(rng, False, size)
    source = [face(rng, False, size) for _ in range(args.k)]
    target = [face(rng, True, size) for _ in range(args.k)]
    strengths = [float(s) for s in args.strength.split(",")]
    net = dfi.load_vgg19(args.weights, args.device)
    print(f"weights: {net.label}")
    bar = tqdm(total=args.iterations, desc="reconstruct", unit="it")

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "reconstruct":
            bar.update(done - bar.n)

    t0 = time.perf_counter()
    opts = dfi.EditOptions(scaling=args.scaling,
                           reconstruct=dfi.ReconstructConfig(iterations=args.iterations))
    res = dfi.edit(net, photo, source, target, strengths, options=opts, progress=progress)
    bar.close()
    from PIL import Image

    Image.fromarray(photo).save(out / "input.png")
    for s, im in zip(strengths, res.images):
        Image.fromarray(im).save(out / f"demo_{s:g}.png")
    sheet = contact_sheet([photo, *res.images], ["input", *[f"{s:g}" for s in strengths]],
                          net.label if "RANDOM" in net.label else "")
    sheet.save(out / "contact_sheet.png")
    print(f"{len(strengths)} strengths in {time.perf_counter() - t0:.1f} s -> {out}/contact_sheet.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the engine on built-in synthetic faces (offline)")
    p.add_argument("-o", "--output", default="out/demo", help="folder for the results")
    p.add_argument("--weights", default="random", help="torchvision | gatys | random[:SEED] | PATH")
    p.add_argument("--device", default="cpu")
    p.add_argument("--strength", default="0.5,1,1.5", help="comma-separated strengths")
    p.add_argument("--scaling", default="none", choices=["none", "beta"])
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("-k", type=int, default=16, help="neighbours per set")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
