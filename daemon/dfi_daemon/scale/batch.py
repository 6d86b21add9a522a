"""``dfi edit/batch --ray``: edits fanned out over Ray workers, results streamed to disk.

The driver (this process) makes each wire request, sends it to a worker
(``editor.Editor``, one resident engine each) and hands each result back to be
written as it arrives. What a task is and how it is read and written is the
caller's (``Work``: for the CLI, its plan and its atomic writes with the plan's
names), so an interrupted run leaves only whole files and a re-run does only
what is missing. A worker that dies mid-edit is restarted by Ray and its edit
sent again (to a worker that is up); because only the driver writes, an output
is written once whatever happens.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..server.config import Config
from . import ScaleError, require_ray
from .cluster import joined
from .editor import Editor
from .pool import Pool

IN_FLIGHT_PER_WORKER = 2  # one running, one waiting: a worker never idles between edits
ATTEMPTS = 3  # per edit, counting the first: an edit whose worker dies under it three times fails


@dataclass
class Workers:
    """How many Ray workers, and what each reserves."""

    count: int = 0  # 0: as many as the cluster's CPUs (or GPUs) allow
    cpus: float | None = None  # None: a whole node's CPUs for a CPU worker (as a daemon there), 1 beside a GPU
    gpus: float | None = None  # None: one per worker where the cluster has GPUs and the device allows


@dataclass
class Work:
    """The caller's side of each edit."""

    tasks: list[Any]
    request: Callable[[Any], tuple[Any, dict[str, Any]]]  # task -> (what saving needs, wire request)
    save: Callable[[Any, dict[str, Any], Any], list[Path]]  # (task, result reply, that) -> paths written
    name: Callable[[Any], Any]  # what a failure is reported under
    refusals: tuple[type[Exception], ...]  # errors of request/save that fail one task, not the run


@dataclass
class Summary:
    edited: int = 0
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Any, str]] = field(default_factory=list)
    retried: int = 0
    seconds: float = 0.0
    workers: int = 0
    where: str = ""
    interrupted: bool = False
    error: str | None = None  # why the run stopped before the end


