"""Issue 22, item 1: a peer that has not authenticated costs the front door a few KiB, not the message limit.

Against real daemons with CURVE on loopback TCP. Before the handshake gate, libzmq buffered a CURVE HELLO
that declared 31 MiB as it arrived (up to ``ZMQ_MAXMSGSIZE``), so one keyless peer cost the front door
31 MiB and about 16 of them pushed it over its budget: it exited and dropped every client.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest
from dfi_wire import protocol as P
from dfi_wire.client import DaemonError
from helpers.daemon_process import DaemonProcess
from helpers.gimp_harness import free_port
from helpers.portraits import small_edit
from helpers.process_memory import front_pid, rss_mb
from helpers.zmtp_raw import CURVE_GREETING, EndlessHello, connect

pytestmark = pytest.mark.slow
PEERS = 32


@pytest.fixture
def tcp_daemon(base):
    """Default limits: the front door's budget is 512 MiB (HEAD's front door exited under test b)."""
    with DaemonProcess(base, endpoint=f"tcp://127.0.0.1:{free_port()}") as d:
        yield d


def idle_rss(pid: int) -> float:
    """The front door's resident memory once a client has been served (its first allocations are made)."""
    time.sleep(0.5)
    return min(rss_mb(pid) for _ in range(3) if time.sleep(0.1) is None)


