"""The CURVE keys the plug-in presents to a ``tcp://`` daemon, copied into ``<plug-in folder>/keys/``.

Every TCP endpoint, loopback included, is CURVE-authenticated (:mod:`dfi_wire.keys`). The daemon
keeps its local key pairs in the user's config folder, which a Flatpak sandbox or a chroot cannot
see, so the installer copies the two files a client needs (the server's public key and the client's
secret key) next to the plug-in (``dfi_bridge.py`` KEYS_DIR). An ``ipc://`` endpoint relies on the
socket's file permissions and gets no keys. The keys are made where the daemon looks for them
(``dfi_daemon.paths.local_keys_dir()``, so ``DFI_CONFIG_DIR`` applies).
"""

from __future__ import annotations

import re
from pathlib import Path

from dfi_wire import keys as wire_keys

from .. import paths
from ..server.auth import ensure_keys
from .targets import InstallError

FILES = (wire_keys.SERVER_PUBLIC, wire_keys.CLIENT_SECRET)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def key_files(endpoint: str, keys_dir: str | None, dfi: list[str], log: list[str]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the keys to copy for ``endpoint``: none for ipc://."""
    if not wire_keys.needs_keys(endpoint):
        return []
    folder = Path(keys_dir) if keys_dir else ensure_keys(paths.local_keys_dir())
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
