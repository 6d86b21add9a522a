"""A throwaway daemon process in its own folders, for the daemon benchmarks and the tests.

Starts ``python -m dfi_daemon.server`` with its own runtime and state folders,
waits until it answers, and is stopped on exit, so a benchmark never touches
the user's own daemon, socket or log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dfi_wire.client import Client, DaemonUnavailable
from dfi_wire.keys import needs_keys

from .paths import LOCAL_KEYS
from .server.auth import ensure_keys


class PrivateDaemon:
    """A daemon in a subprocess; use as a context manager (it is killed on exit)."""

    def __init__(self, base: Path | None = None, *extra: str, endpoint: str | None = None,
                 weights: str = "random:0", database: str = "synthetic", threads: int = 0) -> None:
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="dfi-"))
        self.runtime = self.base / "run"
        self.state = self.base / "state"
        self.config = self.base / "config"  # settings and the local CURVE keys of a TCP endpoint
        self.endpoint = endpoint or f"ipc://{self.runtime / 'daemon.sock'}"
        self.args = ["--endpoint", self.endpoint, "--weights", weights, "--database", database,
                     "--threads", str(threads), *extra]
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.base / "daemon-test.stderr"

    def env(self) -> dict[str, str]:
        """Environment that points any dfi process at this daemon's folders."""
        return {**os.environ, "DFI_RUNTIME_DIR": str(self.runtime), "DFI_STATE_DIR": str(self.state),
                "DFI_CONFIG_DIR": str(self.config), "DFI_ENDPOINT": self.endpoint}

    def start(self, wait: bool = True, timeout: float = 90.0) -> PrivateDaemon:
        self.base.mkdir(parents=True, exist_ok=True)
        if needs_keys(self.endpoint):  # made up front, as the CLI does, so our client holds them from the start
            ensure_keys(self.config / LOCAL_KEYS)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "dfi_daemon.server", *self.args], env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        assert self.proc is not None
        end = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.stderr()}")
                try:
                    return c.hello(timeout=0.5)
                except DaemonUnavailable:
                    continue
        raise TimeoutError(f"daemon not ready within {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def client(self, timeout: float = 20.0) -> Client:
        return Client(self.endpoint, timeout, keys_dir=self.config / LOCAL_KEYS)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> PrivateDaemon:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
