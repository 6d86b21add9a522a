"""The plug-in's link to the daemon: connect (starting one through ``dfi`` if allowed), list its attributes,
run a job with its progress shown in GIMP, and say what went wrong in one message.

GIMP-free like :mod:`dfi_bridge` (standard library, pyzmq and msgpack only), so it is unit-tested on the host as
installed; every wait has a deadline, so GIMP never hangs on the daemon.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import dfi_bridge as B
from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError, DaemonUnavailable

Status = Callable[[str], None]


def connect(settings: B.Settings, status: Status = lambda s: None, pulse: Callable[[], None] = lambda: None) -> Client:
    """A client with a ready daemon behind it, starting one through ``dfi`` if allowed.

    Every wait has a deadline, so GIMP never hangs on a plug-in that waits forever.
    """
    client = Client(settings.endpoint, settings.timeout_s, keys_dir=B.KEYS_DIR)
    try:
        try:
            client.hello(B.CLIENT_NAME, timeout=settings.connect_timeout_s)
            return client
        except DaemonUnavailable:
            pass
        if not settings.autostart:
            raise B.PluginError(
                f"The DFI daemon is not running (nothing answered on {settings.endpoint} within "
                f"{settings.connect_timeout_s:g} s), and automatic start is off.",
                "Start it in a terminal with 'dfi daemon start', or re-run the installer without --no-autostart.")
        _start_daemon(settings, status, pulse)
        status("Connecting to the DFI daemon...")
        try:
            client.hello(B.CLIENT_NAME, timeout=max(settings.connect_timeout_s, 10.0))
        except DaemonUnavailable:
            raise B.PluginError(f"The DFI daemon started but does not answer on {settings.endpoint}.",
                              "Check 'dfi daemon status' and 'dfi daemon logs' in a terminal.") from None
        return client
    except BaseException:
        client.close()
        raise


def _start_daemon(settings: B.Settings, status: Status, pulse: Callable[[], None]) -> None:
    """Run ``dfi daemon start`` (it returns once the daemon answers), pulsing GIMP's progress bar."""
    if not settings.dfi:
        raise B.PluginError("The DFI daemon is not running and the plug-in does not know where 'dfi' is.",
                          "Re-run the installer (dfi gimp install), or start it with 'dfi daemon start'.")
    argv = [*settings.dfi, "daemon", "start", "--endpoint", settings.endpoint,
            "--start-timeout", f"{settings.start_timeout_s:g}", *settings.daemon_args]
    status("Starting the DFI daemon (the first start loads VGG-19)...")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise B.PluginError(f"Could not run {argv[0]} to start the DFI daemon ({e.strerror}).",
                          "Re-run the installer from your gimp-dfi checkout, or start the daemon with "
                          "'dfi daemon start'.") from None
    deadline = time.monotonic() + settings.start_timeout_s + 15
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise B.PluginError(f"The DFI daemon did not start within {settings.start_timeout_s:g} s.",
                              "See 'dfi daemon logs'; a first start may be downloading VGG-19 weights.")
        pulse()
        time.sleep(0.2)
    out = proc.stdout.read().decode(errors="replace").strip() if proc.stdout else ""
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-8:])
        raise B.PluginError(f"Starting the DFI daemon failed (exit code {proc.returncode}):\n{tail}",
                          "Fix the problem above (or run 'dfi daemon start' in a terminal to see more).")


def describe(e: BaseException) -> str:
    """A message for GIMP's error dialog: what went wrong and what to do."""
    if isinstance(e, DaemonError):
        return f"{e.message}\n{e.hint}" if e.hint else e.message
    return str(e)


def attributes(client: Client) -> list[dict[str, Any]]:
    """The daemon's attributes, minus inpainting (which has its own menu item)."""
    return [a for a in client.attributes().get("attributes", []) if a.get("name") != "inpaint"]


Progress = Callable[[float, str], None]


class Eta:
    """Time left: the daemon's estimate at first, then the pace of the reconstruction itself."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start: tuple[float, float] | None = None  # (time, fraction) at the first reconstruct event
        self.expected: float | None = None  # seconds the daemon expects the job to take once it starts
        self.began: float | None = None  # when the first event after the queue came

    def expect(self, seconds: float | None) -> None:
        """The daemon's estimate for the whole job (from its measured pace), when it accepted it."""
        self.expected = float(seconds) if seconds else None

    def update(self, stage: str, fraction: float) -> float | None:
        if stage == "queued":
            return None  # waiting behind other jobs is not this job's time
        now = self.clock()
        self.began = now if self.began is None else self.began
        if stage == "reconstruct":
            if self.start is None:
                self.start = (now, fraction)
            t0, f0 = self.start
            if fraction - f0 >= 0.02 and now - t0 >= 1.0:
                return (now - t0) / (fraction - f0) * max(1.0 - fraction, 0.0)
        if self.expected is None:
            return None  # too little seen to tell
        return max(self.expected - (now - self.began), 1.0)


def duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '1 h 5 min': rounded as a person would say it."""
    s = max(int(round(seconds)), 1)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s < 600 else f"{round(s / 60)} min"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def run_job(client: Client, msg: dict[str, Any], progress: Progress, marks: dict[str, float] | None = None,
            stall_timeout: float | None = B.Settings.stall_timeout_s,
            preview: Callable[[dict[str, Any]], None] | None = None,
            cancel: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Send an edit/inpaint and stream the daemon's progress events to ``progress``.

    ``marks`` gets the wall-clock time each stage was first seen (for timing reports); ``preview``
    the live preview images (ask for them with the ``preview`` option). Once ``cancel()`` is
    true the job is cancelled on the daemon, which answers with a ``cancelled`` error.
    """

    eta = Eta()
    job: list[str] = []  # the job's id once accepted; emptied when its cancel has been sent

    def on_event(reply: dict[str, Any]) -> None:
        kind = reply.get("type")
        if kind == "accepted":
            job.append(reply["job"])
        if job and cancel() and client.try_send(P.simple("cancel", job=job[0])):
            job.pop()  # unsent (no connection just now): tried again at the next event
        if preview is not None and kind == "progress" and reply.get("preview"):
            preview(reply["preview"])
        if marks is not None and kind == "progress":
            marks.setdefault(f"stage_{reply.get('stage')}", time.time())
        if kind == "accepted":
            eta.expect(reply.get("estimate_s"))
            about = f" (about {duration(reply['estimate_s'])})" if reply.get("estimate_s") else ""
            progress(0.0, f"DFI: waiting for {reply['position']} job(s) ahead{about}" if reply.get("position")
                     else f"DFI: starting{about}")
        elif kind == "progress":
            message = reply.get("message") or reply.get("stage", "")
            fraction = float(reply.get("fraction", 0.0))
            left = eta.update(reply.get("stage", ""), fraction)
            progress(fraction, f"DFI: {message}" + (f", about {duration(left)} left" if left is not None else ""))

    result = client.run_job(msg, on_event, stall_timeout=stall_timeout)
    progress(1.0, "DFI: done")
    return result
