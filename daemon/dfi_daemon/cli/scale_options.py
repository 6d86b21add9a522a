"""The ``--ray`` options of the image commands, and running a plan on Ray (``dfi_daemon.scale``).

Kept apart so the commands stay light: Ray and the engine are imported only
when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..server import config as server_config
from . import common, imageio
from . import plan as plan_


def add_ray_address(g: argparse._ActionsContainer, what: str) -> None:
    """``--ray [ADDRESS]``, the same for every command that can use a cluster."""
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help=f"{what} on a Ray cluster: 'auto' (bare --ray: the cluster 'ray start' runs here, else a "
                        "local one), 'local' (a new one on this machine) or the head's address (HOST:6379 or "
                        "ray://HOST:10001); pip install '.[ray]', see docs/scale.md")


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Ray (pip install '.[ray]'; see docs/scale.md)")
    add_ray_address(g, "run the edits instead of the local daemon")
    g.add_argument("--workers", type=int, default=0,
                   help="Ray workers, each with its own resident engine (default: as many as the cluster's CPUs, "
                        "or GPUs, allow)")
    g.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs each worker reserves, and its torch threads (default: a whole node, computing as a "
                        "daemon there would, so files match 'dfi edit' exactly; 1 beside a GPU). Fewer per worker "
                        "packs more workers per node; their files match a daemon with --threads 1 instead")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs each worker reserves (default: 1 where the cluster has GPUs, else 0)")


def run_on_ray(plan: plan_.Plan, args: argparse.Namespace, options: Callable[[plan_.Task], dict[str, Any]]) -> int:
    """Run ``plan`` on Ray with the daemon options of ``args``; prints a summary, returns the exit code."""
    from ..scale import ScaleError
    from ..scale.batch import Work, Workers, run

    cfg = server_config.config_from_args(args, "ray", foreground=False)
    server_config.validate(cfg)
    cpus = args.cpus_per_worker
    if args.workers < 0 or (cpus is not None and cpus <= 0) or (args.gpus_per_worker or 0) < 0:
        raise server_config.StartError("--workers, --cpus-per-worker and --gpus-per-worker must not be negative "
                                       "(and CPUs per worker above 0).", server_config.EXIT_USAGE)

    def request(task: plan_.Task) -> tuple[imageio.Loaded, dict[str, Any]]:
        loaded, msg = plan_.request(task, cfg.max_pixels, options(task))
        if loaded.note:  # e.g. a 16-bit input reduced to 8 bits, as without --ray
            common.warn(loaded.note)
        return loaded, msg

    work = Work(plan.tasks, request, plan_.save, lambda task: task.src, (imageio.ImageFileError,))
    s = run(work, cfg, args.ray, Workers(args.workers, args.cpus_per_worker, args.gpus_per_worker), note=common.warn)
    if s.error and not s.workers:  # it never started: the reason alone
        raise ScaleError(s.error)
    files = len(s.written)
    rate = f", {s.edited / s.seconds:.2f} edits/s" if s.seconds > 0 and s.edited else ""
    common.warn(f"{'interrupted' if s.interrupted else 'done'}: {s.edited} edited ({files} file(s)), "
                f"{plan.skipped} skipped (outputs existed), {len(s.failed)} failed, in {s.seconds:.1f} s{rate} "
                f"on {s.workers} Ray worker(s)" + (f"; {s.retried} resent after a lost worker" if s.retried else ""))
    for src, why in s.failed:
        common.warn(f"{src}: {why}")
    if s.error:
        common.warn(f"error: {s.error}")
        return 2
    if s.interrupted:
        left = len(plan.tasks) - s.edited - len(s.failed)
        common.warn(f"{left} edit(s) not done; run the same command again to do only those")
        return 130
    return 1 if s.failed else 0
