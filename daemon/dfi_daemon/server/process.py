"""The daemon as a process: logging, signals, start-up order and exit codes.

Run as ``python -m dfi_daemon.server`` or ``dfi daemon start``.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .. import paths
from .config import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_RUNNING,
    EXIT_USAGE,
    Config,
    StartError,
    add_arguments,
    config_from_args,
    validate,
)
from .daemon import Daemon
from .endpoint import check_endpoint

log = logging.getLogger("dfi.daemon")

def setup_logging(foreground: bool) -> Path:
    path = paths.log_file()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    root = logging.getLogger("dfi")
    root.handlers[:] = [handler]
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("dfi daemon: %(message)s"))
        root.addHandler(console)
    root.setLevel(logging.INFO)
    return path


def run(cfg: Config) -> int:
    """Run a daemon until SIGTERM/SIGINT or a shutdown request; returns the process exit code."""
    os.umask(0o077)  # socket, pid file and log are private from the first byte
    try:
        setup_logging(cfg.foreground)
    except (OSError, paths.PathError) as e:
        print(f"dfi daemon: cannot open the log: {e}", file=sys.stderr)
        return EXIT_ERROR
    daemon = Daemon(cfg)
    stop = daemon.stopping

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    locked = False
    try:
        validate(cfg)
        check_endpoint(cfg.endpoint, bool(cfg.curve_dir))
        daemon.acquire_lock()
        locked = True
        log.info("starting on %s: weights=%s device=%s database=%s", cfg.endpoint, cfg.weights, cfg.device,
                 cfg.database)
        daemon.load()
        if stop.is_set():
            return EXIT_OK
        daemon.bind()
        daemon.serve()
        return EXIT_OK
    except StartError as e:
        log.error("%s", e)
        if not cfg.foreground:  # "cannot start:" is how the CLI (cli/launch.py) finds the reason
            print(f"dfi daemon: {'' if e.exit_code == EXIT_RUNNING else 'cannot start: '}{e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        from dfi_engine.errors import DFIError

        if isinstance(e, DFIError):
            log.error("cannot start: %s", e)
            if not cfg.foreground:
                print(f"dfi daemon: cannot start: {e}", file=sys.stderr)
            return EXIT_ERROR
        log.exception("daemon crashed")
        return EXIT_ERROR
    finally:
        if locked:
            daemon.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfi_daemon.server", description="Run the gimp-dfi daemon.")
    p.add_argument("--endpoint", help="ipc:///path or tcp://127.0.0.1:PORT (default: a socket in the runtime dir)")
    p.add_argument("--runtime-dir", help="folder for the socket and pid file (env DFI_RUNTIME_DIR)")
    p.add_argument("--state-dir", help="folder for the log (env DFI_STATE_DIR)")
    p.add_argument("--background", action="store_true", help="log to the file only (used by 'dfi daemon start')")
    add_arguments(p)
    args = p.parse_args(argv)
    if args.runtime_dir:
        os.environ["DFI_RUNTIME_DIR"] = args.runtime_dir
    if args.state_dir:
        os.environ["DFI_STATE_DIR"] = args.state_dir
    try:
        endpoint = args.endpoint or paths.default_endpoint()
    except (OSError, paths.PathError) as e:
        print(f"dfi daemon: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config_from_args(args, endpoint, foreground=not args.background)
    except StartError as e:  # a number out of range: one line, as from validate()
        print(f"dfi daemon: {'cannot start: ' if args.background else ''}{e}", file=sys.stderr)
        return e.exit_code
    return run(cfg)

