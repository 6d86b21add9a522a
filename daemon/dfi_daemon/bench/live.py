"""``dfi bench --live``: what a live slider costs, against the full edit it stands in for.

A private daemon with real features (vgg16-hed by default) serves the demo's face database (dark glasses
painted on jittered astronaut crops, built in a temporary folder) and the photo is grace_hopper, which is not
among its examples. As the plug-in's dialog does, one preview session is opened with the photo, then the
slider moves (each move one ``preview`` request without the image, same session). Times are what the client
sees, from sending a request to receiving each preview message:

* the first preview after the dialog opens (the session's setup, then its instant and refined looks),
* after a slider move: the instant look (shape and tone) and the refined one (+ DFI texture, few iterations,
  warm-started from the nearest strength refined before),
* the full render of one strength: the ``edit`` request the dialog sends on OK (default quality preset),
  sent twice: the first is what the user waits for after previewing, the second is today's warm edit.

Medians over the moves; ratios against the full render.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from dfi_wire import protocol as P

from .. import samples
from ..private_daemon import PrivateDaemon

MOVES = (0.1, 0.5, 0.2, 0.4, 0.6)  # slider positions after the first (0.3): near and far from those refined
QUICK_MOVES = (0.6, 0.1)
K = 12  # the demo database's examples per set: the same neighbours for the previews and the edit


def _look(c: Any, session: str, strength: float, **fields: Any) -> dict[str, Any]:
    """One preview request: seconds until the instant and the refined look arrived, and the daemon's own."""
    t0 = time.perf_counter()
    arrived: dict[str, float] = {}

    def seen(msg: dict[str, Any]) -> None:
        arrived[msg["kind"]] = time.perf_counter() - t0
        arrived[f"{msg['kind']}_daemon"] = float(msg.get("seconds") or 0.0)
        arrived["reused"] = bool(msg.get("session_reused"))

    c.preview(session, samples.ATTRIBUTE, strength, on_preview=seen, **fields)
    if "refined" not in arrived:
        raise RuntimeError(f"the preview of {strength:g} had no refined look")
    return arrived


def run_live(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure one session's previews and the full render on a private daemon; a JSON-ready dict."""
    quick = bool(args.quick)
    moves = QUICK_MOVES if quick else MOVES
    refine = {"iterations": 2} if quick else {}  # quick: the path, not the quality
    edit_opts: dict[str, Any] = {"iterations": 2, "quality": "fast"} if quick else {}
    photo = samples.portrait("grace_hopper")
    image = P.image_map(np.ascontiguousarray(photo).tobytes(), photo.shape[1], photo.shape[0], "RGB8")
    device = "cpu" if args.device == "auto" else args.device
    base = Path(tempfile.mkdtemp(prefix="dfi-bench-live-"))
    try:
        db = samples.build_database(base / "examples", base / "db")
        log(f"live: private daemon ({args.weights}, {device}), demo database, grace_hopper, moves {list(moves)}")
        d = PrivateDaemon(base / "daemon", "--device", device, weights=args.weights, database=str(db),
                          threads=args.threads or 0)
        with d, d.client(timeout=600.0) as c:
            session = "bench-live"
            first = _look(c, session, 0.3, image=image, k=K, **refine)
            log(f"live: first preview (session opened): {first}")
            after = [_look(c, session, s, **refine) for s in moves]
            for s, a in zip(moves, after):
                log(f"live: move to {s:g}: {a}")
            if not all(a["reused"] for a in after):
                raise RuntimeError("the daemon did not keep the session between slider moves")
            renders = []
            for _ in range(2):
                t0 = time.perf_counter()
                reply = c.run_job(P.edit_request(image, samples.ATTRIBUTE, [0.3], k=K, **edit_opts), timeout=600.0)
                renders.append({"seconds": time.perf_counter() - t0, "iterations": reply["quality"]["iterations"],
                                "work_size": reply["quality"]["work_size"], "preset": reply["quality"]["preset"]})
                log(f"live: full render of 0.3: {renders[-1]}")
            weights = reply.get("weights", args.weights)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {key: statistics.median(a[key] for a in after) for key in ("instant", "refined")}
    full = renders[0]["seconds"]
    return {
        "weights": weights, "device": device, "attribute": samples.ATTRIBUTE, "photo": "grace_hopper",
        "photo_size": [int(photo.shape[1]), int(photo.shape[0])], "moves": list(moves), "k": K,
        "first_instant_s": first["instant"], "first_refined_s": first["refined"],
        "move_instant_s": med["instant"], "move_refined_s": med["refined"],
        "move_runs": after, "full_render_s": full, "full_edit_warm_s": renders[1]["seconds"], "renders": renders,
        "ratios": {"move_instant / full_render": med["instant"] / full,
                   "move_refined / full_render": med["refined"] / full,
                   "first_refined / full_render": first["refined"] / full},
    }


def format_live(r: dict[str, Any]) -> str:
    """The section's table: what a user waits for, by step of the dialog."""
    e = r["renders"][0]
    rows = [("first preview after opening: instant", r["first_instant_s"]),
            ("first preview after opening: refined", r["first_refined_s"]),
            (f"after a slider move: instant (median of {len(r['moves'])})", r["move_instant_s"]),
            (f"after a slider move: refined (median of {len(r['moves'])})", r["move_refined_s"]),
            (f"full render of one strength (edit, {e['preset']}, {e['iterations']} it, face {e['work_size']} px)",
             r["full_render_s"]),
            ("the same edit request again (today's warm full edit)", r["full_edit_warm_s"])]
    w, h = r["photo_size"]
    lines = [f"live previews through a daemon ({r['weights']}, {r['device']}; {r['attribute']} on {r['photo']} "
             f"{w}x{h}, K={r['k']}):"]
    lines += [f"  {name:<72} {s:>7.2f} s" for name, s in rows]
    lines += [f"  ratio {name:<66} {v:>7.3f}" for name, v in r["ratios"].items()]
    return "\n".join(lines)
