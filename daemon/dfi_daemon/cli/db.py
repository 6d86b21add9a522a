"""``dfi db build|add|fetch|info|check``: the neighbour database from the command line.

Only argument parsing and printing live here; everything else is in
:mod:`dfi_engine.faces`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..paths import data_dir, user_attributes_path
from . import scale_options


def _definitions():
    from dfi_engine.faces.attributes import load_definitions

    return load_definitions([user_attributes_path()])


def _plan(args: argparse.Namespace):
    from dfi_engine.errors import InputError
    from dfi_engine.faces import database as dbm

    if args.with_dir or args.without_dir:
        if not (args.with_dir and args.without_dir and args.name):
            raise InputError("A custom attribute needs --with DIR, --without DIR and --name NAME.")
        return dbm.plan_from_folders(args.with_dir, args.without_dir, args.name, args.label)
    if not args.images:
        raise InputError("Nothing to add.", "Pass --images DIR [--table FILE], or --with/--without/--name.")
    if args.table:
        plan, missing = dbm.plan_from_table(args.images, args.table, args.format, _definitions())
        if missing:
            print(f"note: {len(missing)} files named in the table are not in {args.images} "
                  f"(first: {missing[0]})", file=sys.stderr)
        return plan
    return dbm.plan_from_folder(args.images)


def _print_report(report) -> None:
    print(report.summary())
    for name, why in report.skipped[:20]:
        print(f"  skipped {name}: {why}")
    if len(report.skipped) > 20:
        print(f"  … and {len(report.skipped) - 20} more skipped (see `dfi db info`)")
    for name, other in report.duplicates[:10]:
        print(f"  duplicate {name} = {other}")


def run_build(args: argparse.Namespace) -> int:
    from dfi_engine.faces import builder as dbb
    from dfi_engine.faces import database as dbm

    mode = "add" if args.db_command == "add" else "build"
    path = args.database
    resolution = args.resolution
    if mode == "add" and resolution is None:
        resolution = dbm.read_manifest(path)["resolution"]
    report = dbb.build(path, _plan(args), resolution or 128, args.aligned, args.landmarks, args.upsample, mode,
                       progress=not args.quiet, workers=args.workers, preparer=_preparer(args))
    _print_report(report)
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from dfi_engine.faces import builder as dbb
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.fetch import fetch_lfw

    dest = Path(args.dest) if args.dest else data_dir() / "downloads" / "lfw"
    urls = {k: v for k, v in (("images", args.images_url), ("attributes", args.attributes_url)) if v}
    sums = {k: v for k, v in (("images", args.images_sha256), ("attributes", args.attributes_sha256)) if v}
    folder, table = fetch_lfw(dest, args.variant, urls, sums, progress=not args.quiet)
    print(f"images: {folder}\nattributes: {table}")
    if args.no_build:
        return 0
    db_path = Path(args.db) if args.db else data_dir() / "databases" / f"lfw-{args.variant}"
    plan, missing = dbm.plan_from_table(folder, table, "lfw", _definitions())
    if missing:
        print(f"note: {len(missing)} table rows have no image (first: {missing[0]})", file=sys.stderr)
    report = dbb.build(db_path, plan, args.resolution, args.aligned, args.landmarks, 1, "build",
                       progress=not args.quiet, workers=args.workers, preparer=_preparer(args))
    _print_report(report)
    return 0


def run_info(args: argparse.Namespace) -> int:
    from dfi_engine.faces.database import Database

    db = Database(args.database, allow_empty=True)
    info = db.info()
    defs = _definitions()
    usable = [a.name for a in defs.usable(db)]
    info["edits"] = usable
    info["user_attributes"] = str(user_attributes_path())
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['path']}: {info['count']} faces at {info['resolution']} px, {info['shards']} shards, "
          f"format v{info['version']}{'' if info['complete'] else ' (build INTERRUPTED: re-run it to finish)'}")
    print(f"  landmarks: {info['landmark_model']}; identities: {info['identities']}; "
          f"skipped at build: {info['skipped']}; duplicates: {info['duplicates']}")
    print("  attributes (present/known): " + ", ".join(
        f"{c} {info['present'][c]}/{info['known'][c]}" for c in info["columns"]) if info["columns"] else
        "  attributes: none (inpainting only)")
    print(f"  edits: {', '.join(usable) or 'none'}")
    print(f"  user attribute definitions: {info['user_attributes']}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dfi_engine.faces.database import check

    report = check(args.database)
    if report["ok"]:
        print(f"{args.database}: OK ({report['count']} faces)")
        return 0
    print(f"{args.database}: {len(report['problems'])} problem(s)")
    for p in report["problems"]:
        print(f"  - {p}")
    return 1


def _sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="folder of images (paths in --table are relative to it)")
    p.add_argument("--table", help="attribute table: lfw_attributes.txt, list_attr_celeba.txt or CSV with 'file'")
    p.add_argument("--format", default="auto", choices=["auto", "lfw", "celeba", "csv"], help="table format")
    p.add_argument("--with", dest="with_dir", help="custom attribute: folder of images WITH it")
    p.add_argument("--without", dest="without_dir", help="custom attribute: folder of images WITHOUT it")
    p.add_argument("--name", help="custom attribute name (e.g. beard)")
    p.add_argument("--label", help="custom attribute menu label")
    p.add_argument("--aligned", action="store_true",
                   help="images are already aligned face crops: no detection, centre square resized")
    p.add_argument("--landmarks", default="5", choices=["5", "68"],
                   help="dlib landmark model (68 is trained on iBUG 300-W: non-commercial use only)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling (finds smaller faces, slower)")
    _workers(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=0,
                   help="processes that detect and align faces (default 0 = every core, or every CPU of the Ray "
                        "cluster with --ray; 1 = this process only)")
    scale_options.add_ray_address(p, "detect and align")


def _preparer(args: argparse.Namespace):
    """The Ray preparer for --ray, else None (the builder's local pool)."""
    if not args.ray:
        return None
    from ..scale.prepare import RayPreparer

    return RayPreparer(args.ray, args.workers, note=lambda m: print(f"dfi: {m}", file=sys.stderr))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="build, extend, download and inspect neighbour databases")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    b = dsub.add_parser("build", help="build a database from images and an attribute table or two folders")
    b.add_argument("database", help="output folder (re-run the same command to resume an interrupted build)")
    b.add_argument("--resolution", type=int, default=128, help="aligned face size in pixels")
    _sources(b)
    b.set_defaults(func=run_build)
    a = dsub.add_parser("add", help="add images to an existing database")
    a.add_argument("database")
    a.add_argument("--resolution", type=int, default=None, help=argparse.SUPPRESS)
    _sources(a)
    a.set_defaults(func=run_build)
    f = dsub.add_parser("fetch", help="download a public dataset and build a database from it")
    f.add_argument("dataset", choices=["lfw"])
    f.add_argument("--variant", default="deepfunneled", choices=["deepfunneled", "funneled"])
    f.add_argument("--dest", help="download folder (default: the user data folder)")
    f.add_argument("--db", help="database folder to build (default: the user data folder)")
    f.add_argument("--resolution", type=int, default=128)
    f.add_argument("--no-build", action="store_true", help="only download and unpack")
    f.add_argument("--aligned", action="store_true", help="skip face detection (treat images as aligned)")
    f.add_argument("--landmarks", default="5", choices=["5", "68"])
    _workers(f)
    f.add_argument("--images-url", action="append",
                   help="URL of the image archive, replacing the built-in mirrors (repeatable, in order)")
    f.add_argument("--attributes-url", action="append",
                   help="URL of lfw_attributes.txt, replacing the built-in ones (repeatable)")
    f.add_argument("--images-sha256", help="expected SHA-256 of the image archive")
    f.add_argument("--attributes-sha256", help="expected SHA-256 of lfw_attributes.txt")
    f.add_argument("-q", "--quiet", action="store_true")
    f.set_defaults(func=run_fetch)
    i = dsub.add_parser("info", help="describe a database")
    i.add_argument("database")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=run_info)
    c = dsub.add_parser("check", help="verify a database (reads everything); exit 1 on problems")
    c.add_argument("database")
    c.set_defaults(func=run_check)
