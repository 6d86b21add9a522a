"""Who may talk to a real daemon: CURVE with the user's own keys on TCP (even loopback), a private Unix
socket without keys, and a client refused at the handshake is told so at once, never left hanging."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq
from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError
from helpers.daemon_process import DaemonProcess, run_cli
from helpers.gimp_harness import free_port
from helpers.raw_sockets import dealer

pytestmark = pytest.mark.slow  # every test starts a daemon process


@pytest.fixture
def tcp_daemon(base):
    with DaemonProcess(base, endpoint=f"tcp://127.0.0.1:{free_port()}") as d:
        yield d


# Guards: on loopback TCP, peers without keys or with unknown keys get no answer (and cannot shut it down).
def test_loopback_tcp_refuses_peers_without_the_users_key(tcp_daemon, base):
    d = tcp_daemon
    keys = d.config / "local-keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in [*keys.glob("*.key*"), *(keys / "clients").glob("*")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    from zmq.auth import load_certificate

    server_public, _ = load_certificate(str(keys / "server.key"))
    stranger = zmq.curve_keypair()
    peers = {"no keys": dealer(d.endpoint), "an unknown key": dealer(d.endpoint, (server_public, *stranger))}
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


# Guards: a client with no keys, or a key the daemon does not know, gets `unauthorized` at once, not a timeout.
def test_a_client_without_keys_is_told_at_once(tcp_daemon):
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


# Guards: a send after the handshake was refused raises `unauthorized` within seconds instead of blocking for ever.
def test_a_client_refused_before_it_sends_is_told_not_hung(tcp_daemon):
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


# Guards: the Unix socket and its folder are private to the user (0600/0700) and no keys are made for it.
def test_the_unix_socket_is_private_and_needs_no_keys(base):
    with DaemonProcess(base) as d:
        sock = d.runtime / "daemon.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(d.runtime.stat().st_mode) == 0o700
        with d.client(10) as c:
            assert c.hello()["version"] == P.PROTOCOL_VERSION
        assert not (d.config / "local-keys").exists(), "no keys are made for a Unix socket"
