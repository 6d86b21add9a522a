"""Transport hardening against a real daemon: authentication on TCP (6), bounded input (4) and output (5)."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from dfi_daemon.server.config import Config
from dfi_daemon.server.front_link import budget_bytes
from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError
from helpers.daemon_process import DaemonProcess, run_cli
from helpers.gimp_harness import free_port
from helpers.zmtp_raw import RawPeer


def raw_dealer(endpoint: str, curve: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    """A plain DEALER, optionally with CURVE (server public, own public, own secret)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if curve:
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = curve
    s.connect(endpoint)
    return s


@pytest.fixture
def tcp_daemon(base):
    with DaemonProcess(base, endpoint=f"tcp://127.0.0.1:{free_port()}") as d:
        yield d


def test_6_loopback_tcp_refuses_peers_without_the_users_key(tcp_daemon, base):
    d = tcp_daemon
    keys = d.config / "local-keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in [*keys.glob("*.key*"), *(keys / "clients").glob("*")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    from zmq.auth import load_certificate

    server_public, _ = load_certificate(str(keys / "server.key"))
    stranger = zmq.curve_keypair()
    peers = {"no keys": raw_dealer(d.endpoint), "an unknown key": raw_dealer(d.endpoint, (server_public, *stranger))}
    try:
        for s in peers.values():
            s.send(P.pack(P.simple("status", id=1)))
            s.send(P.pack(P.simple("shutdown", id=2)))
        for what, s in peers.items():
            assert not s.poll(2000), f"a peer with {what} got an answer"
        assert d.proc.poll() is None, "an unauthenticated shutdown stopped the daemon"
    finally:
        for s in peers.values():
            s.close()
    r = run_cli(base, "daemon", "status", "--endpoint", d.endpoint, timeout=60)  # the user's own CLI: its keys
    assert r.returncode == 0 and "device" in r.stdout, r.stdout + r.stderr


def test_6_a_client_without_keys_is_told_at_once(tcp_daemon):
    t0 = time.monotonic()
    with Client(tcp_daemon.endpoint, timeout=30) as c, pytest.raises(DaemonError) as e:
        c.status()
    assert e.value.code == "unauthorized" and "no keys" in e.value.message
    assert time.monotonic() - t0 < 10, "refused handshakes are reported, not waited out"
    stranger = tcp_daemon.base / "stranger"
    subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "daemon", "keys", "--dir", str(stranger)],
                   check=True, capture_output=True)
    with Client(tcp_daemon.endpoint, timeout=30, curve=(str(tcp_daemon.config / "local-keys" / "server.key"),
                                                       str(stranger / "client.key_secret"))) as c:
        with pytest.raises(DaemonError) as e:
            c.status()
    assert e.value.code == "unauthorized" and "refused this client's CURVE key" in e.value.message


def test_6_a_client_refused_before_it_sends_is_told_not_hung(tcp_daemon):
    """A refused DEALER may have no peer left, and a plain send then blocks for ever (seen in 'dfi doctor')."""
    from zmq.auth import create_certificates

    _, secret = create_certificates(str(tcp_daemon.base), "stranger")
    told: list[tuple[str, float]] = []

    def refused_then_asked() -> None:
        for wait in (1.0, 0.3, 1.0):
            with Client(tcp_daemon.endpoint, timeout=5, curve=(str(tcp_daemon.config / "local-keys" / "server.key"),
                                                                secret)) as c:
                time.sleep(wait)  # the daemon refuses the handshake meanwhile
                for ask in (c.status, lambda: c.try_send(P.simple("heartbeat", jobs=["j1"]))):
                    t0 = time.monotonic()
                    try:
                        ask()
                        told.append(("answered", 0.0))
                    except DaemonError as e:
                        told.append((e.code, time.monotonic() - t0))

    asker = threading.Thread(target=refused_then_asked, daemon=True)  # a hung send cannot be interrupted
    asker.start()
    asker.join(40)
    assert not asker.is_alive(), f"a send hung after {told}"
    assert [code for code, _ in told] == ["unauthorized"] * 6 and all(s < 5 for _, s in told), told


def test_6_the_unix_socket_is_private_and_needs_no_keys(base):
    with DaemonProcess(base) as d:
        sock = d.runtime / "daemon.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(d.runtime.stat().st_mode) == 0o700
        with d.client(10) as c:
            assert c.hello()["version"] == P.PROTOCOL_VERSION
        assert not (d.config / "local-keys").exists(), "no keys are made for a Unix socket"


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0  # gone, or a zombie waiting to be reaped


def ping_s(d: DaemonProcess) -> float:
    with d.client(10) as c:
        t0 = time.monotonic()
        c.ping()
        return time.monotonic() - t0


def test_5_replies_to_a_client_that_never_reads_are_bounded(base):
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


def tree_rss_mb(pid: int) -> float:
    """The daemon and its front door together."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_mb(pid) + sum(rss_mb(int(c)) for c in children)


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


@pytest.mark.parametrize("kind", ["big frames", "empty frames"])
def test_4_what_one_peer_makes_the_daemon_hold_is_bounded(base, kind):
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
