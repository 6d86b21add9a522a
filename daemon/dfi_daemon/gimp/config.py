"""What ``gimp-dfi.json`` records for the plug-in: the dfi command, the daemon endpoint, auto-start.

Options given now win, then what the previous install into the same profile recorded, then what an
install for another GIMP version of the same kind recorded (so a GIMP upgraded from 3.0 to 3.2 gets
the same settings without the user repeating them), then the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from .. import paths
from . import found
from .files import installed_from
from .targets import split

FLATPAK_ENDPOINT = "tcp://127.0.0.1:5557"  # the Flatpak sandbox cannot see the user's runtime dir


def default_dfi() -> list[str]:
    """The dfi executable of this environment (the venv the installer runs in), else the one on PATH."""
    here = Path(sys.executable).parent / ("dfi.exe" if os.name == "nt" else "dfi")
    if here.exists():
        return [str(here)]
    on_path = shutil.which("dfi")
    return [on_path] if on_path else []


def default_endpoint(kind: str) -> str:
    if kind == "flatpak":
        return FLATPAK_ENDPOINT
    return paths.default_endpoint()


def read_config(folder: Path) -> dict:
    try:
        raw = json.loads((folder / found.CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def previous(target: found.Gimp, others: list[found.Gimp]) -> tuple[dict, str]:
    """(recorded settings, where from): this profile's install, else another version's of the same kind."""
    own = read_config(target.folder)
    if own:
        return own, ""
    for other in sorted(others, key=lambda g: found.version_key(g.version), reverse=True):
        if other.kind == target.kind and other.profile != target.profile:
            recorded = read_config(other.folder)
            if recorded:
                return recorded, other.label
    return {}, ""


def settings(args: argparse.Namespace, target: found.Gimp, others: list[found.Gimp], notes: list[str]) -> dict:
    """The settings to record for ``target``; ``notes`` gets what the user should know about them."""
    old, source = previous(target, others)
    if source:
        notes.append(f"settings taken over from the install for {source}")
    if args.dfi is not None:
        dfi = split(args.dfi)
        if target.kind == "flatpak":
            dfi = ["flatpak-spawn", "--host", *dfi]
    elif "dfi" in old:
        dfi = old["dfi"]
    elif target.root is not None:
        dfi = []  # this environment's dfi cannot run inside the root
    else:
        dfi = default_dfi()
        if target.kind == "flatpak" and dfi:
            dfi = ["flatpak-spawn", "--host", *dfi]
    if dfi and dfi[0] == "flatpak-spawn":
        notes.append("Flatpak GIMP can start the daemon only with permission to run host commands: "
                     f"flatpak override --user --talk-name=org.freedesktop.Flatpak {found.FLATPAK_ID} "
                     f"(or start it yourself: dfi daemon start --endpoint {FLATPAK_ENDPOINT}).")
    endpoint = args.endpoint or old.get("endpoint")
    if not endpoint:
        # a root or sandbox cannot see the user's runtime folder: loopback TCP reaches the host's daemon
        endpoint = FLATPAK_ENDPOINT if target.root is not None else default_endpoint(target.kind)
    autostart = args.autostart if args.autostart is not None else old.get("autostart_requested", True)
    if autostart and not dfi:
        notes.append("No 'dfi' to start the daemon with: automatic start is off until you pass --dfi "
                     f"(start it yourself: dfi daemon start --endpoint {endpoint}).")
    daemon_args = split(args.daemon_args) if args.daemon_args is not None else old.get("daemon_args", [])
    return {"endpoint": endpoint, "dfi": dfi, "daemon_args": daemon_args, "autostart": bool(autostart and dfi),
            "autostart_requested": autostart, "installed_from": installed_from()}
