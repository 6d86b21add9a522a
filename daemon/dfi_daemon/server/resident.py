"""The daemon's resident state: the network and the neighbour source, loaded once, behind a Runner.

Shared by the daemon process and by the Ray workers of ``dfi batch --ray``
(``dfi_daemon.scale``), so an edit computed on a cluster runs exactly the code
and settings a local daemon would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from dfi_wire import protocol as P

from .config import Config, StartError
from .runner import Runner

log = logging.getLogger("dfi.daemon")


def load_runner(cfg: Config, progress: bool | None = None) -> tuple[Runner, Config]:
    """(runner, cfg with 'auto' device, compute and work size resolved); StartError says what is wrong."""
    import torch

    from dfi_engine import load_network
    from dfi_engine.compute import set_compute
    from dfi_engine.devices import device_default, resolve_device
    from dfi_engine.errors import InputError

    from ..paths import user_attributes_path
    from .sources import SourceUnavailable, open_source

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    cfg = replace(cfg, device=str(resolve_device(cfg.device)))
    net = load_network(cfg.weights, cfg.device, progress=cfg.foreground if progress is None else progress)
    net.eval()
    try:
        cfg = replace(cfg, compute=set_compute(net, cfg.compute))
    except InputError as e:
        raise StartError(f"--compute: {e}") from None
    if cfg.work_size < 0:
        cfg = replace(cfg, work_size=int(device_default(cfg.device, "work_size")))
    try:
        source = open_source(cfg.database, [user_attributes_path()])
    except SourceUnavailable as e:
        raise StartError(f"{e} Start with --database synthetic for the offline smoke test, or --database none."
                         ) from None
    limits = P.Limits(max_pixels=cfg.max_pixels, max_message_bytes=cfg.max_message_bytes)
    runner = Runner(net, source, limits, cfg.work_size)
    log.info("weights: %s on %s, %s (%.2f s)", net.label, cfg.device, cfg.compute, time.perf_counter() - t0)
    log.info("neighbours: %s", source.label if source else "none (edits will answer no_database)")
    return runner, cfg
