"""Final replies kept for a while after they were sent, so a reply lost in transit can be sent again.

A reply is lost when the front door is replaced (over its memory budget, or killed)
while it is on its way: the PAIR link drops what the old front had not yet written.
Clients notice: they resend requests that had no answer after a reconnect (a job
request is recognised by client, request id and a digest of its bytes, so it is never
run twice, and another request that reuses the id is never taken for it), and a
heartbeat that names a job whose final reply was sent answers ``sent``, on which the
client asks for it again with ``result``. Bounded by count, bytes and age.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

KEEP_S = 60.0  # longer than any client waits for a reconnect
KEEP_BYTES = 512 << 20
KEEP_COUNT = 32


@dataclass
class Sent:
    job: str
    client: bytes
    req_id: Any
    payload: bytes
    at: float


def digest(frame: bytes) -> bytes:
    """What a resent request is recognised by: a client resends the very frame it sent (``Client._last``)."""
    return hashlib.blake2b(frame, digest_size=16).digest()


class Delivered:
    """Job ids (and request digests) by (client, request id), and the final replies of recently finished jobs."""

    def __init__(self, keep_s: float = KEEP_S, keep_bytes: int = KEEP_BYTES, keep_count: int = KEEP_COUNT) -> None:
        self.keep_s, self.keep_bytes, self.keep_count = keep_s, keep_bytes, keep_count
        self.requests: dict[tuple[bytes, Any], tuple[str, bytes]] = {}  # (job, digest): live and recent jobs
        self.sent: OrderedDict[str, Sent] = OrderedDict()
        self.bytes = 0

    def accepted(self, client: bytes, req_id: Any, job: str, request_digest: bytes) -> None:
        """Remember the job of a request (replacing an earlier job's entry under a reused id)."""
        if req_id is not None:  # a request without an id cannot be told from the next one: never matched
            self.requests[client, req_id] = (job, request_digest)

    def job_for(self, client: bytes, req_id: Any) -> tuple[str, bytes] | None:
        """(job, digest of its request) this client last submitted under this request id, if any."""
        return None if req_id is None else self.requests.get((client, req_id))

    def forget_request(self, client: bytes, req_id: Any, job: str) -> None:
        """Forget the request of ``job``; an entry the id's later reuse made for another job stays."""
        if self.requests.get((client, req_id), ("",))[0] == job:
            del self.requests[client, req_id]

    def finished(self, job: str, client: bytes, req_id: Any, payload: bytes) -> None:
        """Keep the final reply; the oldest go first once a bound is passed (the newest always stays)."""
        self.sent[job] = Sent(job, client, req_id, payload, time.monotonic())
        self.bytes += len(payload)
        self.expire()

    def get(self, job: str) -> Sent | None:
        self.expire()
        return self.sent.get(job)

    def expire(self) -> None:
        now = time.monotonic()
        while self.sent:
            oldest = next(iter(self.sent.values()))
            over = len(self.sent) > self.keep_count or (self.bytes > self.keep_bytes and len(self.sent) > 1)
            if not over and now - oldest.at <= self.keep_s:
                return
            del self.sent[oldest.job]
            self.bytes -= len(oldest.payload)
            self.forget_request(oldest.client, oldest.req_id, oldest.job)
