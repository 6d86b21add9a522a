"""Which GIMPs one installer run acts on, from its options.

The detection itself is ``daemon/gimps.py`` (``dfi_daemon.gimps``), shared with ``dfi doctor``.
The installer loads that file by path rather than importing ``dfi_daemon``: it must run with a bare
system Python from the checkout, where the package is not installed, and the checkout's copy is
also the one whose files it installs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


class InstallError(Exception):
    """Something the user must fix; the message says what."""


def _load(name: str, path: Path) -> ModuleType:
    """A stdlib-only module of the checkout, by path (registered, so its dataclasses work)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gimps = _load("dfi_gimps", REPO / "daemon" / "gimps.py")
wire_keys = _load("dfi_wire_keys", REPO / "daemon" / "wire" / "keys.py")  # key file names, as the plug-in reads them


def split(command: str) -> list[str]:
    """A command line as argv; an existing path is one argument (Windows paths have spaces and backslashes)."""
    if Path(command).exists():
        return [command]
    return shlex.split(command, posix=os.name != "nt")


def host(args: argparse.Namespace) -> gimps.Host:
    """Where to look for GIMP: this machine (as ``--target`` names it), or inside ``--root``."""
    system = {"macos": "Darwin", "windows": "Windows", "linux": "Linux", "flatpak": "Linux"}.get(args.target)
    h = gimps.Host(root=Path(args.root).resolve() if args.root else None)
    if system:
        h.system = system
    return h


def versions(args: argparse.Namespace) -> list[str]:
    try:
        return gimps.parse_versions(args.gimp_version)
    except ValueError as e:
        raise InstallError(str(e)) from None


def targets(args: argparse.Namespace) -> list[gimps.Gimp]:
    """The GIMPs to install into: ``--profile`` (or GIMP3_DIRECTORY) alone, else every one found (or those of
    ``--gimp-version``). Nothing found and nothing asked for is an error that says what to pass."""
    h = host(args)
    python = split(args.gimp_python) if args.gimp_python else None
    picked = gimps.select(h, args.target, versions(args), args.profile, python)
    if not picked:
        where = f"inside {h.root}" if h.root else "on this machine"
        raise InstallError(
            f"No GIMP 3 found {where} (looked for gimp-3.x / gimp-console-3.x on PATH, a Flatpak, app bundles, "
            f"install folders and GIMP/3.x profile folders such as {h.profile_base(h.native)}/3.0).\n"
            "Install GIMP 3 and re-run, or name the version to install for: --gimp-version 3.0 "
            "(or a profile folder: --profile DIR).")
    return picked


def uninstall_targets(args: argparse.Namespace) -> list[gimps.Gimp]:
    """Where to remove the plug-in from: the GIMPs ``targets`` would pick, plus every other profile that holds
    an install (a GIMP removed since, or one found only by its profile), within ``--gimp-version``."""
    h = host(args)
    wanted = versions(args)
    picked = gimps.select(h, args.target, wanted, args.profile)
    if args.profile or (args.target != "flatpak" and h.env.get("GIMP3_DIRECTORY")):
        return picked
    known = {g.profile for g in picked}
    for kind, profile in gimps.installed(h, args.target):
        if profile not in known and (not wanted or profile.name in wanted):
            picked.append(gimps.Gimp(profile.name, kind, profile, root=h.root, found=["an earlier install"]))
    return picked
