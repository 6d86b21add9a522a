"""CURVE on every TCP endpoint: the local key folder, and the authenticator that checks clients.

For loopback TCP the daemon makes its own key pairs once, in a 0700 folder of 0600 files
(``paths.local_keys_dir()``); only the user who can read that folder can talk to it. Remote
use keeps its explicit ``--curve-dir`` (made by ``dfi daemon keys``), same layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zmq
from dfi_wire import keys as K

from .config import EXIT_USAGE, StartError


def ensure_keys(folder: Path, client: str = "client") -> Path:
    """Create the server's and one client's key pairs in ``folder`` unless they exist; private modes."""
    from zmq.auth import create_certificates

    clients = folder / K.CLIENTS
    old = os.umask(0o077)
    try:
        clients.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (folder / K.SERVER_SECRET).is_file():
            create_certificates(str(folder), "server")
        if not (folder / f"{client}.key_secret").is_file() or not (clients / f"{client}.key").is_file():
            public, _ = create_certificates(str(folder), client)
            Path(public).replace(clients / Path(public).name)
    finally:
        os.umask(old)
    for path in (folder, clients):
        path.chmod(0o700)
    for path in [*folder.glob("*.key*"), *clients.glob("*.key")]:
        path.chmod(0o600)
    return folder


def setup_curve(ctx: zmq.Context, sock: zmq.Socket, folder: Path) -> Any:
    """CURVE encryption + client authentication from a key folder; returns the running authenticator.

    Peers without an authorised key never get past the handshake, so nothing they send reaches the daemon.
    On TCP they reach ``sock`` through the handshake gate, over a Unix socket: ZAP sees no IP address
    there, so an IP allow list would have to be kept in the gate.
    """
    from zmq.auth import load_certificate
    from zmq.auth.thread import ThreadAuthenticator

    secret, clients = folder / K.SERVER_SECRET, folder / K.CLIENTS
    if not secret.is_file() or not clients.is_dir():
        raise StartError(f"CURVE folder {folder} needs {K.SERVER_SECRET} and a {K.CLIENTS}/ folder of client "
                         "public keys; create them with 'dfi daemon keys --dir FOLDER'.", EXIT_USAGE)
    public, private = load_certificate(str(secret))
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    sock.curve_secretkey = private
    sock.curve_publickey = public
    sock.curve_server = True
    return auth
