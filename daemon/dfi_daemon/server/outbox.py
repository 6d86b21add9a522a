"""Replies on their way out, bounded per client by bytes; a client that reads loses none of them.

Each peer's socket queue holds at most ``PEER_QUEUE`` messages (the send high-water mark,
with ``ROUTER_MANDATORY`` so that a full queue is an error we see, not a silent drop): libzmq
counts messages, not bytes, so that count has to stay small for a hostile peer's queue of
8 MB echoes to stay small. Past it, replies wait here in order, per peer, and are handed to
the socket as soon as it takes them: the front door turns every millisecond while a peer
is taking replies (``wait_ms``), so a client that reads gets a steady stream however many it
asked for. What waits here for one peer is bounded by bytes, ``HELD_BYTES``:

* past it, the front door takes no further request of that peer (``over``; it gets a typed
  error instead), so what it is owed stops growing while it catches up;
* what still arrives (progress of its running jobs) drops the oldest progress messages, never
  a job's final reply (its result or error: one per job);
* a peer that has taken nothing for ``hold_s`` (the client timeout) does not read: everything
  waiting for it is dropped; a peer that has gone is dropped at once.

So a burst of replies to a reading client is delayed, not lost, and what a peer that never
reads makes us hold is bounded however much it asks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import zmq

log = logging.getLogger("dfi.daemon")
PEER_QUEUE = 4  # messages in the socket's queue per peer (libzmq bounds a count: replies may be 128 MB each)
HELD_BYTES = 32 * 2**20  # replies waiting here per peer
FAST_MS, SLOW_MS = 1, 16  # how soon to try again: at once while peers take replies, backing off while none does


@dataclass
class _Peer:
    queue: deque = field(default_factory=deque)  # (payload, final)
    progress_bytes: int = 0  # of the non-final replies waiting: what the byte bound trims
    bytes: int = 0  # of every reply waiting: what the byte bound refuses new requests over
    taken_at: float = field(default_factory=time.monotonic)  # when the socket last took one of its replies


class Outbox:
    def __init__(self, router: zmq.Socket, hold_s: float) -> None:
        router.setsockopt(zmq.SNDHWM, PEER_QUEUE)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router = router
        self.hold_s = hold_s
        self.peers: dict[bytes, _Peer] = {}
        self._wait_ms = FAST_MS

    @property
    def held(self) -> bool:
        return bool(self.peers)

    def over(self, client: bytes) -> bool:
        """Whether this peer is owed more than its bound: then none of its requests is taken until it reads."""
        peer = self.peers.get(client)
        return peer is not None and peer.bytes > HELD_BYTES

    def wait_ms(self) -> int:
        """How long the front door may wait before the next ``flush``."""
        return self._wait_ms

    def send(self, client: bytes, payload: bytes | zmq.Frame, final: bool = False) -> None:
        """Send now if this peer has nothing waiting and room in its queue; else wait in line."""
        peer = self.peers.get(client)
        if peer is None:
            if self._try(client, payload):
                return
            peer = self.peers[client] = _Peer()
        peer.queue.append((payload, final))
        peer.bytes += len(payload)
        if not final:
            peer.progress_bytes += len(payload)
            if peer.progress_bytes > HELD_BYTES:
                self._trim(peer)
        self._wait_ms = FAST_MS

    def flush(self) -> None:
        """Send what waits, in order, as far as each peer's queue allows (called from the front's loop)."""
        now = time.monotonic()
        moved = False
        for client in list(self.peers):
            peer = self.peers[client]
            while peer.queue and self._try(client, peer.queue[0][0]):
                self._pop(peer)
                peer.taken_at = now
                moved = True
            if peer.queue and now - peer.taken_at > self.hold_s:
                finals = sum(1 for _, final in peer.queue if final)
                log.warning("dropped %d replies (%d final) to a client that has read nothing for %.0f s",
                            len(peer.queue), finals, self.hold_s)
                peer.queue.clear()
            if not peer.queue:
                del self.peers[client]
        self._wait_ms = FAST_MS if moved else min(2 * self._wait_ms, SLOW_MS)

    def _pop(self, peer: _Peer) -> None:
        payload, final = peer.queue.popleft()
        peer.bytes -= len(payload)
        if not final:
            peer.progress_bytes -= len(payload)

    def _trim(self, peer: _Peer) -> None:
        """Over the byte bound: drop the oldest non-final replies of this peer."""
        kept: deque = deque()
        for item in peer.queue:
            payload, final = item
            if peer.progress_bytes > HELD_BYTES and not final:
                peer.progress_bytes -= len(payload)
                peer.bytes -= len(payload)
            else:
                kept.append(item)
        peer.queue = kept

    def _try(self, client: bytes, payload: bytes | zmq.Frame) -> bool:
        try:
            self.router.send_multipart([client, payload], zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # this peer's queue is full: it is not reading (yet)
            return False
        except zmq.ZMQError as e:  # EHOSTUNREACH: the peer has gone
            log.debug("reply to a client that has gone dropped: %s", e)
            return True  # nothing to retry
