"""The ``dfi`` command line.

argparse (stdlib) rather than click/typer: the plug-in side shares this
package's protocol module inside GIMP's own Python, where every extra
dependency is a cost, and sub-commands register themselves here in one place.
"""

from __future__ import annotations

import argparse
import sys

from . import demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfi", description="Deep Feature Interpolation for photo editors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dfi_engine.errors import DFIError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DFIError as e:
        print(f"dfi: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
