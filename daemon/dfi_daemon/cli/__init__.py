"""The ``dfi`` command line.

argparse (stdlib) rather than click/typer: the plug-in side shares this
package's protocol module inside GIMP's own Python, where every extra
dependency is a cost, and sub-commands register themselves here in one place.
Commands that only talk to the daemon never import torch, so they start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import bench
from . import batch, daemon_cmd, db, demo, doctor, gimp_cmd, images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfi", description="Deep Feature Interpolation for photo editors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(sub)
    daemon_cmd.register(sub)
    images.register(sub)
    batch.register(sub)
    db.register(sub)
    bench.register(sub)
    doctor.register(sub)
    gimp_cmd.register(sub)
    return parser


def _known_error(e: BaseException) -> str | None:
    """The message of an error the user can act on (no traceback), else None."""
    from dfi_wire.client import DaemonError

    from ..paths import PathError
    from ..scale import ScaleError
    from ..server.config import StartError
    from .imageio import ImageFileError

    if isinstance(e, (DaemonError, ImageFileError, PathError, ScaleError, StartError)):
        return str(e)
    errors = sys.modules.get("dfi_engine.errors")  # only if the engine was imported (it pulls in torch)
    if errors is not None and isinstance(e, errors.DFIError):
        return str(e)
    return None


EXIT_UNAVAILABLE = 3  # no daemon answers (as 'dfi daemon status' when none runs)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer whose reader went away (128 + SIGPIPE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # daemon options the user typed (not defaults): only those may contradict a running daemon
    args.given = [k for k in ("weights", "device", "database")
                  if any(a == f"--{k}" or a.startswith(f"--{k}=") for a in argv)]
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not as a traceback at exit
        return code
    except KeyboardInterrupt:
        print("dfi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. 'dfi daemon status | head -1': the reader has what it wanted
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (so the interpreter's final flush stays quiet)
        except OSError:
            pass
        return EXIT_BROKEN_PIPE
    except Exception as e:
        msg = _known_error(e)
        if msg is None:
            raise
        print(f"dfi: error: {msg}", file=sys.stderr)
        from dfi_wire.client import DaemonUnavailable

        return EXIT_UNAVAILABLE if isinstance(e, DaemonUnavailable) else 2


