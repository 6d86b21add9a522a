"""Plain ZeroMQ DEALERs for tests that talk to a daemon below the client library.

The client resends, heartbeats and reconnects by itself; these sockets do none of that, so a
test sees exactly what the daemon answers to one frame, and can keep one routing id (one client
on one connection) across requests.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack
import zmq
from dfi_wire import protocol as P


def dealer(endpoint: str, curve: tuple[bytes, bytes, bytes] | None = None, **options: int | bytes) -> zmq.Socket:
    """A connected DEALER; ``curve`` is (server public, own public, own secret); ``options`` are zmq
    socket options by name (``RCVHWM=1``)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        s.setsockopt(getattr(zmq, name), value)
    if curve:
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = curve
    s.connect(endpoint)
    return s


def raw_request(endpoint: str, payload: bytes, timeout: float = 10) -> dict[str, Any]:
    """Send one frame as is and decode the one reply (fails the test if none comes in ``timeout``)."""
    s = dealer(endpoint)
    try:
        s.send(payload)
        assert s.poll(int(timeout * 1000)), "no answer"
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


class Conn:
    """One DEALER with a fixed routing id: the same client on one connection."""

    def __init__(self, endpoint: str) -> None:
        self.s = dealer(endpoint, ROUTING_ID=b"c-raw-" + os.urandom(4))

    def send(self, msg: dict) -> None:
        self.s.send(P.pack(msg))

    def until(self, *kinds: str, timeout: float = 90) -> list[dict]:
        """Every reply up to the first of ``kinds`` (or an error); fails the test if none comes."""
        got: list[dict] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.s.poll(int((end - time.monotonic()) * 1000)):
            got.append(P.unpack(self.s.recv(), 1 << 31))
            if got[-1]["type"] in (*kinds, "error"):
                return got
        raise AssertionError(f"no {kinds} reply; got {[g['type'] for g in got]}")

    def close(self) -> None:
        self.s.close()
