"""Install, upgrade or remove the gimp-dfi plug-in for every GIMP 3.x on this machine.

    dfi gimp install                      # install or upgrade, for every GIMP 3 found
    dfi gimp install --gimp-version 3.2   # only for GIMP 3.2 (repeatable, or 3.0,3.2)
    dfi gimp uninstall                    # remove exactly what was installed, everywhere

GIMP keeps one profile per minor version (``GIMP/3.0``, ``GIMP/3.2``) and does not carry plug-ins
over to a new one, so the plug-in goes into the profile of each GIMP found (binaries on PATH,
Flatpak, app bundles, install folders, existing profile folders: :mod:`dfi_daemon.gimp.found`);
re-running after a GIMP upgrade installs it for the new version too (``dfi doctor`` says when that
is due). For each, it copies the package data of :mod:`dfi_plugin` and the wire package
(:mod:`dfi_wire`) unchanged into ``<profile>/plug-ins/gimp-dfi/``, records the dfi command and the
daemon's endpoint (``gimp-dfi.json``), copies the daemon's CURVE keys for a tcp:// endpoint
(``keys/``), makes pyzmq and msgpack importable by that GIMP's Python, checks the result with that
Python and prints a report per version.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from . import found
from .config import settings
from .deps import dependencies
from .files import install_files, payload, read_manifest, remove_files
from .keys import key_files
from .targets import InstallError, host, targets, uninstall_targets


def say(line: str, indent: bool = False) -> None:
    print(f"gimp-dfi: {'  ' if indent else ''}{line}", flush=True)


def verify(target: found.Gimp) -> dict:
    with tempfile.TemporaryDirectory(dir=target.folder.parent) as tmp:
        try:
            return found.check_plugin(target, Path(tmp))
        except found.GimpError as e:
            raise InstallError(str(e)) from None


def install_one(target: found.Gimp, args: argparse.Namespace, others: list[found.Gimp]) -> str:
    """Install into one GIMP's profile; returns what happened ("installed", "upgraded"), raises InstallError."""
    folder = target.folder
    say(f"{target.label}: {folder} (found: {target.how or 'as asked'})")
    log: list[str] = []
    notes: list[str] = []
    old = read_manifest(folder)
    config = settings(args, target, others, notes)
    key_log: list[str] = []
    keys = key_files(config["endpoint"], args.keys_dir, config["dfi"], key_log)
    vendored = dependencies(target, args, log)
    written = install_files(folder, payload(config, vendored, keys), target.python)
    stale = [f for f in old if f not in written and f != found.MANIFEST]
    remove_files(folder, stale)
    log.append(f"{'upgraded' if old else 'installed'} {len(written)} files"
               + (f", removed {len(stale)} stale" if stale else "")
               + ("" if old else " (new for this GIMP)"))
    log.append(f"daemon endpoint {config['endpoint']}; auto-start "
               + (f"with {shlex.join(config['dfi'])}" if config["autostart"] else "off"))
    log += key_log
    if target.python and not args.no_verify:
        try:
            checked = verify(target)
        except InstallError as e:  # a plug-in that cannot load would only print tracebacks in GIMP
            remove_files(folder, [*written, found.MANIFEST])
            for line in log:
                say(line, indent=True)
            raise InstallError(f"{e}\nThe plug-in was removed again from {folder}; fix the above and re-run.") from None
        log.append(f"verified with GIMP's Python {checked['python']}: plug-in executable, imports OK "
                   f"(zmq from {checked['zmq']}), {len(checked['procedures'])} procedures")
    elif not target.python:
        notes.append(f"{target.label}'s Python was not found, so the plug-in is not checked; pass --gimp-python "
                     "to check it")
    for line in log + notes:
        say(line, indent=True)
    return "upgraded" if old else "installed"


