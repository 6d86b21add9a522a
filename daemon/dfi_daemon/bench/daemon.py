"""End-to-end edit latency for ``dfi bench``: a real daemon process, real sockets, a real request.

A private daemon (own runtime/state folders, synthetic neighbour source, the
bench's weights and device) is started and timed until it answers; then one
edit is sent twice. *Cold* is the first request on the fresh daemon (first
use of every code path and allocation); *warm* is the same request again, what
a user sees from the second click on. The daemon is always stopped afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

from dfi_wire import protocol as P

from ..private_daemon import PrivateDaemon


def run(args: argparse.Namespace, log: Callable[[str], None], cuda: bool) -> dict[str, Any]:
    import numpy as np

    from dfi_engine.synthetic import face

    size = args.daemon_size or (48 if args.quick else 200)
    iterations = args.daemon_iterations or (4 if args.quick else (500 if cuda else 10))
    k = args.daemon_k or (2 if args.quick else (100 if cuda else 8))
    repeats = max(1, args.daemon_repeats)
    device = "cuda" if cuda else "cpu"
    photo = np.ascontiguousarray(face(np.random.default_rng(5), False, size))
    image = P.image_map(photo.tobytes(), size, size, "RGB8")
    request = f"facehair at {size}x{size}, 1 strength, {iterations} iterations, K={k}+{k}, synthetic neighbours"
    log(f"daemon: starting a private daemon ({args.weights}, {device}); request: {request}")
    d = PrivateDaemon(None, "--device", device, weights=args.weights, database="synthetic",
                      threads=args.threads or 0)
    try:
        t0 = time.perf_counter()
        d.start(timeout=600.0)
        startup = time.perf_counter() - t0
        times = []
        with d.client(timeout=600.0) as c:
            c.hello()
            for i in range(1 + repeats):
                msg = P.edit_request(image, "facehair", [1.0], iterations=iterations, k=k, scaling="none")
                t = time.perf_counter()
                reply = c.run_job(msg, timeout=600.0)
                times.append(time.perf_counter() - t)
                if reply.get("type") != "result":
                    raise RuntimeError(f"daemon answered {reply.get('type')!r}, not a result")
                log(f"daemon: request {i + 1}: {times[-1]:.2f} s")
        rss = d.rss_kb() * 1024
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
    return {"request": request, "startup_s": startup, "cold_s": times[0], "warm_s": statistics.median(times[1:]),
            "warm_runs": times[1:], "daemon_rss_bytes": rss}
