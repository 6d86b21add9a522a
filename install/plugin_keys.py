"""The CURVE keys the plug-in presents to a ``tcp://`` daemon, copied into ``<plug-in folder>/keys/``.

Every TCP endpoint, loopback included, is CURVE-authenticated (``daemon/wire/keys.py``). The
daemon keeps its local key pairs in the user's config folder, which a Flatpak sandbox or a chroot
cannot see, so the installer copies the two files a client needs (the server's public key and the
client's secret key) next to the plug-in (``plugin/dfi_bridge.py`` KEYS_DIR). An ``ipc://``
endpoint relies on the socket's file permissions and gets no keys.

The keys are made where the daemon looks for them (``dfi_daemon.paths.local_keys_dir()``, so
``DFI_CONFIG_DIR`` applies): directly when this installer runs with the project's Python, else by
the Python of the recorded ``dfi`` command (its script's ``#!`` line), which has the package.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from plugin_targets import InstallError, wire_keys

FILES = (wire_keys.SERVER_PUBLIC, wire_keys.CLIENT_SECRET)
ENSURE = ("from dfi_daemon import paths; from dfi_daemon.server.auth import ensure_keys; "
          "print(ensure_keys(paths.local_keys_dir()))")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def dfi_python(dfi: list[str]) -> list[str] | None:
    """The interpreter behind a ``dfi`` console script: its ``#!`` line (POSIX), python.exe beside it (Windows)."""
    argv = dfi[2:] if dfi[:2] == ["flatpak-spawn", "--host"] else dfi
    if not argv:
        return None
    exe = Path(argv[0])
    if os.name == "nt":
        python = exe.parent / "python.exe"
        return [str(python)] if python.exists() else None
    try:
        with exe.open("rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if first.startswith(b"#!") and b"python" in first:
        return shlex.split(first[2:].decode(errors="replace").strip())
    return None


def local_keys(dfi: list[str]) -> Path:
    """The daemon's local key folder, with its key pairs made if they were not there yet."""
    try:
        from dfi_daemon import paths
        from dfi_daemon.server.auth import ensure_keys
    except ImportError:
        pass
    else:
        return ensure_keys(paths.local_keys_dir())
    python = dfi_python(dfi)
    if python:
        try:
            res = subprocess.run([*python, "-c", ENSURE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            res = subprocess.CompletedProcess(python, 1, "", str(e))
        if res.returncode == 0 and res.stdout.strip():
            return Path(res.stdout.strip().splitlines()[-1])
        why = f"{shlex.join(python)} could not make them: {res.stderr.strip()[-400:]}"
    else:
        why = "this Python has no dfi_daemon package and no dfi command was recorded (--dfi)"
    raise InstallError(f"The endpoint is tcp://, so the plug-in needs the daemon's CURVE keys, but {why}.\n"
                       "Run the installer with the project's Python (.venv/bin/python install/gimp_plugin.py), "
                       "or pass --keys-dir DIR with server.key and client.key_secret (dfi daemon keys --dir DIR).")


def key_files(endpoint: str, keys_dir: str | None, dfi: list[str], log: list[str]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the keys to copy for ``endpoint``: none for ipc://."""
    if not wire_keys.needs_keys(endpoint):
        return []
    folder = Path(keys_dir) if keys_dir else local_keys(dfi)
    missing = [n for n in FILES if not (folder / n).is_file()]
    if missing:
        raise InstallError(f"{folder} lacks {' and '.join(missing)}; make the keys with: dfi daemon keys --dir "
                           f"{folder}")
    host = re.sub(r":\d+$", "", endpoint[len("tcp://"):])
    if not keys_dir and host not in LOOPBACK:
        log.append(f"{endpoint} is not on this machine: the plug-in got this machine's local keys; for a "
                     "remote daemon pass --keys-dir with the keys its --curve-dir holds")
    log.append(f"CURVE keys for {endpoint} copied from {folder}")
    return [(n, (folder / n).read_bytes()) for n in FILES]
