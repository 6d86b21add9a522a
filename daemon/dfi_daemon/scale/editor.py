"""The Ray worker: one resident engine that runs edit after edit, as a daemon's worker thread does.

Created as a Ray actor (``ray.remote(Editor).options(...)``), so the network and
the neighbour database load once per worker, not once per image. Requests are
the wire protocol's own messages and are checked by its own validator, so a
cluster refuses exactly what a daemon refuses.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from dfi_wire import protocol as P

from ..server.config import Config, StartError


class Editor:
    """Loads (network, source) with the daemon's loader; ``run`` answers like the daemon's final reply."""

    def __init__(self, cfg: Config, omp_threads: str | None = None) -> None:
        # before torch loads: the thread setting a daemon started by the driver would have (Ray sets
        # OMP_NUM_THREADS to the worker's CPUs; a whole-node worker must not keep that)
        if omp_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp_threads
        self.error: str | None = None
        try:
            from ..server.resident import load_runner

            self.runner, self.cfg = load_runner(cfg, progress=False)
        except StartError as e:
            self.error = str(e)
        except Exception as e:  # the engine's own refusals (weights, device) arrive as DFIError
            self.error = f"{type(e).__name__}: {e}"

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it loaded (or why it could not)."""
        out: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "error": self.error}
        if self.error is None:
            out.update(device=self.cfg.device, weights=self.runner.net.label,
                       source=self.runner.source.label if self.runner.source else None)
        return out

    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One request -> {"ok": True, images, notes, ...} or {"ok": False, code, message, hint}."""
        from dfi_engine.errors import DFIError
        from dfi_engine.progress import ignore, never  # progress inside a worker: the driver counts finished edits

        if self.error is not None:
            return {"ok": False, "code": "unavailable", "message": self.error, "hint": None}
        try:
            req = P.validate_request(msg, self.runner.limits)
            if not isinstance(req, P.Edit | P.Inpaint):
                raise P.ProtocolError("unknown_op", f"A Ray worker runs edits and fills, not {req.op!r}.",
                                      "Send an edit or inpaint request.")
            self.runner.check(req)
            return {"ok": True, **self.runner.run(req, self.runner.settings(req), ignore, never)}
        except (P.ProtocolError, DFIError) as e:
            return {"ok": False, "code": e.code, "message": e.message, "hint": e.hint}
        except Exception as e:  # as the daemon's worker: a bug costs one edit, not the batch
            return {"ok": False, "code": "internal_error", "message": f"Internal error: {type(e).__name__}: {e}",
                    "hint": "Please report it, with the Ray worker's log (under /tmp/ray/session_latest/logs)."}

