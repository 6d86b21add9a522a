"""Joining a Ray cluster, or starting one on this machine, for the length of one command."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import Any

from . import ScaleError, require_ray

LOCAL = "local"


@dataclass
class Cluster:
    address: str  # what was joined: "local" for a cluster this command started
    cpus: int
    gpus: int
    nodes: int
    node_cpus: int  # the CPUs of the smallest node with any: what one whole-node worker may reserve
    largest: tuple[int, int] = (0, 0)  # (CPUs, GPUs) of the largest node: more per worker never starts

    def describe(self) -> str:
        where = "a local Ray cluster on this machine" if self.address == LOCAL else f"Ray at {self.address}"
        gpus = f", {self.gpus} GPU(s)" if self.gpus else ""
        return f"{where} ({self.nodes} node(s), {self.cpus} CPU(s){gpus})"


@contextmanager
def joined(address: str, note: Callable[[str], None] = print) -> Iterator[Cluster]:
    """Join ``address`` ("auto": the cluster 'ray start' runs here, else a new local one; "local": always a
    new one on this machine, all its cores) and leave it afterwards. Meanwhile ``sys.stdout`` is
    stderr: stdout is the caller's, for what it made (take ``sys.stdout`` before entering)."""
    ray = require_ray(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a photo tool
    # Ray says at every start that its token authentication is on: that is what we want, not news
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # workers' own output stays in the Ray logs: stdout carries only the paths written
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    with redirect_stdout(sys.stderr):  # Ray prints its own notices (a worker died, ...) to stdout
        started_here = _init(ray, address, note, quiet)
        try:
            res = ray.cluster_resources()
            alive = [n for n in ray.nodes() if n.get("Alive")]
            per_node = [(int(n.get("Resources", {}).get("CPU", 0)), int(n.get("Resources", {}).get("GPU", 0)))
                        for n in alive]
            yield Cluster(LOCAL if started_here else address, int(res.get("CPU", 0)), int(res.get("GPU", 0)),
                          len(alive), min((c for c, _ in per_node if c), default=0),  # a 0-CPU head runs no work
                          (max((c for c, _ in per_node), default=0), max((g for _, g in per_node), default=0)))
        finally:
            ray.shutdown()


def _head_of(address: str) -> str | None:
    """HOST:PORT of the head ``address`` names ("auto": the cluster 'ray start' left a record of here), or None."""
    if address != "auto":
        return address.split("://", 1)[-1]
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None
    except Exception:  # Ray's internals moved: let ray.init find it
        return "auto"


def _answers(head: str, timeout: float = 3.0) -> bool:
    """Whether something listens at HOST:PORT (ray.init itself would wait for an absent head for minutes)."""
    host, _, port = head.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return True
    except (OSError, ValueError):
        return False


def _init(ray: Any, address: str, note: Callable[[str], None], quiet: dict) -> bool:
    """ray.init as asked; True if it started a new local cluster."""
    try:
        if address != LOCAL:
            head = _head_of(address)
            if head is not None and (head == "auto" or _answers(head)):
                ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
                return False
            if address != "auto":
                raise ScaleError(f"Cannot reach the Ray cluster at {address}: nothing answers there. Start it with "
                                 "'ray start --head' on that machine, or use --ray local.")
            note("no Ray cluster is running here; starting a local one for this command")
        ray.init(**quiet)
        return True
    except ScaleError:
        raise
    except Exception as e:  # Ray's own start-up errors (ports, /dev/shm, versions) as one line
        raise ScaleError(f"Ray could not start: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from None
