"""``dfi batch``: images x attributes x strengths in one resumable run, on the local daemon or on Ray."""

from __future__ import annotations

import argparse

from . import images
from . import plan as plan_


def _batch(args: argparse.Namespace) -> int:
    strengths = plan_.parse_list(args.strength, "--strength", "0.4,0.8")
    attributes = plan_.parse_list(args.attribute, "--attribute", "smile,older", number=False)
    return images.run_plan(args, [(a, strengths) for a in dict.fromkeys(attributes)])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="edit many images with several attributes and strengths; resumable, and on a "
                                     "Ray cluster with --ray",
                       description="Every image x attribute x strength, one output file each, named as 'dfi edit' "
                                   "names them. Outputs that exist are kept, so running the same command again "
                                   "does only what is missing.")
    images.add_image_options(p, resume=True)
    images.add_edit_options(p, "comma-separated attribute names, one set of outputs each (see 'dfi attributes')")
    p.set_defaults(func=_batch, resume=True)
