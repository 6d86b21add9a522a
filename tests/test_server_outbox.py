"""The front door's outbox, in process over a real ROUTER/DEALER pair (``inproc://``): order, bounds, drops.

The socket is real so that "the peer's queue is full" is libzmq's own answer, not a fake's; everything
else is the outbox's rules: a reading peer loses nothing and gets its replies in order, a peer that does
not read is held to ``HELD_BYTES`` (oldest progress dropped first, never a final reply), a peer silent for
``hold_s`` is dropped, one peer never holds up another. Milliseconds each (the byte bound moves ~40 MiB).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest
import zmq
from dfi_daemon.server.outbox import FAST_MS, HELD_BYTES, PEER_QUEUE, SLOW_MS, Outbox

_names = itertools.count()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def outbox(ctx: zmq.Context) -> Iterator[Callable[[float], tuple[Outbox, str]]]:
    """Make an Outbox on a ROUTER bound after it, as the front door does (libzmq copies a socket's
    high-water marks into its endpoint when it binds); returns it and the address to connect to."""
    sockets: list[zmq.Socket] = []

    def make(hold_s: float = 5) -> tuple[Outbox, str]:
        s = ctx.socket(zmq.ROUTER)
        sockets.append(s)
        box = Outbox(s, hold_s)
        address = f"inproc://outbox-{next(_names)}"
        s.bind(address)
        return box, address

    yield make
    for s in sockets:
        s.close(0)


def peer(ctx: zmq.Context, box: Outbox, address: str, name: bytes) -> zmq.Socket:
    """A client's DEALER with the smallest receive queue, so the router's side fills after a few replies.

    It sends a request first, as every client does: until the router has read from a peer it may not know
    the peer yet, and a reply to an unknown peer is dropped (by design: the peer has gone)."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.ROUTING_ID, name)
    s.connect(address)
    s.send(b"request")
    assert box.router.poll(5000) and box.router.recv_multipart() == [name, b"request"]
    return s


def read_all(s: zmq.Socket) -> list[bytes]:
    got = []
    while s.poll(0):
        got.append(s.recv())
    return got


def deliver(box: Outbox, s: zmq.Socket, expected: int, timeout: float = 10) -> list[bytes]:
    """Read like a client and flush like the front door's loop until ``expected`` replies arrived."""
    got: list[bytes] = []
    end = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < end:
        got += read_all(s)
        box.flush()
        s.poll(box.wait_ms())
    return got + read_all(s)


def fill(box: Outbox, name: bytes) -> int:
    """Send small final replies until the outbox starts holding them: the socket's own queue for the peer is
    full. Returns how many the socket took (the last one sent waits in the outbox)."""
    n = 0
    while name not in box.peers:
        box.send(name, b"fill-%d" % n, final=True)
        n += 1
        assert n < 100, "the socket never filled"
    return n - 1  # the last one waits in the outbox


def test_the_socket_holds_only_a_few_replies_per_peer_and_the_outbox_the_rest(ctx, outbox):
    box, address = outbox()
    assert box.router.getsockopt(zmq.SNDHWM) == PEER_QUEUE
    client = peer(ctx, box, address, b"c1")
    in_socket = fill(box, b"c1")
    assert 0 < in_socket <= PEER_QUEUE + 1, "libzmq's inproc pipe holds both ends' high-water marks (4 + 1)"
    assert len(read_all(client)) == in_socket


def test_a_reply_goes_straight_out_when_the_peer_has_room(ctx, outbox):
    box, address = outbox()
    client = peer(ctx, box, address, b"c1")
    box.send(b"c1", b"pong", final=True)
    assert not box.held and client.poll(1000) and client.recv() == b"pong"


def test_a_burst_to_a_reading_peer_arrives_whole_and_in_order(ctx, outbox):
    box, address = outbox()
    client = peer(ctx, box, address, b"c1")
    sent = [b"reply-%04d" % i for i in range(300)]
    for i, payload in enumerate(sent):  # front.py hands the outbox zmq.Frames; plain bytes work the same
        box.send(b"c1", zmq.Frame(payload) if i % 2 else payload, final=i % 10 == 0)
    assert box.held, "more than the socket takes at once"
    assert deliver(box, client, len(sent)) == sent
    assert not box.held and box.peers == {}


