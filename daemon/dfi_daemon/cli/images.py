"""``dfi edit``, ``dfi inpaint`` and ``dfi attributes``: image work through the daemon, over many files."""

from __future__ import annotations

import argparse
import time
from typing import Any

from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError, DaemonUnavailable

from . import common, imageio, scale_options
from . import plan as plan_


def _options(args: argparse.Namespace, edit: bool) -> dict[str, Any]:
    # align None: the daemon decides (it aligns when it has a face database)
    opts = {"quality": args.quality, "iterations": args.iterations, "k": args.k, "scaling": args.scaling,
            "color": args.color, "align": args.align}
    if edit:
        opts["feather"] = getattr(args, "feather", None)
        opts["components"] = getattr(args, "components", None)
    return {k: v for k, v in opts.items() if v is not None}


def plan_of(args: argparse.Namespace, edits: list[tuple[str | None, list]]) -> plan_.Plan:
    """The command's plan, with its warnings said (results left out of the inputs, outputs replaced)."""
    plan = plan_.make_plan(args.images, edits, args.output, args.mask, args.skip_existing)
    if plan.left_out:
        common.warn(f"leaving out {len(plan.left_out)} file(s) that are results of this command "
                    f"(e.g. {plan.left_out[0].name})")
    if plan.replaced:
        if args.skip_existing:  # only edits with some of their files: they are done again whole
            common.warn(f"{len(plan.replaced)} output(s) of edits that have only some of their files will be "
                        f"written again (e.g. {plan.replaced[0]})")
        else:
            keep = " (--overwrite)" if getattr(args, "resume", False) else "; --skip-existing keeps them"
            common.warn(f"{len(plan.replaced)} existing output(s) will be replaced (e.g. {plan.replaced[0]}){keep}")
    if not plan.tasks:
        common.warn(f"all {plan.skipped} edit(s) already have their outputs; nothing to do")
    return plan


def run_on_daemon(plan: plan_.Plan, args: argparse.Namespace) -> int:
    """Run a plan's tasks one after the other through the (auto-started) local daemon."""
    client, _ = common.connect(args)
    failed, t0 = 0, time.perf_counter()
    with client:
        max_pixels = client.limits.get("max_pixels")
        for task in plan.tasks:
            try:
                loaded, msg = plan_.request(task, max_pixels, _options(args, task.attribute is not None))
                if loaded.note:
                    common.warn(loaded.note)
                result = _submit(client, msg, f"{task.src.name} {task.attribute or 'fill'}", args)
                for out in plan_.save(task, result, loaded):
                    print(out)
                for note in result.get("notes", []):
                    common.warn(f"note: {note}")
            except DaemonUnavailable:
                raise
            except (DaemonError, imageio.ImageFileError) as e:
                if len(plan.tasks) == 1:
                    raise
                failed += 1
                common.warn(f"{task.src}: {e}")
    if len(plan.tasks) + plan.skipped > 1:
        common.warn(f"done: {len(plan.tasks) - failed} edited, {plan.skipped} skipped (outputs existed), "
                    f"{failed} failed in {time.perf_counter() - t0:.1f} s")
    if failed:
        common.warn(f"{failed} of {len(plan.tasks)} edits failed")
        return 1
    return 0


def run_plan(args: argparse.Namespace, edits: list[tuple[str | None, list]]) -> int:
    """Plan, then run through the local daemon, or on Ray with --ray."""
    plan = plan_of(args, edits)
    if not plan.tasks:
        return 0
    if args.ray:
        return scale_options.run_on_ray(plan, args, lambda task: _options(args, task.attribute is not None))
    return run_on_daemon(plan, args)


def _run(args: argparse.Namespace, edit: bool) -> int:
    if edit:
        return run_plan(args, [(args.attribute, plan_.parse_list(args.strength, "--strength", "0.4,0.8"))])
    return run_plan(args, [(None, [args.strength])])


def _submit(client: Client, msg: dict[str, Any], name: str, args: argparse.Namespace) -> dict[str, Any]:
    bar, on_event = common.progress_bar(name)
    try:
        return client.run_job(msg, on_event)
    finally:
        bar.close()


