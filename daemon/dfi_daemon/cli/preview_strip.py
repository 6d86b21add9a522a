"""``dfi edit --preview-strip 0,0.2,0.4``: a live slider's previews of several strengths, as one contact strip.

The live slider's session (docs/protocol.md, "Live previews") sets the photo up once on the daemon; each
further strength is only a short refinement. A strip of those previews shows how strong an edit should be
for a fraction of a full edit's cost, before committing to one with ``dfi edit -s``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError

from . import common, imageio
from . import plan as plan_
from .sheet import contact_sheet

MAX_STRENGTHS = 16  # panels in one strip: beyond that they are too small to compare
STRIP_PATTERN = "{dir}/{stem}-{attribute}-strip.png"  # when -o is left at the per-strength default


def parse_strengths(text: str) -> list[float]:
    """'0,0.2,0.4' -> [0.0, 0.2, 0.4]; ImageFileError (one line) for anything else or more than 16 values."""
    strengths = plan_.parse_list(text, "--preview-strip", "0,0.2,0.4,0.6")
    if len(strengths) > MAX_STRENGTHS:
        raise imageio.ImageFileError(f"--preview-strip takes at most {MAX_STRENGTHS} strengths "
                                     f"({len(strengths)} given); make two strips.")
    return strengths


def outputs_of(args: argparse.Namespace, inputs: list[Path]) -> list[Path]:
    """One strip per input; the per-strength default pattern becomes the strip's own."""
    pattern = STRIP_PATTERN if args.output == plan_.EDIT_PATTERN else args.output
    outs = [imageio.render(pattern, src, attribute=args.attribute, strength="strip", index=i)
            for i, src in enumerate(inputs)]
    imageio.check_outputs(inputs, outs)
    imageio.check_writable(outs)
    return outs


def refine_wanted(client: Client, args: argparse.Namespace) -> bool:
    """Whether previews should be refined: not when the edit has no texture (shape and tone are exact)."""
    if args.components is not None:
        return "texture" in args.components
    for a in client.attributes().get("attributes", []):
        if a.get("name") == args.attribute and a.get("components"):
            return bool(a["components"].get("texture", 0))
    return True  # unknown here: the daemon will say so on the first preview


def strip_options(args: argparse.Namespace, refine: bool) -> dict[str, Any]:
    """The preview request's options from the edit's flags (those a preview takes)."""
    opts = {"iterations": args.iterations, "k": args.k, "align": args.align, "components": args.components,
            "refine": refine}
    return {k: v for k, v in opts.items() if v is not None and k in P.PREVIEW_OPTIONS}


def previews(client: Client, session: str, args: argparse.Namespace, loaded: imageio.Loaded,
             mask: dict[str, Any] | None, strengths: list[float], options: dict[str, Any]) -> list[dict[str, Any]]:
    """The final preview of each strength in one session: the image goes with the first request only (again
    if the daemon dropped the session meanwhile)."""
    looks: list[dict[str, Any]] = []
    for i, s in enumerate(strengths):
        first = {"image": loaded.wire, "mask": mask} if i == 0 else {}
        try:
            looks.append(client.preview(session, args.attribute, s, **first, **options))
        except DaemonError as e:
            if e.code != "unknown_session":
                raise
            looks.append(client.preview(session, args.attribute, s, image=loaded.wire, mask=mask, **options))
    return looks


def strip_image(looks: list[dict[str, Any]], title: str) -> Any:
    """The previews side by side, each captioned with its strength (and kind, if not refined)."""
    import numpy as np

    panels = [np.frombuffer(m["image"]["data"], np.uint8).reshape(m["image"]["height"], m["image"]["width"], 3)
              for m in looks]
    captions = [f"{m['strength']:g}" + ("" if m["kind"] == "refined" else f" {m['kind']}") for m in looks]
    return contact_sheet(panels, captions, title, scale=1, title_color="black")


def run(args: argparse.Namespace) -> int:
    """``dfi edit --preview-strip``: one strip per input through the local daemon."""
    strengths = parse_strengths(args.preview_strip)
    if getattr(args, "ray", False):
        raise imageio.ImageFileError("--preview-strip runs on the local daemon; leave out --ray.")
    inputs = plan_.expand(args.images)
    outs = outputs_of(args, inputs)
    client, _ = common.connect(args)
    with client:
        refine = refine_wanted(client, args)
        max_pixels = client.limits.get("max_pixels")
        for n, (src, out) in enumerate(zip(inputs, outs)):
            t0 = time.perf_counter()
            loaded = imageio.load_image(src, max_pixels)
            if loaded.note:
                common.warn(loaded.note)
            mask_path = imageio.render(args.mask, src) if args.mask and "{" in args.mask else args.mask
            mask = imageio.load_mask(mask_path, loaded.size) if mask_path else None
            session = f"strip-{os.getpid()}-{n}"
            looks = previews(client, session, args, loaded, mask, strengths, strip_options(args, refine))
            kind = "refined" if refine else "instant"
            sheet = strip_image(looks, f"{src.name}: {args.attribute}, {kind} previews")
            imageio.save_atomic(sheet, out, {})
            print(f"{out} ({len(strengths)} {kind} previews in {time.perf_counter() - t0:.1f} s)")
    return 0