def test_a_peer_that_does_not_read_does_not_hold_up_another(ctx, outbox):
    box, address = outbox()
    slow = peer(ctx, box, address, b"slow")  # (kept: a socket that is collected disconnects)
    fast = peer(ctx, box, address, b"fast")
    in_socket = fill(box, b"slow")
    for i in range(20):
        box.send(b"slow", b"more-%d" % i)
    box.send(b"fast", b"yours", final=True)
    assert set(box.peers) == {b"slow"} and len(box.peers[b"slow"].queue) == 21
    assert fast.poll(1000) and fast.recv() == b"yours"
    assert len(read_all(slow)) == in_socket, "the slow peer's own queue is as full as before"


def test_progress_past_the_byte_bound_drops_the_oldest_progress_and_never_a_final(ctx, outbox):
    box, address = outbox()
    client = peer(ctx, box, address, b"c1")
    early = fill(box, b"c1") + 1
    size, n = 4 << 20, 10  # 40 MiB of progress: more than the bound
    box.send(b"c1", b"final-1", final=True)
    for i in range(n):
        box.send(b"c1", b"%02d" % i + bytes(size - 2))
    box.send(b"c1", b"final-2", final=True)
    held = box.peers[b"c1"]
    assert held.progress_bytes <= HELD_BYTES
    assert [p for p, final in held.queue if final][1:] == [b"final-1", b"final-2"]  # (after the last fill)
    got = deliver(box, client, early + 2 + HELD_BYTES // size)
    kept = [int(m[:2]) for m in got if len(m) == size]
    assert kept == list(range(n - HELD_BYTES // size, n)), "the newest progress stays, in order"
    assert [m for m in got if m.startswith(b"final")] == [b"final-1", b"final-2"]
    assert got[early] == b"final-1" and got[-1] == b"final-2"


def test_finals_past_the_byte_bound_refuse_new_requests_until_the_peer_reads(ctx, outbox):
    box, address = outbox()
    client = peer(ctx, box, address, b"c1")
    early = fill(box, b"c1") + 1
    size = 4 << 20
    n = HELD_BYTES // size + 1  # final replies are never dropped: the peer is owed more than the bound
    for i in range(n):
        box.send(b"c1", b"%02d" % i + bytes(size - 2), final=True)
    assert box.over(b"c1") and not box.over(b"someone-else")
    assert len(box.peers[b"c1"].queue) == n + 1, "every final reply waits"
    got = deliver(box, client, early + n)
    assert [int(m[:2]) for m in got if len(m) == size] == list(range(n))
    assert not box.over(b"c1") and not box.held


def test_a_peer_that_reads_nothing_for_the_hold_time_loses_what_waits(ctx, outbox):
    box, address = outbox(0.05)
    client = peer(ctx, box, address, b"c1")
    in_socket = fill(box, b"c1")
    for i in range(5):
        box.send(b"c1", b"late-%d" % i, final=i == 4)
    box.flush()
    assert box.held, "within the hold time it waits"
    time.sleep(0.08)
    box.flush()
    assert not box.held and box.peers == {}
    got = read_all(client)
    assert got == [b"fill-%d" % i for i in range(in_socket)], "only what the socket had taken arrives"


def test_a_reply_to_a_peer_that_has_gone_is_dropped_at_once(outbox):
    box, _ = outbox()
    box.send(b"nobody", b"result", final=True)
    assert not box.held and not box.over(b"nobody")


def test_the_wait_backs_off_while_nothing_moves_and_is_quick_again_once_replies_go(ctx, outbox):
    box, address = outbox()
    client = peer(ctx, box, address, b"c1")
    fill(box, b"c1")
    assert box.wait_ms() == FAST_MS
    waits = []
    for _ in range(6):
        box.flush()
        waits.append(box.wait_ms())
    assert waits == [min(FAST_MS * 2 ** (i + 1), SLOW_MS) for i in range(6)]
    read_all(client)
    client.poll(50)  # (libzmq lets the writer go on once the reader has taken enough)
    read_all(client)
    box.flush()
    assert box.wait_ms() == FAST_MS
