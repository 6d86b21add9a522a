"""Real daemon processes for tests (ours and the plug-in's end-to-end tests).

``DaemonProcess`` is the benchmarks' private daemon with the tests' defaults
(seeded random weights, synthetic neighbours, one thread), and on exit it also
kills daemons that a CLI under test auto-started, found through their pid files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dfi_daemon.private_daemon import PrivateDaemon


class DaemonProcess(PrivateDaemon):
    """A daemon in a subprocess; use as a context manager (it is killed on exit)."""

    def __init__(self, base: Path | None = None, *extra: str, endpoint: str | None = None,
                 weights: str = "random:0", database: str = "synthetic", threads: int = 1) -> None:
        super().__init__(base, *extra, endpoint=endpoint, weights=weights, database=database, threads=threads)

    def stop(self) -> None:
        super().stop()
        kill_daemons(self.runtime)


def env_for(base: Path) -> dict[str, str]:
    """The caller's environment with every dfi folder pointed into ``base`` (and no other DFI_ settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFI_")}
    return {**env, "DFI_RUNTIME_DIR": str(base / "run"), "DFI_STATE_DIR": str(base / "state"),
            "DFI_CONFIG_DIR": str(base / "config")}


def run_cli(base: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``dfi ARGS`` in a subprocess with its folders in ``base``."""
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", *args], env=env_for(base), capture_output=True,
                          text=True, timeout=timeout)


def running_job(d: PrivateDaemon) -> str | None:
    with d.client(5) as c:
        return c.status()["queue"]["running"]


def kill_daemons(runtime_dir: Path) -> list[int]:
    """SIGKILL every dfi daemon whose pid file lies in ``runtime_dir`` (checked by command line)."""
    killed = []
    for pid_file in Path(runtime_dir).glob("*.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"dfi_daemon.server" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed
