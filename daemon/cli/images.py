"""``dfi edit``, ``dfi inpaint`` and ``dfi attributes``: image work through the daemon, over many files."""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path
from typing import Any

from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError, DaemonUnavailable

from . import common, imageio

EDIT_PATTERN = "{dir}/{stem}-{attribute}-{strength}.png"
INPAINT_PATTERN = "{dir}/{stem}-filled.png"


def expand(patterns: list[str]) -> list[Path]:
    """Files and globs (quoted globs are expanded here too); an unmatched glob is an error."""
    out: list[Path] = []
    for pat in patterns:
        if glob.has_magic(pat):
            hits = sorted(glob.glob(pat))
            if not hits:
                raise imageio.ImageFileError(f"No file matches {pat!r}.")
            out += [Path(h) for h in hits]
        else:
            out.append(Path(pat))
    for p in out:
        if not p.is_file():
            raise imageio.ImageFileError(f"No such file: {p}.")
    return out


def parse_strengths(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise imageio.ImageFileError(f"--strength {text!r} is not a comma-separated list of numbers, e.g. 0.4,0.8."
                                     ) from None
    if not values:
        raise imageio.ImageFileError("--strength needs at least one number, e.g. 0.4.")
    return values


def _mask_for(spec: str | None, src: Path, size: tuple[int, int]) -> dict[str, Any] | None:
    if spec is None:
        return None
    path = imageio.render(spec, src) if "{" in spec else Path(spec)
    return imageio.load_mask(path, size)


def _options(args: argparse.Namespace, edit: bool) -> dict[str, Any]:
    # align None: the daemon decides (it aligns when it has a face database)
    opts = {"iterations": args.iterations, "k": args.k, "scaling": args.scaling, "color": args.color,
            "align": args.align}
    if edit:
        opts["feather"] = args.feather
    return {k: v for k, v in opts.items() if v is not None}


def _outputs(args: argparse.Namespace, edit: bool, src: Path, strengths: list) -> list[Path]:
    if edit:
        return [imageio.render(args.output, src, attribute=args.attribute, strength=f"{s:g}", index=i)
                for i, s in enumerate(strengths)]
    return [imageio.render(args.output, src, attribute="inpaint", strength="", index=0)]


def _run(args: argparse.Namespace, edit: bool) -> int:
    inputs = expand(args.images)
    strengths = parse_strengths(args.strength) if edit else [args.strength]
    # a re-run's glob also matches the previous run's results: those are outputs, not inputs
    outputs = {src: _outputs(args, edit, src, strengths) for src in inputs}
    made_by = {os.path.realpath(o): os.path.realpath(src) for src, outs in outputs.items() for o in outs}
    ours = [src for src in inputs if made_by.get(os.path.realpath(src), os.path.realpath(src)) !=
            os.path.realpath(src)]  # an output of *another* input; one's own output is refused below
    inputs = [src for src in inputs if src not in ours]
    if ours:
        common.warn(f"leaving out {len(ours)} file(s) that are results of this command (e.g. {ours[0].name})")
    if not inputs:
        raise imageio.ImageFileError("Every file given is a result of this command; nothing to edit.")
    plans: list[tuple[Path, list[Path]]] = []
    skipped = 0
    for src in inputs:
        outs = outputs[src]
        if args.skip_existing and all(o.exists() for o in outs):
            skipped += 1
            continue
        plans.append((src, outs))
    imageio.check_outputs(inputs, [o for _, outs in plans for o in outs])
    imageio.check_writable([o for _, outs in plans for o in outs])
    existing = [o for _, outs in plans for o in outs if o.exists()]
    if existing:
        common.warn(f"{len(existing)} existing output(s) will be replaced (e.g. {existing[0]}); "
                    "--skip-existing keeps them")
    if not plans:
        common.warn(f"all {skipped} file(s) already have their outputs (--skip-existing); nothing to do")
        return 0
    for src in inputs:  # read every mask up front: a wrong one fails before any work
        if args.mask and not Path(imageio.render(args.mask, src) if "{" in args.mask else args.mask).is_file():
            raise imageio.ImageFileError(f"Mask file for {src} not found: {args.mask}.")

    client, _ = common.connect(args)
    failed = 0
    with client:
        limits = client.limits
        for src, outs in plans:
            try:
                loaded = imageio.load_image(src, limits.get("max_pixels"))
                if loaded.note:
                    common.warn(loaded.note)
                mask = _mask_for(args.mask, src, loaded.size)
                if edit:
                    msg = P.edit_request(loaded.wire, args.attribute, strengths, mask, **_options(args, True))
                else:
                    msg = P.inpaint_request(loaded.wire, mask, None if args.strength is None else args.strength,
                                            **_options(args, False))
                result = _submit(client, msg, src.name, args)
                for wire, out in zip(result["images"], outs):
                    imageio.save_result(wire, loaded, out)
                    print(out)
                for note in result.get("notes", []):
                    common.warn(f"note: {note}")
            except DaemonUnavailable:
                raise
            except (DaemonError, imageio.ImageFileError) as e:
                if len(plans) == 1:
                    raise
                failed += 1
                common.warn(f"{src}: {e}")
    if len(plans) + skipped > 1:
        common.warn(f"done: {len(plans) - failed} edited, {skipped} skipped (outputs existed), {failed} failed")
    if failed:
        common.warn(f"{failed} of {len(plans)} files failed")
        return 1
    return 0


def _submit(client: Client, msg: dict[str, Any], name: str, args: argparse.Namespace) -> dict[str, Any]:
    bar, on_event = common.progress_bar(name)
    try:
        return client.run_job(msg, on_event)
    finally:
        bar.close()


def _edit(args: argparse.Namespace) -> int:
    return _run(args, edit=True)


def _inpaint(args: argparse.Namespace) -> int:
    return _run(args, edit=False)


def _attributes(args: argparse.Namespace) -> int:
    client, _ = common.connect(args)
    with client:
        reply = client.attributes()
    attrs = reply.get("attributes", [])
    if not attrs:
        print("The daemon has no neighbour database, so no attributes are defined. Give --database PATH (a face "
              "database from 'dfi db build' or 'dfi db fetch lfw'; 'dfi demo' leaves one in out/demo/glasses.db), "
              "or --database synthetic for the offline smoke test.")
        return 1
    print(f"neighbours: {reply.get('source')}")
    for a in attrs:
        print(f"  {a['name']:<16} {a['label']:<36} default strength {a['default_strength']:g} "
              f"(scaling {a['scaling']})")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or globs (batch)")
    p.add_argument("--iterations", type=int, help="reconstruction iterations (daemon default 200; >=150 for quality)")
    p.add_argument("-k", type=int, help="neighbours per set (source default)")
    p.add_argument("--scaling", choices=P.SCALINGS, help="attribute vector scaling (attribute default)")
    p.add_argument("--color", choices=P.COLOR_MODES, help="colour matching to the original (default channel)")
    p.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="detect and align the face to the database's frame (default with a face database); "
                        "--no-align works on the whole image as it is")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave out images whose outputs all exist (resume a batch); otherwise existing outputs "
                        "are replaced, with a warning")
    common.add_connection_options(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="change a facial attribute in one or more images (through the daemon)")
    _common(p)
    p.add_argument("--attribute", "-a", required=True, help="attribute name (see 'dfi attributes')")
    p.add_argument("--strength", "-s", default="0.4", help="comma-separated strengths, one output each")
    p.add_argument("--mask", "-m", help="mask file (white = edit); may use {stem}/{dir}/{name} for batches")
    p.add_argument("-o", "--output", default=EDIT_PATTERN,
                   help="output pattern; fields {dir} {stem} {name} {ext} {attribute} {strength} {index} "
                        "(default %(default)s)")
    p.add_argument("--feather", type=float, help="mask feather in pixels (default 4%% of the shorter side)")
    p.set_defaults(func=_edit)

    p = sub.add_parser("inpaint", help="fill the masked region of one or more images from neighbour faces")
    _common(p)
    p.add_argument("--mask", "-m", required=True, help="mask file (white = fill); may use {stem} for batches")
    p.add_argument("--strength", "-s", type=float, help="fill strength (source default)")
    p.add_argument("-o", "--output", default=INPAINT_PATTERN, help="output pattern (default %(default)s)")
    p.set_defaults(func=_inpaint)

    p = sub.add_parser("attributes", help="list the attributes the daemon's neighbour database defines")
    common.add_connection_options(p)
    p.set_defaults(func=_attributes)