def install(args: argparse.Namespace) -> int:
    chosen = targets(args)
    others = [*chosen, *found.find(host(args))]  # where earlier settings may be (e.g. GIMP 3.0's, for 3.2)
    outcome: dict[str, str] = {}
    for target in chosen:
        try:
            outcome[target.label] = install_one(target, args, others)
        except InstallError as e:
            outcome[target.label] = "FAILED"
            print(f"gimp-dfi: error: {target.label}: {e}", file=sys.stderr, flush=True)
    summary = ", ".join(f"{label} {what}" for label, what in outcome.items())
    failed = [label for label, what in outcome.items() if what == "FAILED"]
    say(f"done: {summary}." + ("" if len(failed) == len(outcome) else
                               " Restart GIMP, then look under Filters → DFI."))
    return 1 if failed else 0


def uninstall(args: argparse.Namespace) -> int:
    chosen = uninstall_targets(args)
    removed_any = False
    for target in chosen:
        folder = target.folder
        names = read_manifest(folder)
        if not names:
            continue
        removed = remove_files(folder, names)
        removed_any = True
        say(f"{target.label}: removed {removed} files from {folder}")
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
        if left:
            say(f"kept {len(left)} files it did not install: {', '.join(left[:5])}", indent=True)
    if not removed_any:
        where = ", ".join(str(t.folder) for t in chosen) or "any GIMP 3 profile"
        say(f"nothing to remove (no {found.MANIFEST} in {where})")
    return 0


def add_options(p: argparse.ArgumentParser, uninstalling: bool = False) -> None:
    """The installer's options (``dfi gimp install|uninstall`` and ``install/gimp_plugin.py``)."""
    p.add_argument("--gimp-version", action="append", metavar="X.Y",
                   help="only this GIMP version (repeatable, or a comma list; default: every GIMP 3 found; "
                        "a version not found gets its default profile)")
    p.add_argument("--target", choices=("auto", "linux", "flatpak", "macos", "windows"), default="auto",
                   help="which kind of GIMP (auto: every kind found)")
    p.add_argument("--profile", help="exactly this GIMP 3 profile folder (default: each GIMP's own; "
                   "GIMP3_DIRECTORY also means exactly that one)")
    p.add_argument("--root", help="GIMP runs inside this root (chroot/container): its GIMPs, paths and Python "
                   "are in there (default profile ROOT/root/.config/GIMP/3.X)")
    if uninstalling:
        return
    p.add_argument("--gimp-python", help="command that runs GIMP's Python, for every GIMP chosen (default: each "
                   "GIMP's own)")
    p.add_argument("--endpoint", help="daemon endpoint to record (default: the daemon's default)")
    p.add_argument("--keys-dir", help="for a tcp:// endpoint: copy server.key and client.key_secret from here "
                   "(default: the daemon's local keys, made if missing)")
    p.add_argument("--dfi", help="command that runs the dfi CLI, for auto-start (default: this environment's dfi)")
    p.add_argument("--daemon-args", help="extra options for the auto-started daemon, e.g. "
                   "'--device cuda --database PATH'")
    p.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=None,
                   help="start the daemon from GIMP when it is not running (default: on, or as installed before)")
    p.add_argument("--vendor", choices=("auto", "always", "never"), default="auto",
                   help="vendor pyzmq/msgpack wheels into the plug-in folder (auto: only when GIMP's Python lacks "
                        "them and the distro's packages cannot be installed)")
    p.add_argument("--wheels", help="folder with the pyzmq and msgpack wheels to vendor (default: pip download)")
    p.add_argument("--no-verify", action="store_true", help="skip the check with GIMP's Python")


def run(args: argparse.Namespace, uninstalling: bool) -> int:
    """Install or uninstall as ``args`` say; an InstallError is one line on stderr and exit 1."""
    try:
        return uninstall(args) if uninstalling else install(args)
    except InstallError as e:
        print(f"gimp-dfi: error: {e}", file=sys.stderr)
        return 1
