"""The job queue: one job at a time on the device, a bounded queue, cancel and client deadlines.

Thread-safe; the server's main thread submits and cancels, one worker thread
takes jobs. No ZeroMQ here: the worker reports through a callback so this
module can be reasoned about (and tested) without sockets.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds ``max_queued`` jobs already."""


@dataclass(frozen=True)
class Settings:
    """What one job will do, resolved once when the daemon accepts it (``Runner.settings``): the request's own
    options, else its quality preset on this device, else the neighbour source's and the network's defaults.
    The runner, the neighbour sources and the pace estimate read these attributes; nothing reads the request's
    options map again."""

    op: str  # "edit" | "inpaint" | "preview"
    height: int  # the photo's size, for the estimate before the job runs
    width: int
    k: int  # neighbours
    align: bool
    work_size: int  # the largest side an aligned face is edited at (0: the database's own)
    iterations: int
    quality: str  # the preset named (or the default), reported back with the result
    scaling: str | None  # None: the engine's default for the network
    color: str | None
    feather: float | None
    preview_s: float  # seconds between live previews (0: none)
    attribute: str = ""  # edit only
    strengths: tuple[float, ...] = ()  # edit: one result per strength
    strength: float | None = None  # inpaint: None = the source's or network's default; preview: the strength
    components: tuple[str, ...] | None = None  # edit, preview: which parts run (None: the attribute's own mix)
    session: str = ""  # preview: the client's session id
    setup: bytes = b""  # preview with an image: digest of what opens its session (equal: reuse it)
    refine: bool = True  # preview: the refined look after the instant one

    @property
    def results(self) -> int:
        """How many images the job returns (one per strength)."""
        return len(self.strengths) if self.op == "edit" else 1


@dataclass
class Job:
    """One edit, inpaint or preview request on its way through the daemon."""

    id: str
    client: bytes  # the ROUTER identity replies go to
    req_id: Any
    request: Any  # the validated request (dfi_wire.protocol.Edit or Inpaint); None once it has run
    settings: Settings | None = None
    state: str = "queued"  # queued -> running -> done | failed | cancelled
    cancel_reason: str | None = None  # "cancelled" | "client_gone" | "shutting_down" | "superseded"
    keep_opening: bool = False  # preview superseded by one that needs the session it opens: finish opening it
    submitted: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class JobQueue:
    """FIFO of waiting jobs plus the one running job."""

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False

    def new_id(self) -> str:
        return f"job-{next(self._ids)}"

    def submit(self, job: Job) -> int:
        """Queue a job; returns how many jobs are ahead of it (0 = it starts now)."""
        with self._cond:
            if self._closed:
                raise QueueFull("closed")
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"{len(self._waiting)} jobs waiting")
            self._waiting.append(job)
            self._cond.notify_all()
            return len(self._waiting) - 1 + (1 if self._running else 0)

    def take(self, timeout: float) -> Job | None:
        """Worker side: the next job (marked running), or None after ``timeout`` or when closed."""
        with self._cond:
            end = time.monotonic() + timeout
            while not self._waiting and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed and not self._waiting:
                return None
            job = self._waiting.popleft()
            job.state = "running"
            self._running = job
            return job

    def finish(self, job: Job, state: str) -> None:
        with self._cond:
            job.state = state
            if self._running is job:
                self._running = None
            self._cond.notify_all()

    def find(self, job_id: str) -> Job | None:
        with self._cond:
            if self._running is not None and self._running.id == job_id:
                return self._running
            return next((j for j in self._waiting if j.id == job_id), None)

    def cancel(self, job_id: str, reason: str = "cancelled") -> Job | None:
        """Cancel a waiting job (removed at once) or the running one (stops at its next iteration)."""
        with self._cond:
            job = self.find(job_id)
            if job is None:
                return None
            job.cancel(reason)
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = "cancelled"
            return job

    def snapshot(self) -> tuple[Job | None, list[Job]]:
        with self._cond:
            return self._running, list(self._waiting)

    def positions(self) -> list[tuple[Job, int]]:
        """(job, jobs ahead of it) for every waiting job."""
        with self._cond:
            offset = 1 if self._running else 0
            return [(j, i + offset) for i, j in enumerate(self._waiting)]

    def close(self, reason: str = "shutting_down") -> list[Job]:
        """Refuse new jobs, cancel everything; returns the jobs that were waiting (now cancelled)."""
        with self._cond:
            self._closed = True
            dropped = list(self._waiting)
            self._waiting.clear()
            for j in dropped:
                j.cancel(reason)
                j.state = "cancelled"
            if self._running is not None:
                self._running.cancel(reason)
            self._cond.notify_all()
            return dropped


class ClientWatch:
    """Last time each client identity was heard from, to cancel jobs of clients that vanished.

    GIMP kills a plug-in process when its progress bar is cancelled, so a client
    can disappear without a word; clients send heartbeats while they wait.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._seen: dict[bytes, float] = {}

    def touch(self, client: bytes) -> None:
        self._seen[client] = time.monotonic()

    def silent(self, client: bytes) -> float:
        return time.monotonic() - self._seen.get(client, 0.0)

    def restart(self) -> None:
        """Start every client's silence anew: after the daemon itself was paused (SIGSTOP, a suspended
        laptop), the gap says nothing about the clients, whose heartbeats are still on their way."""
        now = time.monotonic()
        self._seen = dict.fromkeys(self._seen, now)

    def expired_jobs(self, jobs: list[Job]) -> list[Job]:
        return [j for j in jobs if not j.cancelled and self.silent(j.client) > self.timeout_s]

    def forget_except(self, keep: set[bytes]) -> None:
        """Drop clients with no live job, so the table cannot grow without bound."""
        now = time.monotonic()
        for c in [c for c, t in self._seen.items() if c not in keep and now - t > self.timeout_s]:
            del self._seen[c]


Emit = Callable[[Job, dict[str, Any], bool], None]  # (job, reply, final)
