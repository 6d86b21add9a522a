"""Scale-out on Ray: ``dfi batch --ray`` (edits) and ``dfi db build --ray`` (face preparation).

Ray is an optional extra (``pip install '.[ray]'``): nothing here is imported
unless a command is given ``--ray``. Each Ray worker keeps one resident engine
(``editor.Editor``), built by the daemon's own loader, so a cluster computes
exactly what a local daemon computes; the driver plans, reads inputs and writes
outputs with the CLI's own rules (``dfi_daemon.cli.plan``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType


class ScaleError(Exception):
    """Scale-out cannot start or go on; the message says what to do."""


def require_ray(address: str | None = None) -> ModuleType:
    """The ``ray`` module, or a ScaleError saying how to install it. Given the cluster's ``address`` first, it
    also sets what Ray reads when it is imported."""
    if address not in (None, "local", "auto") and _has_token():
        # 'ray start' turns token auth on, and only "auto" learns that from the session; an explicit address
        # would be refused for a missing token
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise ScaleError("Ray is not installed: pip install 'gimp-dfi[ray]' ('.[ray]' in a checkout; "
                         "install/bootstrap.sh does it), or run without --ray.") from None
    return ray


def _has_token() -> bool:
    """Whether this user has a Ray auth token (Ray's default place, or the variables that name one)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())
