"""Which GIMPs one installer run acts on, from its options.

The detection itself is :mod:`dfi_daemon.gimp.found`, shared with ``dfi doctor``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from . import found


class InstallError(Exception):
    """Something the user must fix; the message says what."""


def split(command: str) -> list[str]:
    """A command line as argv; an existing path is one argument (Windows paths have spaces and backslashes)."""
    if Path(command).exists():
        return [command]
    return shlex.split(command, posix=os.name != "nt")


def host(args: argparse.Namespace) -> found.Host:
    """Where to look for GIMP: this machine (as ``--target`` names it), or inside ``--root``."""
    system = {"macos": "Darwin", "windows": "Windows", "linux": "Linux", "flatpak": "Linux"}.get(args.target)
    h = found.Host(root=Path(args.root).resolve() if args.root else None)
    if system:
        h.system = system
    return h


def versions(args: argparse.Namespace) -> list[str]:
    try:
        return found.parse_versions(args.gimp_version)
    except ValueError as e:
        raise InstallError(str(e)) from None


def targets(args: argparse.Namespace) -> list[found.Gimp]:
    """The GIMPs to install into: ``--profile`` (or GIMP3_DIRECTORY) alone, else every one found (or those of
    ``--gimp-version``). Nothing found and nothing asked for is an error that says what to pass."""
    h = host(args)
    python = split(args.gimp_python) if args.gimp_python else None
    picked = found.select(h, args.target, versions(args), args.profile, python)
    if not picked:
        where = f"inside {h.root}" if h.root else "on this machine"
        raise InstallError(
            f"No GIMP 3 found {where} (looked for gimp-3.x / gimp-console-3.x on PATH, a Flatpak, app bundles, "
            f"install folders and GIMP/3.x profile folders such as {h.profile_base(h.native)}/3.0).\n"
            "Install GIMP 3 and re-run, or name the version to install for: --gimp-version 3.0 "
            "(or a profile folder: --profile DIR).")
    return picked


def uninstall_targets(args: argparse.Namespace) -> list[found.Gimp]:
    """Where to remove the plug-in from: the GIMPs ``targets`` would pick, plus every other profile that holds
    an install (a GIMP removed since, or one found only by its profile), within ``--gimp-version``."""
    h = host(args)
    wanted = versions(args)
    picked = found.select(h, args.target, wanted, args.profile)
    if args.profile or (args.target != "flatpak" and h.env.get("GIMP3_DIRECTORY")):
        return picked
    known = {g.profile for g in picked}
    for kind, profile in found.installed(h, args.target):
        if profile not in known and (not wanted or profile.name in wanted):
            picked.append(found.Gimp(profile.name, kind, profile, root=h.root, found=["an earlier install"]))
    return picked
