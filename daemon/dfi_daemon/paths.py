"""Where the daemon keeps its socket, pid file and log.

Stdlib + platformdirs only (the CLI imports this before deciding whether to
start a daemon, so it must be cheap). Environment variables override the
user directories so tests and packagers never touch the real ones:
``DFI_RUNTIME_DIR`` (socket, pid file), ``DFI_STATE_DIR`` (log) and
``DFI_ENDPOINT`` (the default endpoint), ``DFI_CONFIG_DIR`` (settings and local keys).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import warnings
from pathlib import Path

APP = "gimp-dfi"
SOCKET_NAME = "daemon.sock"
LOG_NAME = "daemon.log"
LOCAL_KEYS = "local-keys"
# sun_path is 108 bytes on Linux including the terminating NUL.
MAX_IPC_PATH = 107


class PathError(Exception):
    """A directory or endpoint is unusable; the message says what to do."""


def _platform_runtime_dir() -> str:
    import platformdirs

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; we check the dir ourselves
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_dir(APP)


def runtime_dir() -> Path:
    """Private directory for the socket and pid file (created 0700)."""
    env = os.environ.get("DFI_RUNTIME_DIR")
    if env:
        return ensure_private_dir(Path(env))
    try:
        return ensure_private_dir(Path(_platform_runtime_dir()))
    except (PermissionError, PathError):
        # No usable $XDG_RUNTIME_DIR (containers, su sessions): a per-user folder in the temp dir.
        return ensure_private_dir(Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}")


def state_dir() -> Path:
    """Directory for the log file (created 0700)."""
    env = os.environ.get("DFI_STATE_DIR")
    if env:
        return ensure_private_dir(Path(env))
    import platformdirs

    return ensure_private_dir(Path(platformdirs.user_state_dir(APP)))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, or check that an existing one is ours and make it private."""
    path = path.expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PathError(
            f"{path} belongs to another user (uid {st.st_uid}); refusing to put the daemon's socket there. "
            "Set DFI_RUNTIME_DIR / DFI_STATE_DIR or pass --runtime-dir / --state-dir to a folder you own."
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def default_endpoint() -> str:
    """``$DFI_ENDPOINT`` or a Unix socket in the runtime directory."""
    return os.environ.get("DFI_ENDPOINT") or f"ipc://{runtime_dir() / SOCKET_NAME}"


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, or None for other transports."""
    if not endpoint.startswith("ipc://"):
        return None
    return Path(endpoint[len("ipc://"):])


def pid_file(endpoint: str) -> Path:
    """One pid (and lock) file per endpoint: next to an ipc socket, in the runtime dir otherwise."""
    sock = ipc_path(endpoint)
    if sock is not None:
        return sock.with_name(sock.name + ".pid")
    safe = re.sub(r"[^A-Za-z0-9.]+", "_", endpoint)
    return runtime_dir() / f"daemon-{safe}.pid"


def log_file() -> Path:
    return state_dir() / LOG_NAME


def read_pid(endpoint: str) -> int | None:
    """The pid of the daemon serving ``endpoint``, or None if none is.

    A daemon holds an exclusive lock on its pid file for its whole life, so the
    lock (not the pid, which the system may have reused) says whether it is alive.
    """
    import fcntl

    try:
        fd = os.open(pid_file(endpoint), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.read(fd, 64).split()[0])
            except (ValueError, IndexError):
                return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def config_dir() -> Path:
    """The user's settings folder (``$DFI_CONFIG_DIR`` overrides platformdirs' user config folder)."""
    env = os.environ.get("DFI_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP)


def user_attributes_path() -> Path:
    """The user's own attribute definitions (added to / overriding the shipped ones)."""
    return config_dir() / "attributes.toml"


def local_keys_dir() -> Path:
    """The CURVE key pairs of loopback TCP endpoints (the daemon creates them; clients read them)."""
    return config_dir() / LOCAL_KEYS


def data_dir() -> Path:
    """Downloads and databases live here (platformdirs' user data folder)."""
    from platformdirs import user_data_path

    return user_data_path(APP)


def default_database() -> Path:
    """Where ``dfi db fetch lfw`` puts its database; the daemon's ``--database auto`` looks here."""
    return data_dir() / "databases" / "lfw-deepfunneled"