def _sizing(cluster: Any, cfg: Config, w: Workers, tasks: int) -> tuple[int, float, float, str]:
    """(workers, cpus and gpus per worker, device) for this cluster.

    A CPU worker takes a whole node by default and computes with torch's own thread count, as a daemon on that
    node would: the sums inside the network depend on the number of threads, so this is what makes the files
    identical to a local ``dfi edit``. ``--cpus-per-worker 1`` packs more workers per node; their files are
    those of a daemon with ``--threads 1``.
    """
    gpus = w.gpus
    if gpus is None:
        gpus = 1.0 if cluster.gpus and (cfg.device == "auto" or cfg.device.startswith("cuda")) else 0.0
    if gpus and not cluster.gpus:
        raise ScaleError("--gpus-per-worker was given but the Ray cluster has no GPUs.")
    device = cfg.device if gpus else ("cpu" if cfg.device == "auto" else cfg.device)
    cpus = w.cpus if w.cpus is not None else (1.0 if gpus else float(max(1, cluster.node_cpus)))
    if cpus > cluster.largest[0] or gpus > cluster.largest[1]:  # Ray would wait for such a node forever
        raise ScaleError(f"No node of {cluster.describe()} has {cpus:g} CPU(s){f' and {gpus:g} GPU(s)' if gpus else ''}"
                         " for one worker; ask for less with --cpus-per-worker / --gpus-per-worker.")
    room = int(cluster.gpus // gpus) if gpus else int(cluster.cpus // cpus)
    if w.count > max(1, room):  # Ray would wait for ever for the workers that do not fit
        raise ScaleError(f"{cluster.describe()} has room for {max(1, room)} worker(s) of {cpus:g} CPU(s)"
                         f"{f' and {gpus:g} GPU(s)' if gpus else ''}, not {w.count}; give fewer --workers.")
    return max(1, min(w.count or max(1, room), tasks)), cpus, gpus, device


def run(work: Work, cfg: Config, address: str, workers: Workers, note: Callable[[str], None],
        show: Callable[[Path], None] | None = None, progress: bool = True) -> Summary:
    """Run every task of ``work`` on Ray; returns what happened. Ctrl-C stops it (``interrupted``); a run
    that cannot go on (no worker left, the cluster gone) keeps its counts and says why in ``error``."""
    ray = require_ray(address)
    out = Summary()
    t0 = time.perf_counter()
    stdout = sys.stdout  # the paths written go here; Ray's own notices go to stderr meanwhile
    actors: list[Any] = []
    try:
        with joined(address, note=note) as cluster:
            try:
                _start(ray, cluster, cfg, workers, len(work.tasks), note, out, actors)
                _loop(ray, work, actors, out, show or (lambda path: _write_line(path, stdout)), progress)
            finally:
                for a in actors:
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # already gone with its node: nothing to stop
                        pass
    except KeyboardInterrupt:  # the edits in flight are dropped with their workers; a re-run redoes them
        out.interrupted = True
    except ScaleError as e:
        out.error = str(e)
    except ray.exceptions.RayError as e:  # the cluster itself failed (head gone, a node without the package)
        first = (str(e).strip().splitlines() or [""])[0]
        out.error = f"Ray failed: {type(e).__name__}: {first[:300]} (see the Ray logs under /tmp/ray)"
    finally:
        out.seconds = time.perf_counter() - t0
    return out


def _write_line(path: Path, stream: Any) -> None:
    from tqdm import tqdm

    tqdm.write(str(path), file=stream)  # above the bar


def _start(ray: Any, cluster: Any, cfg: Config, workers: Workers, tasks: int, note: Callable[[str], None],
           out: Summary, actors: list[Any]) -> None:
    """Create the workers (into ``actors``, so they are stopped whatever happens) and wait until each has its
    engine."""
    n, cpus, gpus, device = _sizing(cluster, cfg, workers, tasks)
    # a whole-node worker computes as a daemon there would (torch's default threads); a smaller one with
    # the CPUs it reserved
    whole = workers.cpus is None and not gpus
    wcfg = replace(cfg, device=device, threads=cfg.threads or (0 if whole or gpus else max(1, int(cpus))),
                   foreground=False, warm_up=False)
    remote = ray.remote(Editor).options(num_cpus=cpus, num_gpus=gpus, max_restarts=ATTEMPTS, max_task_retries=0)
    threads_env = os.environ.get("OMP_NUM_THREADS") if whole else str(max(1, int(cpus)))
    actors += [remote.remote(wcfg, threads_env) for _ in range(n)]
    infos = ray.get([a.info.remote() for a in actors])
    bad = next((i["error"] for i in infos if i["error"]), None)
    if bad:
        raise ScaleError(f"A Ray worker could not load the engine: {bad}")
    out.workers, out.where = n, cluster.describe()
    note(f"{tasks} edit(s) on {n} Ray worker(s) of {out.where}: {infos[0]['weights']}, {infos[0]['device']}; "
         f"neighbours: {infos[0]['source']}")


def _loop(ray: Any, work: Work, actors: list[Any], out: Summary, show: Callable[[Path], None],
          progress: bool) -> None:
    """Keep every worker busy until each task has its result, its failure, or used its attempts."""
    from dfi_engine.bars import bar as progress_bar

    todo: deque[tuple[Any, int]] = deque((t, 1) for t in work.tasks)
    flying: dict[Any, tuple[Any, int, Any, int]] = {}  # ref -> (task, attempt, loaded, worker)
    pool = Pool(actors, IN_FLIGHT_PER_WORKER)
    bar = progress_bar(total=len(work.tasks), unit="edit", disable=not progress, dynamic_ncols=True)
    try:
        while todo or flying:
            while todo and (i := pool.free()) is not None:
                task, attempt = todo.popleft()
                try:
                    loaded, msg = work.request(task)
                except work.refusals as e:
                    out.failed.append((work.name(task), str(e)))
                    bar.update(1)
                    continue
                flying[actors[i].run.remote(msg)] = (task, attempt, loaded, i)
                pool.sent(i)
            if not flying:
                pool.check_alive()
                time.sleep(0.1)  # every worker is restarting
                continue
            ready, _ = ray.wait(list(flying), num_returns=1, timeout=0.5)
            if not ready:
                continue
            task, attempt, loaded, i = flying.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                pool.back(i, ok=False)  # that worker gets nothing while Ray restarts it
                attempt += 1
                if attempt <= ATTEMPTS:
                    out.retried += 1
                    todo.appendleft((task, attempt))
                else:
                    why = f"its worker was lost {ATTEMPTS} times ({type(e).__name__})"
                    out.failed.append((work.name(task), why))
                    bar.update(1)
                continue
            pool.back(i, ok=True)
            bar.update(1)
            if not result["ok"]:
                hint = f" {result['hint']}" if result.get("hint") else ""
                out.failed.append((work.name(task), f"{result['message']}{hint}"))
                continue
            try:
                for path in work.save(task, result, loaded):
                    out.written.append(path)
                    show(path)
                out.edited += 1
            except work.refusals as e:
                out.failed.append((work.name(task), str(e)))
    finally:
        bar.close()
