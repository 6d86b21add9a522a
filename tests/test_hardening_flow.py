"""Hardening, round 3 (issue 22): replies to one peer are bounded by bytes in the front door, and a reading
client loses none of them; real daemon, real sockets. Every test here failed before its fix."""

from __future__ import annotations

import os
import signal
import threading
import time

import msgpack
import zmq
from dfi_daemon.server.config import Config
from dfi_daemon.server.front_link import budget_bytes
from dfi_wire import protocol as P
from helpers.daemon_process import DaemonProcess
from test_hardening_transport import rss_mb
from test_reconnect import front_pid


def dealer(endpoint: str, **options: int) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        s.setsockopt(getattr(zmq, name), value)
    s.connect(endpoint)
    return s


def test_2_a_client_that_reads_loses_no_reply(base):
    """5,000 pipelined pings from one DEALER that reads after every send: ~1,468 replies were lost (a queue of 4
    messages refilled once per 10 ms turn, and replies older than the client timeout dropped)."""
    n = 5000
    with DaemonProcess(base) as d:
        s = dealer(d.endpoint, SNDTIMEO=20_000)
        got: set[int] = set()
        try:
            t0 = time.monotonic()
            for i in range(n):
                s.send(P.pack(P.simple("ping", id=i)))
                while s.poll(0):
                    got.add(P.unpack(s.recv())["id"])
            while len(got) < n and s.poll(15_000):  # the rest; 15 s of silence ends the wait
                got.add(P.unpack(s.recv())["id"])
            took = time.monotonic() - t0
        finally:
            s.close()
        print(f"{len(got)} of {n} replies in {took:.1f} s")
        assert len(got) == n, f"{n - len(got)} replies lost (of {n}) in {took:.1f} s"


def sample_rss(pid: int, stop: threading.Event, peaks: list[float]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            peaks.append(rss_mb(pid))
            stop.wait(0.02)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_4_a_client_that_never_reads_cannot_push_the_front_door_over_its_budget(base):
    """120 echoes of a 1414x1414 RGBA image (8 MB each) from a DEALER with receive high-water mark 1 that never
    reads: the front door took them all, whatever the daemon could handle (peak ~500 MB), passed its budget and
    exited, dropping everyone. The daemon is held still for a moment (as a busy main loop would be), so the
    front door has to hold what it reads: before, the whole flood; now one peer's bounded share."""
    with DaemonProcess(base) as d:
        front = front_pid(d)
        assert front is not None
        budget = budget_bytes(Config(endpoint=d.endpoint)) / 2**20
        idle = rss_mb(front)
        stop, peaks = threading.Event(), []
        sampler = sample_rss(front, stop, peaks)
        image = P.image_map(bytes(1414 * 1414 * 4), 1414, 1414, "RGBA8")
        frame = msgpack.packb({"v": 1, "op": "echo", "image": image, "id": 0})
        hog = dealer(d.endpoint, RCVHWM=1, RCVBUF=1 << 16, SNDHWM=1000)
        try:
            os.kill(d.pid, signal.SIGSTOP)
            try:
                for _ in range(120):
                    hog.send(frame, copy=False)  # (queued in this process by reference: no copies)
                time.sleep(3)
            finally:
                os.kill(d.pid, signal.SIGCONT)
            time.sleep(4)  # the daemon answers what it is given; the replies pile up for the hog
            slowest = 0.0
            for _ in range(5):
                with d.client(20) as c:
                    t0 = time.monotonic()
                    assert c.ping()["type"] == "pong"
                    slowest = max(slowest, time.monotonic() - t0)
            assert front_pid(d) == front, "the front door was replaced: every client was dropped"
        finally:
            stop.set()
            sampler.join()
            hog.close()
        peak = max(peaks) - idle
        print(f"front door: idle {idle:.0f} MiB, peak +{peak:.0f} MiB (budget {budget:.0f} MiB), slowest ping "
              f"{slowest:.2f} s")
        assert peak < budget / 2, f"the front door held {peak:.0f} MiB for one peer"
        assert slowest < 5
