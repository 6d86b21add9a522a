"""Starting, finding and stopping the daemon from the CLI (auto-start).

Stdlib + pyzmq only. The daemon is a detached ``python -m dfi_daemon.server``
in its own session, so it outlives the command that started it; the pid file
(held locked by the daemon) tells whether one is alive on an endpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dfi_wire.client import Client, DaemonError, DaemonUnavailable
from dfi_wire.keys import needs_keys

from .. import paths
from ..server.config import EXIT_RUNNING

START_REFUSED = "dfi daemon: cannot start:"  # how the daemon (server/process.py) words a start-up refusal


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stderr_file() -> Path:
    return paths.state_dir() / "daemon.stderr"


def start_detached(endpoint: str, daemon_argv: list[str]) -> subprocess.Popen:
    """Spawn a daemon in its own session; its output goes to the state dir."""
    cmd = [sys.executable, "-m", "dfi_daemon.server", "--endpoint", endpoint, "--background", *daemon_argv]
    err = stderr_file()
    with open(err, "wb") as out:  # only this start's output, for the error message
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True)


def wait_ready(client: Client, timeout: float, proc: subprocess.Popen | None = None) -> dict:
    """Ping until the daemon answers; fail early (with its last log lines) if the process died."""
    end = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None and proc.returncode != EXIT_RUNNING:
            tail = _tail(stderr_file(), 8) or _tail(paths.log_file(), 8)
            said = [ln.split(START_REFUSED, 1)[1].strip() for ln in tail.splitlines() if START_REFUSED in ln]
            if said:  # the daemon said why in one line: that line is the message
                raise DaemonError("daemon_start_failed", f"The daemon exited during start-up: {said[-1]}")
            raise DaemonError(
                "daemon_start_failed", f"The daemon exited during start-up (exit code {proc.returncode}):\n{tail}",
                "Fix the problem above and retry; 'dfi daemon logs' shows the full log.")
        left = end - time.monotonic()
        if left <= 0:
            raise DaemonUnavailable(
                f"The daemon on {client.endpoint} did not become ready within {timeout:g} s.",
                "Loading weights can take long the first time; see 'dfi daemon logs', or raise --start-timeout.")
        try:
            return client.hello(timeout=min(1.0, left))
        except DaemonUnavailable:
            continue


def connect(endpoint: str, timeout: float, autostart: bool, daemon_argv: list[str],
            start_timeout: float = 300.0, announce: bool = True,
            on_demand: bool = True) -> tuple[Client, subprocess.Popen | None]:
    """A client talking to a ready daemon on ``endpoint``; starts one if none runs and ``autostart``.

    Returns (client, the daemon process if this call started it).
    """
    if needs_keys(endpoint) and _local(endpoint):  # the daemon we may start uses these; make them now
        from ..server.auth import ensure_keys

        ensure_keys(paths.local_keys_dir())
    client = Client(endpoint, timeout, keys_dir=paths.local_keys_dir())
    try:
        sock = paths.ipc_path(endpoint)
        alive = paths.read_pid(endpoint)
        if alive or sock is None or sock.exists():
            try:
                client.hello(timeout=2.0 if alive is None else start_timeout)
                return client, None
            except DaemonUnavailable:
                if paths.read_pid(endpoint):
                    raise
        if not autostart:
            raise DaemonUnavailable(f"No dfi daemon is running on {endpoint}.",
                                    "Start one with 'dfi daemon start' (or leave out --no-autostart).")
        if not _local(endpoint):
            raise DaemonUnavailable(f"No dfi daemon answers on {endpoint}.",
                                    "Remote daemons are not started automatically: start it on that machine "
                                    "('dfi daemon start --endpoint ... --curve-dir ...') and check the CURVE keys.")
        if announce:
            print(f"dfi: starting the daemon on {endpoint} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = start_detached(endpoint, [*daemon_argv, "--auto-started"] if on_demand else daemon_argv)
        wait_ready(client, start_timeout, proc)
        if announce:
            print(f"dfi: daemon ready (pid {proc.pid}, {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        return client, proc
    except BaseException:
        client.close()
        raise


def _local(endpoint: str) -> bool:
    """ipc, or TCP on a loopback address: endpoints a daemon may be auto-started on."""
    if endpoint.startswith("ipc://"):
        return True
    import ipaddress

    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stop(endpoint: str, timeout: float = 30.0) -> str:
    """Ask the daemon to shut down (SIGTERM if it does not answer); returns what happened."""
    pid = paths.read_pid(endpoint)
    sock = paths.ipc_path(endpoint)
    if pid is None and sock is not None and not sock.exists():
        return f"no daemon is running on {endpoint}"
    with Client(endpoint, timeout=3.0, keys_dir=paths.local_keys_dir()) as client:
        try:
            client.shutdown(timeout=3.0)
            asked = True
        except DaemonError:
            asked = False
    if pid is None:
        return f"daemon on {endpoint} asked to shut down" if asked else f"no daemon answered on {endpoint}"
    if not asked:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if paths.read_pid(endpoint) != pid:
            return f"daemon (pid {pid}) stopped"
        time.sleep(0.1)
    raise DaemonError("stop_failed", f"The daemon (pid {pid}) did not stop within {timeout:g} s.",
                      f"Kill it with 'kill {pid}' (or kill -9).")
