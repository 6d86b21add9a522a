"""Replies on their way out, bounded per client.

Each peer's socket queue holds at most ``PEER_QUEUE`` messages (the send high-water mark,
with ``ROUTER_MANDATORY`` so that a full queue is an error we see, not a silent drop).
Past that, replies wait here in order, per peer, up to ``HELD_BYTES``; a peer that still
does not read loses its oldest progress messages and replies, but never a job's final
reply (its result or error: one per job), which waits until the client reads again or
its silence timeout has passed. So a burst of replies to a reading client is delayed,
not lost, and what a peer that never reads makes us hold is bounded however much it asks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

log = logging.getLogger("dfi.daemon")
PEER_QUEUE = 4  # messages in the socket's queue per peer
HELD_BYTES = 32 * 2**20  # non-final replies waiting here per peer


@dataclass
class _Peer:
    queue: deque = field(default_factory=deque)  # (payload, final, give up at)
    held_bytes: int = 0


class Outbox:
    def __init__(self, router: zmq.Socket, hold_s: float) -> None:
        router.setsockopt(zmq.SNDHWM, PEER_QUEUE)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router = router
        self.hold_s = hold_s
        self.peers: dict[bytes, _Peer] = {}

    @property
    def held(self) -> bool:
        return bool(self.peers)

    def send(self, client: bytes, payload: bytes | zmq.Frame, final: bool = False) -> None:
        """Send now if this peer has nothing waiting and room in its queue; else wait in line."""
        peer = self.peers.get(client)
        if peer is None:
            if self._try(client, payload):
                return
            peer = self.peers[client] = _Peer()
        peer.queue.append((payload, final, time.monotonic() + self.hold_s))
        if not final:
            peer.held_bytes += len(payload)
            self._trim(peer)

    def flush(self) -> None:
        """Send what waits, in order, as far as each peer's queue allows (called from the main loop)."""
        now = time.monotonic()
        for client in list(self.peers):
            peer = self.peers[client]
            while peer.queue:
                payload, final, until = peer.queue[0]
                if not self._try(client, payload):
                    if now < until:
                        break
                    if final:
                        log.warning("a result was dropped: its client has not read anything for %.0f s",
                                    self.hold_s)
                peer.queue.popleft()
                if not final:
                    peer.held_bytes -= len(payload)
            if not peer.queue:
                del self.peers[client]

    def _trim(self, peer: _Peer) -> None:
        """Over the byte bound: drop the oldest non-final replies of this peer."""
        kept = deque()
        for item in peer.queue:
            payload, final, _ = item
            if peer.held_bytes > HELD_BYTES and not final:
                peer.held_bytes -= len(payload)
            else:
                kept.append(item)
        peer.queue = kept

    def _try(self, client: bytes, payload: bytes | zmq.Frame) -> bool:
        try:
            self.router.send_multipart([client, payload], zmq.NOBLOCK)
            return True
        except zmq.Again:  # this peer's queue is full: it is not reading (yet)
            return False
        except zmq.ZMQError as e:  # EHOSTUNREACH: the peer has gone
            log.debug("reply to a client that has gone dropped: %s", e)
            return True  # nothing to retry