def _edit(args: argparse.Namespace) -> int:
    if args.preview_strip is not None:  # the live slider's previews as one strip, not the full edit
        from . import preview_strip

        return preview_strip.run(args)
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
        cover = " as a cover" if a.get("tone_form") == "alpha" else ""
        mix = ", ".join(f"{c} {w:g}{cover if c == 'tone' else ''}" for c, w in (a.get("components") or {}).items() if w)
        print(f"  {a['name']:<16} {a['label']:<36} default strength {a['default_strength']:g} "
              f"(scaling {a['scaling']}{'; ' + mix if mix else ''})")
    return 0


def add_image_options(p: argparse.ArgumentParser, resume: bool = False) -> None:
    """What every image command takes; ``resume``: keep existing outputs unless --overwrite (``dfi batch``)."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or globs (batch)")
    t = p.add_argument_group("quality and method (defaults from the daemon and the attribute)")
    t.add_argument("--quality", choices=P.QUALITIES,
                   help="quality preset (default balanced): the daemon chooses its iterations and working size for "
                        "its device ('dfi daemon status' lists them)")
    t.add_argument("--iterations", type=int,
                   help="reconstruction iterations, overriding the preset's (>=150 for quality)")
    t.add_argument("-k", type=int, help="neighbours per set (source default)")
    t.add_argument("--scaling", choices=P.SCALINGS, help="attribute vector scaling (attribute default)")
    t.add_argument("--color", choices=P.COLOR_MODES, help="colour matching to the original (default channel)")
    t.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="detect and align the face to the database's frame (default with a face database); "
                        "--no-align works on the whole image as it is")
    if resume:
        p.add_argument("--overwrite", dest="skip_existing", action="store_false",
                       help="replace existing outputs (default: keep them and do only the missing edits, so "
                            "running the same command again resumes it)")
    else:
        p.add_argument("--skip-existing", action="store_true",
                       help="leave out images whose outputs all exist (resume a batch); otherwise existing outputs "
                            "are replaced, with a warning")
    scale_options.add_ray_options(p)
    common.add_connection_options(p)  # last: how to reach or start the daemon, after what the edit is


def add_edit_options(p: argparse.ArgumentParser, attribute_help: str) -> None:
    p.add_argument("--attribute", "-a", required=True, help=attribute_help)
    p.add_argument("--strength", "-s", default="0.4", help="comma-separated strengths, one output each")
    p.add_argument("--mask", "-m", help="mask file (white = edit); may use {stem}/{dir}/{name} for batches")
    p.add_argument("-o", "--output", default=plan_.EDIT_PATTERN,
                   help="output pattern; fields {dir} {stem} {name} {ext} {attribute} {strength} {index} "
                        "(default %(default)s)")
    p.add_argument("--feather", type=float, help="mask feather in pixels (default 4%% of the shorter side)")
    p.add_argument("--components", type=components_list, metavar="LIST",
                   help=f"which parts of the edit: a comma list of {', '.join(P.COMPONENTS)} (default: the "
                        "attribute's own mix; 'shape,tone' is instant, no optimisation)")


def components_list(text: str) -> list[str]:
    """'shape, tone' -> ["shape", "tone"], checked as the daemon checks it."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    try:
        return P.validate_option("components", names)
    except P.ProtocolError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="change a facial attribute in one or more images (through the daemon)",
                       usage="%(prog)s IMAGE [IMAGE ...] -a ATTRIBUTE [-s STRENGTHS] [options]")
    add_image_options(p)
    add_edit_options(p, "attribute name (see 'dfi attributes')")
    p.add_argument("--preview-strip", metavar="STRENGTHS",
                   help="instead of the edit, one PNG strip of the live slider's quick previews at these "
                        "comma-separated strengths (at most 16), e.g. 0,0.2,0.4,0.6; -o names the strip "
                        "(default {dir}/{stem}-{attribute}-strip.png)")
    p.set_defaults(func=_edit)

    p = sub.add_parser("inpaint", help="fill the masked region of one or more images from neighbour faces",
                       usage="%(prog)s IMAGE [IMAGE ...] -m MASK [options]")
    add_image_options(p)
    p.add_argument("--mask", "-m", required=True, help="mask file (white = fill); may use {stem} for batches")
    p.add_argument("--strength", "-s", type=float, help="fill strength (source default)")
    p.add_argument("-o", "--output", default=plan_.INPAINT_PATTERN, help="output pattern (default %(default)s)")
    p.set_defaults(func=_inpaint)

    p = sub.add_parser("attributes", help="list the attributes the daemon's neighbour database defines")
    common.add_connection_options(p)
    p.set_defaults(func=_attributes)

