#!/usr/bin/env python3
"""Install, upgrade or remove the gimp-dfi plug-in from a checkout: the same as ``dfi gimp install``.

    .venv/bin/python install/gimp_plugin.py                      # install or upgrade, for every GIMP 3 found
    .venv/bin/python install/gimp_plugin.py --gimp-version 3.2   # only for GIMP 3.2
    .venv/bin/python install/gimp_plugin.py --uninstall          # remove exactly what was installed, everywhere

Run it with the project's Python (after ``bash install/bootstrap.sh``); the installer itself is
:mod:`dfi_daemon.gimp.install`, which ships in the wheel.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from dfi_daemon.gimp import install
    except ImportError:
        print("gimp-dfi: error: run this with the project's Python: bash install/bootstrap.sh, then "
              ".venv/bin/python install/gimp_plugin.py (or, installed as a package: dfi gimp install)", file=sys.stderr)
        return 1
    p = argparse.ArgumentParser(prog="gimp_plugin.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--uninstall", action="store_true", help="remove exactly the files a previous install wrote, "
                   "from every profile that has them")
    install.add_options(p)
    args = p.parse_args(argv)
    return install.run(args, uninstalling=args.uninstall)


if __name__ == "__main__":
    sys.exit(main())
