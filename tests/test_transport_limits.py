"""What one peer can make a real daemon hold, and what a reading client is owed: bounded input, bounded
output per peer, no reply lost. Real daemon, real sockets (a raw ZMTP peer where a DEALER would read).

Memory is read from /proc (``helpers.process_memory``); the bound is the front door's budget, the most
its process may hold before it is replaced (``front_link.budget_bytes``). The outbox's rules themselves
are unit-tested in test_server_outbox.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import msgpack
import pytest
from dfi_daemon.server.config import Config
from dfi_daemon.server.front_link import budget_bytes
from dfi_wire import protocol as P
from helpers.daemon_process import DaemonProcess
from helpers.process_memory import front_pid, rss_mb, tree_rss_mb
from helpers.raw_sockets import dealer
from helpers.zmtp_raw import RawPeer

pytestmark = pytest.mark.slow  # every test starts a daemon process and floods it


def ping_s(d: DaemonProcess) -> float:
    with d.client(10) as c:
        t0 = time.monotonic()
        c.ping()
        return time.monotonic() - t0


def flood(peer: RawPeer, kind: str, seconds: float) -> threading.Thread:
    def run() -> None:
        end = time.monotonic() + seconds
        try:
            if kind == "big frames":  # 16 frames of 31 MiB, the message never finished
                for _ in range(16):
                    peer.frame(bytes(31 << 20), more=True)
            else:  # an endless multipart message of empty frames
                chunk = b"\x01\x00" * 65536
                while time.monotonic() < end:
                    peer.sock.sendall(chunk)
        except OSError:
            pass  # the front door dropped the connection
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# Guards: an unfinished multipart message (huge or endless frames) cannot grow the daemon past the front's budget.
@pytest.mark.parametrize("kind", ["big frames", "empty frames"])
def test_what_one_peer_makes_the_daemon_hold_is_bounded(base, kind):
    """Before: +496 MiB (big frames) and +1.8 GiB in 6 s and growing (empty frames), all in the daemon."""
    with DaemonProcess(base, "--max-message-mb", "32", "--max-pixels", "1000000") as d:
        budget = budget_bytes(Config(endpoint=d.endpoint, max_message_bytes=32 << 20, max_pixels=1_000_000)) / 2**20
        before, daemon_before = tree_rss_mb(d.pid), rss_mb(d.pid)
        peer = RawPeer(d.endpoint, rcvbuf=1 << 16)
        sender = flood(peer, kind, 8)
        peak = slowest = 0.0
        end = time.monotonic() + 9
        while time.monotonic() < end:
            peak = max(peak, tree_rss_mb(d.pid) - before)
            slowest = max(slowest, ping_s(d))  # a request lost with a dropped front door is sent again
            time.sleep(0.2)
        sender.join(5)
        peer.close()
        print(f"{kind}: peak {peak:.0f} MiB over the start (budget {budget:.0f} MiB); the daemon itself "
              f"+{rss_mb(d.pid) - daemon_before:.0f} MiB; slowest ping {slowest:.2f} s")
        assert slowest < 5, f"other clients are served throughout (a ping took {slowest:.1f} s)"
        assert peak < budget + 64, f"{kind}: the daemon's processes held {peak:.0f} MiB"
        assert rss_mb(d.pid) - daemon_before < 64, "the daemon process itself holds none of it"
        with d.client(10) as c:  # and it still works
            assert c.hello()["version"] == P.PROTOCOL_VERSION


# Guards: replies piling up for a peer that never reads its socket stay under the front's budget; others are served.
def test_replies_to_a_client_that_never_reads_are_bounded(base):
    """120 echoes of 5.6 MiB from a peer that never reads its socket: before, the daemon held them all (+453 MiB
    for 80, ~680 for 120). Now per-peer queues hold a fixed amount (measured 80-340 MiB with what is in transit),
    and the front door's budget bounds it whatever happens."""
    with DaemonProcess(base) as d:
        image = P.image_map(bytes(1400 * 1400 * 3), 1400, 1400, "RGB8")
        frame = msgpack.packb({"v": 1, "op": "echo", "image": image, "id": 0})
        peer = RawPeer(d.endpoint)
        try:
            before = tree_rss_mb(d.pid)
            for _ in range(120):
                peer.frame(frame)
            time.sleep(2)  # the daemon answers each at once
            settled = []  # what stays held, not what is in transit at one instant
            for _ in range(5):
                settled.append(tree_rss_mb(d.pid) - before)
                time.sleep(0.4)
            grown = min(settled)
            assert ping_s(d) < 2, "other clients are still served at once"
        finally:
            peer.close()
        print(f"daemon RSS grew {grown:.0f} MiB holding replies for a client that never reads")
        budget = budget_bytes(Config(endpoint=d.endpoint)) / 2**20  # the front door's hard bound
        assert grown < budget, f"the daemon holds {grown:.0f} MiB of unread replies (budget {budget:.0f} MiB)"


# Guards: 5,000 pipelined pings from a client that reads as it goes all get their reply (none dropped).
def test_a_client_that_reads_loses_no_reply(base):
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


# Guards: a flood of 8 MB echoes from a never-reading peer keeps the front door under its budget (not replaced).
def test_a_client_that_never_reads_cannot_push_the_front_door_over_its_budget(base):
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
