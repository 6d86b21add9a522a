"""The daemon's side of its front door (``front``): start it, talk to it, restart it when it goes.

The link is a PAIR socket on a private Unix socket in the runtime folder. Replies the
daemon sends while a front is being replaced are lost, like replies to a dropped
connection; clients keep their routing ids across the reconnect, so their jobs and
later replies still find them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq
from dfi_wire import protocol as P

from .. import paths
from .config import EXIT_ERROR, EXIT_RUNNING, Config, StartError
from .front import EXIT_BUDGET, LINK_QUEUE

log = logging.getLogger("dfi.daemon")
START_TIMEOUT_S = 30.0
RESTART_PAUSE_S = 0.5  # between restarts, so a peer that keeps flooding cannot make us spin


def budget_bytes(cfg: Config) -> int:
    """What the front may hold: a few requests in, a few full results out, plus the process itself."""
    largest_result = P.MAX_STRENGTHS * cfg.max_pixels * 4
    return 128 * 2**20 + 4 * cfg.max_message_bytes + 2 * largest_result


def remove_stale_links(folder: Path) -> list[Path]:
    """Remove the link sockets of daemons that are gone: one is left by every daemon that was killed.

    A link is named after its daemon's pid. It is stale when that pid is not running, or runs a program
    that is no dfi daemon (the pid was reused); links of live daemons (another endpoint, the same
    runtime folder) stay. Only sockets with exactly that name are touched.
    """
    removed = []
    for path in folder.glob("front-*.sock"):
        pid = path.name[len("front-"):-len(".sock")].removesuffix("-gate")  # also the ROUTER behind a gate
        if not pid.isdigit() or int(pid) == os.getpid() or not path.is_socket() or _is_daemon(int(pid)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError as e:
            log.warning("could not remove the stale link %s: %s", path, e)
    if removed:
        log.info("removed %d link socket(s) left by daemons that were killed: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _is_daemon(pid: int) -> bool:
    """Whether ``pid`` runs and may be a dfi daemon (when in doubt, it is: its link is left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): a live pid counts as a daemon
    args = cmdline.split(b"\0")  # 'python -m dfi_daemon.server', or the 'dfi' command ('dfi daemon start')
    return any(b"dfi_daemon" in a or os.path.basename(a) == b"dfi" for a in args)


class FrontLink:
    def __init__(self, ctx: zmq.Context, cfg: Config, curve_dir: Path | None) -> None:
        self.cfg = cfg
        self.curve_dir = curve_dir
        self.path = paths.runtime_dir() / f"front-{os.getpid()}.sock"
        self.gate_path = self.path.with_name(f"front-{os.getpid()}-gate.sock")  # see handshake_gate
        remove_stale_links(self.path.parent)
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        self.sock.setsockopt(zmq.RCVHWM, LINK_QUEUE)  # requests wait in the front, which then stops reading
        self.path.unlink(missing_ok=True)
        self.sock.bind(f"ipc://{self.path}")
        os.chmod(self.path, 0o600)
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._next_start = 0.0

    def start(self) -> None:
        """Start a front and wait until it listens; a failure to listen is a StartError."""
        argv = [sys.executable, "-m", "dfi_daemon.server.front", "--endpoint", self.cfg.endpoint,
                "--backend", f"ipc://{self.path}", "--max-message-bytes", str(self.cfg.max_message_bytes),
                "--budget-bytes", str(budget_bytes(self.cfg)), "--hold-s", str(self.cfg.client_timeout_s),
                "--gate-socket", str(self.gate_path)]
        if self.curve_dir is not None:
            argv += ["--curve-dir", str(self.curve_dir)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if self.sock.poll(100):
                frames = self.sock.recv_multipart()
                if frames[0]:
                    continue  # a request already? not before ready: ignore
                kind, text = frames[1].decode(), frames[2].decode(errors="replace")
                if kind == "ready":
                    return
                if kind == "error":
                    errno, _, why = text.partition(" ")
                    self.proc.wait(5)
                    raise StartError(f"Cannot listen on {self.cfg.endpoint}: {why}. Is another program using it? "
                                     "Choose another --endpoint.",
                                     EXIT_RUNNING if errno == str(zmq.EADDRINUSE) else EXIT_ERROR)
            if self.proc.poll() is not None:
                raise StartError(f"The daemon's front door exited ({self.proc.returncode}) before listening on "
                                 f"{self.cfg.endpoint}; see the log.")
        self.proc.kill()
        raise StartError(f"The daemon's front door did not start listening within {START_TIMEOUT_S:g} s.")

    def check(self) -> None:
        """Start a new front if the last one exited (over its memory budget, or killed)."""
        if self.proc is None or self.proc.poll() is None or time.monotonic() < self._next_start:
            return
        code = self.proc.returncode
        why = "over its memory budget: a peer sent more than it may" if code == EXIT_BUDGET else f"code {code}"
        log.warning("front door exited (%s); starting a new one, clients reconnect", why)
        self.restarts += 1
        self._next_start = time.monotonic() + RESTART_PAUSE_S
        try:
            self.start()
        except StartError as e:
            log.error("%s", e)  # retried at the next check

    def send(self, client: bytes, payload: bytes | zmq.Frame, final: bool = False) -> None:
        try:
            self.sock.send_multipart([client, payload, b"1" if final else b"0"], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # no front at the moment: the reply is lost, as on a dropped connection
            log.debug("reply dropped: %s", e)

    def receive(self) -> list[bytes] | None:
        """The next request as [client, payload], or None ([] for a control message: none is expected now)."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        return frames if frames[0] else []

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the front to send what it holds and exit; kill it if it does not."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.sock.send_multipart([b"", b"stop", b""], zmq.NOBLOCK)
                self.proc.wait(timeout)
            except (zmq.ZMQError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.sock.close(linger=0)
        self.path.unlink(missing_ok=True)
        self.gate_path.unlink(missing_ok=True)
