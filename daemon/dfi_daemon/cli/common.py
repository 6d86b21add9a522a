"""Options shared by every command that talks to the daemon, and the auto-start glue."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from dfi_wire.client import DEFAULT_TIMEOUT_S, Client, DaemonError

from .. import paths
from ..server import config as server_config
from . import launch


def add_connection_options(p: argparse.ArgumentParser, autostart: bool = True) -> None:
    g = p.add_argument_group("daemon connection")
    g.add_argument("--endpoint", default=None,
                   help="daemon endpoint: ipc:///path or tcp://127.0.0.1:PORT (env DFI_ENDPOINT; default: a private "
                        "Unix socket in the user's runtime dir)")
    g.add_argument("--runtime-dir", default=None, help="folder for the socket and pid file (env DFI_RUNTIME_DIR)")
    g.add_argument("--state-dir", default=None, help="folder for the daemon's log (env DFI_STATE_DIR)")
    g.add_argument("--timeout", type=float, default=float(os.environ.get("DFI_TIMEOUT", DEFAULT_TIMEOUT_S)),
                   help="seconds without any answer from the daemon before giving up (default %(default)s)")
    if autostart:
        g.add_argument("--no-autostart", dest="autostart", action="store_false",
                       help="fail instead of starting a daemon when none is running")
        g.add_argument("--start-timeout", type=float, default=300.0,
                       help="seconds to wait for an auto-started daemon to be ready")
        d = p.add_argument_group("auto-started daemon")
        server_config.add_arguments(d)


def apply_dirs(args: argparse.Namespace) -> str:
    """Export --runtime-dir/--state-dir (so a started daemon inherits them); return the endpoint."""
    if getattr(args, "runtime_dir", None):
        os.environ["DFI_RUNTIME_DIR"] = args.runtime_dir
    if getattr(args, "state_dir", None):
        os.environ["DFI_STATE_DIR"] = args.state_dir
    return args.endpoint or paths.default_endpoint()


def daemon_argv(args: argparse.Namespace) -> list[str]:
    """The daemon options of ``args`` as a command line for ``python -m dfi_daemon.server``."""
    argv = ["--weights", args.weights, "--device", args.device, "--database", args.database,
            "--compute", args.compute, "--work-size", str(args.work_size), "--threads", str(args.threads),
            "--max-queue", str(args.max_queue), "--max-pixels", str(args.max_pixels),
            "--max-message-mb", str(args.max_message_mb), "--client-timeout", str(args.client_timeout),
            "--session-mb", str(args.session_mb), "--session-idle-s", str(args.session_idle_s)]
    if args.curve_dir:
        argv += ["--curve-dir", args.curve_dir]
    if not args.warm_up:
        argv.append("--no-warm-up")
    return argv


def connect(args: argparse.Namespace, announce: bool = True) -> tuple[Client, subprocess.Popen | None]:
    """A client for a ready daemon; one running with other settings than the command gives is restarted
    when a command auto-started it, and otherwise reported (never silently used)."""
    endpoint = apply_dirs(args)
    autostart = getattr(args, "autostart", False)
    argv = daemon_argv(args) if hasattr(args, "weights") else []
    start_timeout = getattr(args, "start_timeout", 300.0)
    client, proc = launch.connect(endpoint, args.timeout, autostart, argv, start_timeout, announce)
    if proc is not None:
        return client, proc
    differ, settings = settings_differ(client, args)
    if not differ:
        return client, proc
    client.close()
    running, asked = describe_differ(differ)
    if settings.get("auto_started") and autostart:
        warn(f"the daemon on {endpoint} was started automatically with {running}; restarting it with {asked}")
        launch.stop(endpoint)
        return launch.connect(endpoint, args.timeout, True, argv, start_timeout, announce)
    raise DaemonError("daemon_settings", f"The daemon on {endpoint} runs with {running}, but this command asks "
                      f"for {asked}.", "Stop it with 'dfi daemon stop' and run the command again, or give another "
                      "--endpoint to run a second daemon.")


def settings_differ(client: Client, args: argparse.Namespace) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """({option: (running, asked)} for the daemon options the user typed that the daemon differs in, its settings)."""
    asked = {k: getattr(args, k) for k in getattr(args, "given", []) if hasattr(args, k)}
    if not asked:
        return {}, {}
    settings = client.hello().get("settings", {})
    return {k: (settings[k], v) for k, v in asked.items() if k in settings and str(settings[k]) != str(v)}, settings


def describe_differ(differ: dict[str, tuple[Any, Any]]) -> tuple[str, str]:
    """('--weights X ...' as running, '--weights Y ...' as asked)."""
    return (" ".join(f"--{k} {v}" for k, (v, _) in differ.items()),
            " ".join(f"--{k} {w}" for k, (_, w) in differ.items()))


def warn(msg: str) -> None:
    print(f"dfi: {msg}", file=sys.stderr, flush=True)


class ProgressBar:
    """A tqdm bar in percent, fed by the daemon's events; created only once a job is accepted."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def __call__(self, ev: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.desc, unit="%", file=sys.stderr, leave=True, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        bar, kind = self.bar, ev.get("type")
        if kind == "accepted":
            bar.set_postfix_str(accepted_text(ev))
        elif kind == "progress":
            fraction, text = job_progress(ev)
            done = int(round(100 * fraction))
            if done > bar.n:
                bar.update(done - bar.n)
            bar.set_postfix_str(text[:40])
        elif kind == "result":
            bar.update(100 - bar.n)
            bar.set_postfix_str(f"done in {ev.get('seconds', 0):.1f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ProgressLines:
    """The same events as plain lines, at most one per ``every`` seconds (and the last): for a log, CI or
    ``2>file``, where a bar's carriage-return redraws would pile up."""

    def __init__(self, desc: str, every: float = 5.0) -> None:
        self.desc, self.every = desc, every
        self.start = time.monotonic()
        self.last = -every

    def say(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            print(f"{self.desc}: {text} ({now - self.start:.0f} s)", file=sys.stderr, flush=True)

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "accepted":
            self.say(accepted_text(ev), force=True)
        elif kind == "progress":
            fraction, text = job_progress(ev)
            self.say(f"{100 * fraction:3.0f}% {text}")
        elif kind == "result":
            self.say(f"done in {ev.get('seconds', 0):.1f} s", force=True)

    def close(self) -> None:
        pass


def job_progress(ev: dict[str, Any]) -> tuple[float, str]:
    """(fraction of the job, text) of a wire ``progress`` message. The daemon writes each from one engine
    ``dfi_engine.progress.Event`` (stage, step/total, message); the CLI reads the map, since it never
    imports the engine."""
    return float(ev.get("fraction", 0.0)), str(ev.get("message", ev.get("stage", "")))


def accepted_text(ev: dict[str, Any]) -> str:
    about = f", about {ev['estimate_s']:.0f} s" if ev.get("estimate_s") else ""
    return (f"queued, {ev['position']} ahead" if ev.get("position") else "starting") + about


def progress_bar(desc: str) -> tuple[ProgressBar | ProgressLines, ProgressBar | ProgressLines]:
    """(object to close, event callback): the same object, kept as a pair for call sites' clarity."""
    bar = ProgressBar(desc) if sys.stderr.isatty() else ProgressLines(desc)
    return bar, bar
