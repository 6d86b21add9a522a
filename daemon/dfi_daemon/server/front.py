"""The daemon's front door: a small process that owns the public socket, so hostile input has a hard bound.

libzmq buffers a whole multipart message before handing it over, and ``ZMQ_MAXMSGSIZE``
bounds each frame, not the message: a peer can make a socket hold any amount of memory
(16 frames of 31 MiB, or an endless run of empty frames) before the daemon sees a byte.
No socket option bounds that, so the public socket lives here, in a process with nothing
else in it. Its resident memory is exactly what peers make it hold; past the budget it
exits, which drops every connection (clients reconnect by themselves, keeping their
routing ids), and the daemon starts a new one. The model, the queue and the jobs stay in
the daemon, untouched.

It also turns away what is not one frame, bounds what waits for each peer by bytes
(``Outbox``; a peer owed too much has no further request taken until it reads), and does
the CURVE handshake. On a CURVE TCP endpoint the port itself belongs to the handshake gate
(``handshake_gate``, a thread here), which cuts a peer whose handshake is not small and quick
before libzmq buffers it; the ROUTER then listens on a private Unix socket behind it.
Requests on their way to the daemon are bounded by count: while the
link is full the front reads nothing more, so a daemon that is behind slows its peers down
(libzmq then stops reading their sockets) instead of making this process hold a flood.
It speaks to the daemon over a private PAIR socket: ``[client, payload]`` requests in,
``[client, payload, final]`` replies out, and ``[b"", kind, text]`` control messages
(ready, log, error, stop). Stdlib + pyzmq + the wire.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
from dfi_wire import protocol as P

from .outbox import HELD_BYTES, Outbox

if TYPE_CHECKING:
    from .handshake_gate import Gate

EXIT_BUDGET = 75  # over the memory budget: the daemon starts a new front
POLL_MS = 100
LINK_QUEUE = 2  # requests on their way to the daemon (with as many in its own queue): each up to the message limit
PEER_INPUT = 2  # requests libzmq reads ahead from one peer, each up to the message limit
REFUSED = P.pack(P.error_reply(
    "unread_replies", f"This client has more than {HELD_BYTES >> 20} MiB of replies it has not read; the request "
    "was not taken.", "Read the replies (every request gets at least one) before sending more requests."))
WATCH_S = 0.01  # how often the watchdog reads the resident memory (a flood adds hundreds of MiB a second)


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Front:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = zmq.Context()
        self.back = self.ctx.socket(zmq.PAIR)
        self.back.setsockopt(zmq.LINGER, 2000)
        self.back.setsockopt(zmq.SNDHWM, LINK_QUEUE)
        self.pending: list[zmq.Frame] | None = None  # a request the link did not take yet
        self.back.connect(args.backend)
        self.parent = os.getppid()
        self.gate: Gate | None = None

    def control(self, kind: str, text: str = "") -> None:
        self.back.send_multipart([b"", kind.encode(), text.encode()])

    def bind(self) -> zmq.Socket:
        pub = self.ctx.socket(zmq.ROUTER)
        pub.setsockopt(zmq.LINGER, 500)
        pub.setsockopt(zmq.MAXMSGSIZE, self.args.max_message_bytes)
        pub.setsockopt(zmq.RCVHWM, PEER_INPUT)  # per peer: a peer that sends faster than we serve it is slowed down
        self.outbox = Outbox(pub, self.args.hold_s)
        if self.args.curve_dir:
            from .auth import setup_curve

            self.auth = setup_curve(self.ctx, pub, Path(self.args.curve_dir))
        endpoint = self.args.endpoint
        if self.args.curve_dir and endpoint.startswith("tcp://") and self.args.gate_socket:
            from . import handshake_gate

            listener = handshake_gate.listen(endpoint)  # the port first: "address in use" is reported as such
            Path(self.args.gate_socket).unlink(missing_ok=True)  # left by a front door that was killed
            endpoint = f"ipc://{self.args.gate_socket}"
            pub.bind(endpoint)
            os.chmod(self.args.gate_socket, 0o600)
            self.gate = handshake_gate.Gate(listener, self.args.gate_socket)
            self.gate.start()
            return pub
        pub.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://"):], 0o600)
        return pub

    def serve(self, pub: zmq.Socket) -> int:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(self.outbox.wait_ms() if self.outbox.held else POLL_MS))
            if self.pending is not None and self._forward_pending():
                poller.modify(pub, zmq.POLLIN)  # the daemon takes requests again: read the public socket again
                poller.modify(self.back, zmq.POLLIN)
            if pub in ready and self.pending is None:
                for _ in range(100):
                    try:
                        frames = pub.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.forward(frames)
                    if self.pending is not None:  # the link is full: read no more until the daemon catches up
                        poller.modify(pub, 0)
                        poller.modify(self.back, zmq.POLLIN | zmq.POLLOUT)
                        break
            if self.back in ready and ready[self.back] & zmq.POLLIN:
                while True:
                    try:
                        msg = self.back.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if not msg[0].bytes:  # control from the daemon: stop
                        self.close(pub)
                        return 0
                    self.outbox.send(msg[0].bytes, msg[1], msg[2].bytes == b"1")
            if self.outbox.held:
                self.outbox.flush()
            if os.getppid() != self.parent:  # the daemon died: free the endpoint now, waiting on nothing
                if self.gate is not None:
                    Path(self.args.gate_socket).unlink(missing_ok=True)
                os._exit(0)

    def watch(self) -> None:
        """Exit at once past the budget, from a thread of its own.

        libzmq's I/O thread reads a flood in the background, so the main loop's pace (one poll
        in 100 ms, later on a loaded machine) would let it overshoot by a hundred MiB and more.
        """
        while True:
            rss = rss_bytes()
            if rss is None:
                return  # no /proc (macOS): no watchdog
            if rss > self.args.budget_bytes:
                print(f"dfi front door: it holds {rss / 2**20:.0f} MiB of unread input or output, over its "
                      f"{self.args.budget_bytes / 2**20:.0f} MiB budget: dropping every connection (clients "
                      "reconnect)", file=sys.stderr, flush=True)
                os._exit(EXIT_BUDGET)  # drop everything now, waiting on nothing
            time.sleep(WATCH_S)

    def close(self, pub: zmq.Socket) -> None:
        """A clean stop: the last replies (e.g. "bye") still leave."""
        pub.close(linger=1000)
        if getattr(self, "auth", None) is not None:
            self.auth.stop()
        self.back.close(linger=0)
        self.ctx.term()
        if self.gate is not None:  # after the ROUTER let go: the last replies pass the gate first
            self.gate.stop()
            Path(self.args.gate_socket).unlink(missing_ok=True)

    def forward(self, frames: list[zmq.Frame]) -> None:
        """One request on to the daemon, unless it is malformed or its peer is owed too much already."""
        client = frames[0].bytes
        if len(frames) != 2:
            count = len(frames) - 1
            del frames[1:]  # free the parts at once
            self.outbox.send(client, P.pack(P.error_reply(
                "bad_message", f"Got {count} frames; a request is exactly one frame.",
                "Use a DEALER socket and send one msgpack map per message.")))
            return
        if self.outbox.over(client):  # it does not read: what it asks for would only pile up here
            del frames[1:]
            self.outbox.send(client, REFUSED)
            return
        self.pending = frames
        self._forward_pending()

    def _forward_pending(self) -> bool:
        """Hand the waiting request to the daemon if the link takes it; True once it has."""
        try:
            self.back.send_multipart(self.pending, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.pending = None
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfi_daemon.server.front")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--curve-dir")
    p.add_argument("--gate-socket", help="the ROUTER's private Unix socket behind the handshake gate (CURVE TCP)")
    p.add_argument("--max-message-bytes", type=int, required=True)
    p.add_argument("--budget-bytes", type=int, required=True)
    p.add_argument("--hold-s", type=float, required=True)
    args = p.parse_args(argv)
    front = Front(args)
    try:
        pub = front.bind()
    except zmq.ZMQError as e:
        front.control("error", f"{e.errno} {e}")
        time.sleep(0.5)
        return 1
    except OSError as e:  # the gate's port (libzmq's errno numbers are the system's)
        front.control("error", f"{e.errno} {e.strerror}")
        time.sleep(0.5)
        return 1
    except Exception as e:  # e.g. an unreadable key folder: the daemon reports it
        front.control("error", f"0 {e}")
        time.sleep(0.5)
        return 1
    threading.Thread(target=front.watch, daemon=True, name="budget").start()
    front.control("ready")
    return front.serve(pub)


if __name__ == "__main__":
    sys.exit(main())