def echo_image(side: int, seed: int) -> dict:
    data = bytes((i * 131 + seed) & 0xFF for i in range(251)) * (side * side * 4 // 251 + 1)
    return P.image_map(data[:side * side * 4], side, side, "RGBA8")


def test_a_a_keyless_peer_declaring_a_31_mib_hello_is_cut_off_and_costs_nothing(tcp_daemon):
    d = tcp_daemon
    with d.client(20) as c:
        c.ping()
    front = front_pid(d)
    idle = idle_rss(front)
    peer = EndlessHello(d.endpoint)
    sender = threading.Thread(target=peer.trickle, kwargs={"pause": 0.005, "until": time.monotonic() + 6})
    t0 = time.monotonic()
    sender.start()
    peak = idle
    while sender.is_alive():
        peak = max(peak, rss_mb(front))
        time.sleep(0.02)
    took = time.monotonic() - t0
    peer.close()
    print(f"front door RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB; the peer got {peer.sent / 2**20:.2f} MiB "
          f"of its HELLO into the kernel in {took:.2f} s, cut off: {peer.cut}")
    assert front_pid(d) == front, "the front door was replaced"
    assert peer.cut, f"a 31 MiB HELLO was read for {took:.1f} s ({peer.sent >> 20} MiB) and not refused"
    assert peak - idle < 4, f"one keyless peer made the front door grow {peak - idle:.1f} MiB"
    with d.client(20) as c:
        assert c.ping()["type"] == "pong"


def flood_peer(endpoint: str, stop: threading.Event, counts: list[int]) -> None:
    """A keyless peer that starts a 31 MiB HELLO again and again, each trickled until it is cut off."""
    while not stop.is_set():
        try:
            peer = EndlessHello(endpoint, timeout=2)
        except OSError:  # refused while the front door is being replaced
            stop.wait(0.1)
            continue
        peer.trickle(chunk=1 << 16, pause=0.01, until=time.monotonic() + 10)
        counts.append(peer.sent)
        peer.close()
        stop.wait(0.1)  # as a ZeroMQ peer reconnects


def test_b_32_keyless_peers_at_once_leave_clients_served_within_100_ms(tcp_daemon):
    d = tcp_daemon
    with d.client(20) as c:
        c.ping()
        front = front_pid(d)
        idle, daemon_idle = idle_rss(front), rss_mb(d.pid)
        stop, counts = threading.Event(), []
        peers = [threading.Thread(target=flood_peer, args=(d.endpoint, stop, counts), daemon=True)
                 for _ in range(PEERS)]
        for t in peers:
            t.start()
        pings, peak, daemon_peak = [], idle, daemon_idle
        try:
            end = time.monotonic() + 8
            while time.monotonic() < end:
                t0 = time.monotonic()
                assert c.ping()["type"] == "pong"
                pings.append(time.monotonic() - t0)
                peak, daemon_peak = max(peak, rss_mb(front)), max(daemon_peak, rss_mb(d.pid))
                time.sleep(0.05)
            image = echo_image(1200, 7)  # 5.5 MiB each way, while the flood goes on
            t0 = time.monotonic()
            back = c.echo(image)["image"]
            echo_s = time.monotonic() - t0
        finally:
            stop.set()
            for t in peers:
                t.join(15)
        ms = sorted(p * 1000 for p in pings)
        print(f"{PEERS} keyless peers, {len(counts)} HELLOs cut off (largest sent {max(counts, default=0) >> 10} KiB); "
              f"{len(ms)} pings: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms; front door RSS idle "
              f"{idle:.1f} MiB, peak {peak:.1f} MiB; daemon RSS idle {daemon_idle:.1f} MiB, peak "
              f"{daemon_peak:.1f} MiB; 5.5 MiB echo {echo_s * 1000:.0f} ms")
        assert front_pid(d) == front, "the front door exited under the flood (every client was dropped)"
        assert back["data"] == image["data"] and (back["width"], back["height"]) == (1200, 1200)
        assert len(counts) >= PEERS, "every flood peer was cut off at least once"
        assert peak - idle < 8, f"{PEERS} keyless peers made the front door grow {peak - idle:.1f} MiB"
        assert statistics.median(ms) < 100 and ms[-1] < 250, f"pings during the flood: {ms}"
        assert c.ping()["type"] == "pong"


def test_c_authenticated_clients_still_send_and_get_large_messages(base):
    with DaemonProcess(base, "--max-pixels", "8000000", "--max-message-mb", "48",
                       endpoint=f"tcp://127.0.0.1:{free_port()}") as d, d.client(60) as c:
        c.hello()  # learns the message limit
        for side in (2000, 2800):  # 15 and 30 MiB each way through the gate, then CURVE, then the daemon
            image = echo_image(side, side)
            t0 = time.monotonic()
            back = c.echo(image)["image"]
            print(f"{side}x{side} RGBA echo ({len(image['data']) / 2**20:.0f} MiB): {time.monotonic() - t0:.2f} s")
            assert back["data"] == image["data"]
        with pytest.raises(DaemonError) as e:  # over the message limit: the clear error, not a hang
            c.echo(echo_image(3600, 1))
        assert e.value.code == "too_large"
        assert c.ping()["type"] == "pong"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_d_each_side_of_a_relayed_connection_closes_the_other(tcp_daemon):
    d = tcp_daemon
    front = front_pid(d)
    with d.client(20) as c:
        c.ping()
    base_fds = fds(front)
    stalled = []
    for _ in range(20):  # greeting only: within every limit, waiting
        s = connect(d.endpoint, 1 << 16)
        s.sendall(CURVE_GREETING)
        stalled.append(s)
    time.sleep(0.5)
    held = fds(front)
    for s in stalled:
        s.close()
    end = time.monotonic() + 5
    while fds(front) > base_fds and time.monotonic() < end:
        time.sleep(0.05)
    assert held >= base_fds + 40, f"20 waiting peers hold {held - base_fds} descriptors (an outer and an inner each)"
    assert fds(front) <= base_fds, "closed peers left their inner connections open"
    from dfi_daemon.server.handshake_gate import HANDSHAKE_S

    peer = connect(d.endpoint, 1 << 16)  # a HELLO of the wrong version: the ROUTER drops it, the gate follows
    peer.sendall(CURVE_GREETING + b"\x04\xc8\x05HELLO" + bytes(194))
    peer.settimeout(HANDSHAKE_S + 5)
    t0 = time.monotonic()
    got = b""
    while chunk := peer.recv(4096):
        got += chunk
    took = time.monotonic() - t0
    peer.close()
    assert len(got) >= 10, "the ROUTER's greeting came through"
    assert took < min(3, HANDSHAKE_S - 1), f"the outer connection closed {took:.1f} s after the inner one"


def test_d_a_handshake_that_never_finishes_is_cut_at_its_deadline(tcp_daemon):
    from dfi_daemon.server.handshake_gate import HANDSHAKE_S

    peer = connect(tcp_daemon.endpoint, 1 << 16)
    peer.sendall(CURVE_GREETING)
    t0 = time.monotonic()
    peer.settimeout(HANDSHAKE_S + 10)
    while peer.recv(4096):
        pass
    took = time.monotonic() - t0
    assert HANDSHAKE_S - 0.5 < took < HANDSHAKE_S + 3, f"closed after {took:.1f} s"


def test_e_jobs_over_tcp_survive_their_front_door_being_killed(tcp_daemon):
    """Routing ids cross the gate: a new front door (and gate) still delivers an earlier request's result."""
    d = tcp_daemon
    kills = []

    def killer() -> None:
        for _ in range(3):
            time.sleep(0.6)
            pid = front_pid(d)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    with d.client(30) as c:
        t.start()
        results = [c.run_job(small_edit(i)) for i in range(4)]
        t.join()
        assert c.ping()["type"] == "pong"
    assert len(kills) == 3 and [r["type"] for r in results] == ["result"] * 4
    inner = Path(d.runtime) / f"front-{d.pid}-gate.sock"
    assert inner.is_socket() and (inner.stat().st_mode & 0o777) == 0o600
    with d.client(30) as c:  # the last reply of a clean stop passes the gate before it closes
        assert c.shutdown()["type"] == "bye"
    d.proc.wait(30)
    assert not inner.exists(), "the ROUTER's private socket is removed on a clean stop"
