"""Where the daemon listens: endpoint checks and the per-endpoint lock (CURVE is in ``auth``).

The lock is taken before anything slow: a second daemon on the same endpoint
fails fast with a clear message, and a stale socket or pid file left by a crash
is simply replaced.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import stat

from .. import paths
from .config import EXIT_RUNNING, EXIT_USAGE, StartError

log = logging.getLogger("dfi.daemon")
LOOPBACK_NAMES = ("localhost",)


def check_endpoint(endpoint: str, curve: bool) -> None:
    """Only ipc:// and tcp://; TCP on a non-loopback address only with CURVE keys."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if not path.startswith("/"):
            raise StartError(f"ipc endpoint {endpoint!r} must use an absolute path.", EXIT_USAGE)
        if len(path.encode()) > paths.MAX_IPC_PATH:
            raise StartError(f"Socket path {path} is {len(path.encode())} bytes; Unix sockets allow "
                             f"{paths.MAX_IPC_PATH}. Use a shorter --runtime-dir.", EXIT_USAGE)
        return
    if not endpoint.startswith("tcp://"):
        raise StartError(f"Unsupported endpoint {endpoint!r}. Use ipc:///path/to/socket or tcp://127.0.0.1:PORT.",
                         EXIT_USAGE)
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise StartError(f"TCP endpoint {endpoint!r} needs an explicit port, e.g. tcp://127.0.0.1:5557.", EXIT_USAGE)
    if not is_loopback(host) and not curve:
        raise StartError(
            f"Refusing to listen on {endpoint}: that address is reachable from other machines and no CURVE keys "
            "are configured, so anyone on the network could run jobs. Use tcp://127.0.0.1:PORT (or the default "
            "Unix socket), or configure CURVE encryption and client authentication with --curve-dir "
            "(see docs/protocol.md, 'Remote use').", EXIT_USAGE)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # names other than localhost, '*', interface names: treat as exposed


class EndpointLock:
    """An exclusive lock on the endpoint's pid file, held for the daemon's lifetime."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.pid_path = paths.pid_file(endpoint)
        self.sock_path = paths.ipc_path(endpoint)
        self._fd: int | None = None

    def acquire(self) -> None:
        self._refuse_non_socket()
        if not self.pid_path.parent.exists():  # an explicit ipc path in a new folder: make it private
            self.pid_path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(self.pid_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode(errors="replace").split()
            os.close(fd)
            pid = other[0] if other else "?"
            raise StartError(
                f"A dfi daemon is already running on {self.endpoint} (pid {pid}). Use it, stop it with "
                "'dfi daemon stop', or start this one on another --endpoint.", EXIT_RUNNING) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.endpoint}\n".encode())
        self._fd = fd
        if self.sock_path is not None and (self.sock_path.exists() or self.sock_path.is_symlink()):
            log.info("removing stale socket %s left by a daemon that did not shut down", self.sock_path)
            self.sock_path.unlink()

    def _refuse_non_socket(self) -> None:
        """Only a stale *socket* may be replaced: an ipc path naming any other file is the user's file."""
        path = self.sock_path
        if path is not None and (path.exists() or path.is_symlink()) and not stat.S_ISSOCK(path.lstat().st_mode):
            raise StartError(f"{path} exists and is not a socket; the daemon will not replace it. Choose another "
                             "--endpoint (ipc://PATH names the socket the daemon creates).", EXIT_USAGE)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the socket and pid file, then let the lock go."""
        if self._fd is None:
            return
        if self.sock_path is not None:
            self.sock_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
