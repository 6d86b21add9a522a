"""A running job meets a cancel, a stop, a paused daemon or a killed one: real daemon, real client processes.

Each ends within seconds and the client is told how it ended (``cancelled``, ``shutting_down``, the
daemon stopped answering); a daemon paused longer than the client timeout keeps its live clients.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers.daemon_process import DaemonProcess, running_job

pytestmark = pytest.mark.slow  # every test starts a daemon and client processes

LONG_JOB = """
import sys
from dfi_wire.client import Client
from dfi_wire import protocol as P
msg = P.edit_request(P.image_map(bytes(48 * 48 * 3), 48, 48, "RGB8"), "facehair", [1.0], iterations=10000, k=2)
with Client(sys.argv[1], timeout=600) as c:
    reply = c.run_job(msg)
print("FINAL", reply.get("type"), reply.get("code"), flush=True)
"""

BIG_JOB = """
import sys
from dfi_wire.client import Client, DaemonError
from dfi_wire import protocol as P
msg = P.edit_request(P.image_map(bytes(400 * 400 * 3), 400, 400, "RGB8"), "facehair", [1.0], iterations=5, k=1000)
with Client(sys.argv[1], timeout=600) as c:
    try:
        reply = c.run_job(msg)
        print("FINAL", reply.get("type"), flush=True)
    except DaemonError as e:
        print("FINAL error", e.code, flush=True)
"""


def client_job(d: DaemonProcess, script: str) -> tuple[subprocess.Popen, str]:
    """A client process running ``script`` against ``d``; returns once its job runs."""
    proc = subprocess.Popen([sys.executable, "-c", script, d.endpoint], env=d.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not running_job(d) and time.monotonic() < end:
        time.sleep(0.2)
    job = running_job(d)
    assert job, "the job never started"
    return proc, job


def neighbour_step_job(d: DaemonProcess) -> tuple[subprocess.Popen, str]:
    proc, job = client_job(d, BIG_JOB)
    time.sleep(2)  # well inside the neighbour step (2,000 faces to render and extract)
    return proc, job


# Guards: a cancel lands within seconds even inside the neighbour step (neighbours stream, checked per face).
def test_the_neighbour_step_is_cancelled_within_seconds(base):
    """k=1000 synthetic neighbours at 400x400: they used to be rendered all at once with no cancel check
    (tens of seconds, 2,000 faces in memory). Now they stream, with a cancel check per face and per batch."""
    with DaemonProcess(base) as d:
        proc, job = neighbour_step_job(d)
        try:
            t0 = time.monotonic()
            with d.client() as c:
                c.cancel(job)
            out, _ = proc.communicate(timeout=60)
            assert "FINAL error cancelled" in out, out
            assert time.monotonic() - t0 < 4, f"cancel took {time.monotonic() - t0:.1f} s"
        finally:
            proc.kill()


# Guards: SIGTERM during the neighbour step exits cleanly within seconds and tells the client shutting_down.
def test_a_stop_during_a_long_neighbour_step_is_clean(base):
    """A stop used to wait 30 s, then abort the process (SIGABRT) without telling the client."""
    d = DaemonProcess(base).start()
    try:
        proc, _ = neighbour_step_job(d)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.stderr()
        assert time.monotonic() - t0 < 8, "stopped within seconds"
        out, _ = proc.communicate(timeout=30)
        assert "FINAL error shutting_down" in out, out
        assert "terminate called" not in d.stderr()
    finally:
        d.stop()


# Guards: a daemon paused (SIGSTOP) past the client timeout does not cancel a client that kept heartbeating.
def test_a_paused_daemon_keeps_its_live_clients(base):
    """SIGSTOP for longer than the client timeout, then SIGCONT: a client that heartbeated throughout keeps
    its job (before the fix it got client_gone at once)."""
    with DaemonProcess(base, "--client-timeout", "3") as d:
        proc, job = client_job(d, LONG_JOB)
        try:
            os.kill(d.pid, signal.SIGSTOP)
            time.sleep(8)
            os.kill(d.pid, signal.SIGCONT)
            time.sleep(5)  # longer than the timeout again, with heartbeats flowing
            assert running_job(d) == job, (base / "state" / "daemon.log").read_text()[-2000:]
            assert "client silent" not in (base / "state" / "daemon.log").read_text()
        finally:
            proc.kill()
            proc.wait(10)


# Guards: a client waiting on a job notices a SIGKILLed daemon within its liveness window, with one message.
def test_a_killed_daemon_is_noticed_within_seconds(base):
    with DaemonProcess(base) as d:
        proc, _ = client_job(d, LONG_JOB)
        try:
            os.kill(d.pid, signal.SIGKILL)
            t0 = time.monotonic()
            _, err = proc.communicate(timeout=30)
            assert time.monotonic() - t0 < 8, "noticed within the liveness window"
            assert "stopped answering" in err and "restarts automatically" not in err, err[-500:]
        finally:
            proc.kill()
