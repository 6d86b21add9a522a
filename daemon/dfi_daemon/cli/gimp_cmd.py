"""``dfi gimp install | uninstall | status``: the plug-in in every GIMP 3 on this machine.

The installer is :mod:`dfi_daemon.gimp.install` and ships in the wheel with the plug-in's files
(:mod:`dfi_plugin`), so an installed ``dfi`` puts the plug-in into GIMP without a checkout.
``status`` is ``dfi doctor`` without the daemon checks.
"""

from __future__ import annotations

import argparse

from ..gimp import install
from . import doctor


def _install(args: argparse.Namespace) -> int:
    return install.run(args, uninstalling=False)


def _uninstall(args: argparse.Namespace) -> int:
    return install.run(args, uninstalling=True)


def _status(args: argparse.Namespace) -> int:
    args.gimp_only, args.fix, args.timeout = True, False, 3.0
    return doctor.report(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gimp", help="install, remove or check the GIMP 3 plug-in (Filters → DFI)")
    cmds = p.add_subparsers(dest="gimp_command", required=True, metavar="ACTION")
    i = cmds.add_parser("install", help="install or upgrade the plug-in for every GIMP 3 found (or those named)")
    install.add_options(i)
    i.set_defaults(func=_install)
    u = cmds.add_parser("uninstall", help="remove exactly the files an install wrote, from every profile with them")
    install.add_options(u, uninstalling=True)
    u.set_defaults(func=_uninstall)
    s = cmds.add_parser("status", help="is the plug-in installed, intact, current and registered in each GIMP 3?")
    install.add_options(s, uninstalling=True)
    s.add_argument("--json", action="store_true", help="print the checks as JSON")
    s.add_argument("--python-check", action="store_true", help="also load it with each GIMP's own Python")
    s.set_defaults(func=_status)
