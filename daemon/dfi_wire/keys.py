"""Which CURVE keys a client presents, and what a refused handshake means.

Every TCP endpoint, loopback included, is CURVE-authenticated: on a shared machine any
local user can reach 127.0.0.1. The daemon keeps its local key pairs in a private folder
(``local-keys`` in the user's config folder); the CLI reads them there and the installer
copies the client's half into the plug-in's folder (Flatpak and other sandboxes cannot
see the user's config folder). A Unix socket relies on its file permissions instead.
Stdlib + pyzmq only, like the rest of the wire package.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENT_SECRET = "client.key_secret"
CLIENTS = "clients"  # the daemon authorises every public key in this sub-folder


def needs_keys(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def client_keys(folder: str | Path | None) -> tuple[str, str] | None:
    """(server public key file, client secret key file) in ``folder``, or None if either is missing."""
    if folder is None:
        return None
    server, client = Path(folder) / SERVER_PUBLIC, Path(folder) / CLIENT_SECRET
    return (str(server), str(client)) if server.is_file() and client.is_file() else None


def from_env() -> tuple[str, str] | None:
    """Explicit key files: DFI_CURVE_SERVER_KEY and DFI_CURVE_CLIENT_KEY (remote use)."""
    server, client = os.environ.get("DFI_CURVE_SERVER_KEY"), os.environ.get("DFI_CURVE_CLIENT_KEY")
    return (server, client) if server and client else None


def resolve(endpoint: str, curve: tuple[str, str] | None, keys_dir: str | Path | None) -> tuple[str, str] | None:
    """The keys to present: explicit ones, then the environment's, then the key folder's (TCP only)."""
    if curve:
        return curve
    if not needs_keys(endpoint):
        return None
    return from_env() or client_keys(keys_dir)
