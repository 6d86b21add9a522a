"""The daemon's main loop: a ZeroMQ ROUTER in front of one worker thread that owns the device.

Start-up order matters: take the per-endpoint lock first (see ``endpoint``), then
load the network and the neighbour source and warm up, and only then bind — so a
client that can talk to the socket talks to a ready daemon.

Threads: the main thread owns the ROUTER socket (ZeroMQ sockets are not thread
safe) and does all validation, queueing, heartbeats and replies; the worker
(``worker``) runs jobs and sends its progress/results back over an inproc socket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from dfi_wire import keys as K
from dfi_wire import protocol as P

from .auth import ensure_keys
from .config import Config
from .delivered import Delivered, digest
from .endpoint import EndpointLock
from .front_link import FrontLink
from .jobs import ClientWatch, Job, JobQueue, QueueFull
from .sessions import Sessions, inherit_image, older_previews
from .worker import EVENTS, Worker

log = logging.getLogger("dfi.daemon")
PAUSED_S = 2.0  # a main-loop gap longer than this means the process itself was not running
STOP_GRACE_S = 5.0  # how long a stop waits for the running job to notice its cancel


class Daemon:
    """One daemon process: lock, model, socket, worker, main loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.limits = P.Limits(max_pixels=cfg.max_pixels, max_message_bytes=cfg.max_message_bytes)
        self.queue = JobQueue(cfg.max_queue)
        self.watch = ClientWatch(cfg.client_timeout_s)
        self.jobs: dict[str, Job] = {}  # accepted, final reply not yet sent (main thread only)
        self.delivered = Delivered()  # request ids of jobs, and recent final replies, to send again if lost
        self.sessions = Sessions(cfg.session_bytes, cfg.session_idle_s)  # live previews' (client, session id)
        self.stopping = threading.Event()
        self.started = time.time()
        self.ctx: zmq.Context | None = None
        self.events: zmq.Socket | None = None
        self.runner: Any = None
        self.worker: Worker | None = None
        self.lock = EndpointLock(cfg.endpoint)
        # what it was started with (before 'auto' is resolved), so a command can tell it asks for something else
        self.settings = {"weights": cfg.weights, "device": cfg.device, "compute": cfg.compute,
                         "work_size": cfg.work_size, "database": cfg.database,
                         "auto_started": cfg.auto_started}
        self.link: FrontLink | None = None

    # ------------------------------------------------------------------ start-up
    def acquire_lock(self) -> None:
        self.lock.acquire()

    def load(self) -> None:
        """Load the network and the neighbour source once; they stay resident."""
        from .resident import load_runner

        self.runner, self.cfg = load_runner(self.cfg)
        if self.cfg.warm_up:
            log.info("warm-up pass: %.2f s", self.runner.warm_up())

    def bind(self) -> None:
        """Start the front door (``front``), which listens on the endpoint; this process keeps a link to it."""
        self.ctx = zmq.Context()
        curve_dir = Path(self.cfg.curve_dir) if self.cfg.curve_dir else None
        if curve_dir is None and K.needs_keys(self.cfg.endpoint):  # loopback TCP: the user's own local keys
            from ..paths import local_keys_dir

            curve_dir = ensure_keys(local_keys_dir())
        self.link = FrontLink(self.ctx, self.cfg, curve_dir)
        self.link.start()
        self.events = self.ctx.socket(zmq.PULL)
        self.events.bind(EVENTS)


    # ------------------------------------------------------------------ main loop
    def serve(self) -> None:
        assert self.link is not None and self.events is not None
        assert self.ctx is not None
        self.worker = Worker(self.ctx, self.queue, self.runner, self.stopping, self.cfg.device, self.sessions)
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.link.sock, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        next_check = last = time.monotonic()
        log.info("ready on %s (pid %d)", self.cfg.endpoint, os.getpid())
        while not self.stopping.is_set():
            ready = dict(poller.poll(200))
            now = time.monotonic()
            if now - last > PAUSED_S:  # this loop never sleeps that long: the process was stopped
                log.info("resumed after %.1f s without running; client silence timers restarted", now - last)
                self.watch.restart()
                next_check = now + self.cfg.client_timeout_s / 2  # let the queued heartbeats arrive first
            last = now
            if self.events in ready:
                self._forward_events()
            if self.link.sock in ready:
                for _ in range(100):  # bounded burst, then give the worker's events a turn
                    frames = self.link.receive()
                    if frames is None:
                        break
                    if frames:
                        self._handle(frames)
            self.link.check()
            if time.monotonic() >= next_check:
                self._check_clients()
                next_check = time.monotonic() + 0.25

    def _forward_events(self) -> None:
        assert self.events is not None and self.link is not None
        while True:
            try:
                client, payload, final, job_id = self.events.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.link.send(client, payload, final == b"1")
            if final == b"1":
                job = self.jobs.pop(job_id.decode(), None)
                if job is not None:
                    self.delivered.finished(job.id, job.client, job.req_id, payload)
                self._announce_positions()

    def _announce_positions(self) -> None:
        for job, ahead in self.queue.positions():
            self._send(job.client, P.reply("progress", job.req_id, job=job.id, stage="queued", fraction=0.0,
                                           position=ahead, message=f"{ahead} job(s) ahead in the queue"))

    def _check_clients(self) -> None:
        """Cancel jobs whose client has been silent longer than the timeout (it was killed or lost)."""
        for job in self.watch.expired_jobs(list(self.jobs.values())):
            log.warning("%s: client silent for %.1f s, cancelling", job.id, self.watch.silent(job.client))
            self.queue.cancel(job.id, "client_gone")  # running: stops at its next iteration
            if job.state == "cancelled":  # was waiting: removed, and nobody is listening
                self.jobs.pop(job.id, None)
                self.delivered.forget_request(job.client, job.req_id, job.id)
            if self.sessions.drop_client(job.client):  # gone: its live-preview sessions go with it
                log.info("live-preview sessions of a client that is gone dropped")
        self.watch.forget_except({j.client for j in self.jobs.values()})
        self.sessions.expire()

    def _send(self, client: bytes, msg: dict[str, Any]) -> None:
        self.link.send(client, P.pack(msg))

    def _handle(self, frames: list[bytes]) -> None:
        client = frames[0]
        req_id = None
        try:
            self.watch.touch(client)  # the front door forwards only one-frame requests
            msg = P.unpack(frames[1], self.cfg.max_message_bytes)
            req_id = P.request_id(msg)
            req = P.validate_request(msg, self.limits)
            self._dispatch(client, req, frames[1])
        except P.ProtocolError as e:
            self._send(client, P.error_reply(e.code, e.message, e.hint, req_id, **e.extra))
        except Exception as e:  # never let one message take the daemon down
            log.exception("internal error handling a request")
            self._send(client, P.error_reply("internal_error", f"Internal error: {type(e).__name__}.", None, req_id))

    def _dispatch(self, client: bytes, req: P.Request, frame: bytes) -> None:
        """One validated request to its handler (the table ``HANDLERS``: one method per op)."""
        getattr(self, HANDLERS[req.op])(client, req, frame)

    def _hello(self, client: bytes, req: P.Hello, frame: bytes) -> None:
        asked = req.versions if req.versions is not None else (P.PROTOCOL_VERSION,)
        common = sorted(set(asked) & set(P.SUPPORTED_VERSIONS))
        if not common:
            raise P.ProtocolError("unsupported_version", f"No common protocol version: client speaks "
                                  f"{list(asked)}, daemon {list(P.SUPPORTED_VERSIONS)}.",
                                  "Upgrade the older side.", supported=list(P.SUPPORTED_VERSIONS))
        self._send(client, P.reply("hello", req.id, version=common[-1], server=server_version(), ops=list(P.OPS),
                                   limits={"max_pixels": self.limits.max_pixels,
                                           "max_message_bytes": self.limits.max_message_bytes,
                                           "max_strengths": self.limits.max_strengths,
                                           "min_side": P.MIN_SIDE},
                                   heartbeat_interval_s=P.HEARTBEAT_INTERVAL_S,
                                   client_timeout_s=self.cfg.client_timeout_s, **self._describe()))

    def _ping(self, client: bytes, req: P.Request, frame: bytes) -> None:
        self._send(client, P.reply("pong", req.id, time=time.time()))

    def _status_request(self, client: bytes, req: P.Request, frame: bytes) -> None:
        self._send(client, P.reply("status", req.id, **self._status()))

    def _attributes(self, client: bytes, req: P.Request, frame: bytes) -> None:
        src = self.runner.source
        self._send(client, P.reply("attributes", req.id, attributes=self.runner.attributes(),
                                   source=src.label if src else None, synthetic=bool(src and src.synthetic)))

    def _echo(self, client: bytes, req: P.Echo, frame: bytes) -> None:
        self._send(client, P.reply("echo", req.id, image=req.image.to_wire()))

    def _heartbeat(self, client: bytes, req: P.Heartbeat, frame: bytes) -> None:
        states = {}
        for jid in req.jobs:
            j = self.jobs.get(jid)
            states[jid] = j.state if j is not None else "sent" if self.delivered.get(jid) else "unknown"
        self._send(client, P.reply("heartbeat", req.id, jobs=states))

    def _result(self, client: bytes, req: P.JobRef, frame: bytes) -> None:
        sent = self.delivered.get(req.job)
        if sent is None:
            raise P.ProtocolError("unknown_job", f"The daemon keeps no final reply of {req.job[:64]!r}.",
                                  "It finished too long ago, or never existed; submit the request again.")
        self.link.send(client, sent.payload, True)

    def _cancel(self, client: bytes, req: P.JobRef, frame: bytes) -> None:
        job = self.jobs.get(req.job)
        if job is None:
            raise P.ProtocolError("unknown_job", f"No queued or running job {req.job[:64]!r}.",
                                  "It may have finished already; 'dfi daemon status' lists the queue.")
        was = job.state
        if was not in ("queued", "running"):  # finished; its final reply is on its way
            raise P.ProtocolError("unknown_job", f"Job {job.id} has already finished ({was}).", "Nothing to cancel.")
        self.queue.cancel(job.id, "cancelled")
        if job.state == "cancelled":  # a waiting job is gone at once: tell its client here
            self._end_waiting(job, "cancelled", "The job was cancelled before it started.")
        log.info("%s: cancel requested (was %s)", job.id, was)
        self._send(client, P.reply("cancelling", req.id, job=job.id, was=was))

    def _close_session(self, client: bytes, req: P.SessionRef, frame: bytes) -> None:
        """The client is done with a session (its dialog closed): its previews stop and its memory goes now,
        not after the idle time."""
        for job in older_previews(self.jobs.values(), client, req.session):
            self.queue.cancel(job.id, "cancelled")
            if job.state == "cancelled":
                self._end_waiting(job, "cancelled", "The session was closed.")
        dropped = self.sessions.drop((client, req.session))
        self._send(client, P.reply("session_closed", req.id, session=req.session, dropped=dropped))

    def _end_waiting(self, job: Job, code: str, message: str) -> None:
        """A job cancelled before it started: its final error reply, sent (and kept) here."""
        self.jobs.pop(job.id, None)
        final = P.pack(P.error_reply(code, message, None, job.req_id, job=job.id))
        self.link.send(job.client, final, True)
        self.delivered.finished(job.id, job.client, job.req_id, final)
        self._announce_positions()

    def _shutdown(self, client: bytes, req: P.Request, frame: bytes) -> None:
        log.info("shutdown requested by a client")
        self._send(client, P.reply("bye", req.id, message="The daemon is shutting down."))
        self.stopping.set()

    def _job_request(self, client: bytes, req: P.JobRequest, frame: bytes) -> None:
        """An edit or inpaint: a resend of a request already taken is answered for its job, never run twice.
        Its settings are resolved here, once, and travel with the job."""
        rid = req.id
        request_digest = digest(frame) if rid is not None else b""
        if self._resubmitted(client, rid, request_digest):
            return
        self.runner.check(req)
        req, settings = self._preview(client, req) if isinstance(req, P.Preview) else (req, self.runner.settings(req))
        job = Job(self.queue.new_id(), client, rid, req, settings)
        try:
            ahead = self.queue.submit(job)
        except QueueFull:
            running, waiting = self.queue.snapshot()
            raise P.ProtocolError(
                "queue_full", f"The daemon's queue is full ({len(waiting)} waiting, "
                f"{1 if running else 0} running).",
                "Try again when a job has finished, or cancel one; 'dfi daemon status' shows the queue.") from None
        self.jobs[job.id] = job
        self.delivered.accepted(client, rid, job.id, request_digest)
        log.info("%s: %s accepted (%d ahead)", job.id, req.op, ahead)
        self._accepted(client, rid, job.id, ahead, self._estimate(job))

    def _preview(self, client: bytes, req: P.Preview) -> tuple[P.Preview, Any]:
        """A live preview supersedes the client's older previews of the session at once. Without an image it
        continues the newest of them that has one, else needs the session kept here (``unknown_session``)."""
        older = older_previews(self.jobs.values(), client, req.session)
        req = inherit_image(req, older)
        settings = self.runner.settings(req)
        if req.image is None:
            self.sessions.kept(client, req)  # else unknown_session
        for job in older:
            job.keep_opening = bool(settings.setup) and job.settings.setup == settings.setup  # the new one needs it
            self.queue.cancel(job.id, "superseded")
            if job.state == "cancelled":  # was waiting
                self._end_waiting(job, "superseded", "A newer preview of the same session replaced this one.")
            log.info("%s: superseded by a newer preview", job.id)
        return req, settings

    def _accepted(self, client: bytes, rid: Any, job: str, ahead: int, estimate: float | None = None) -> None:
        extra = {} if estimate is None else {"estimate_s": round(estimate, 1)}
        self._send(client, P.reply("accepted", rid, job=job, position=ahead,
                                   heartbeat_interval_s=P.HEARTBEAT_INTERVAL_S,
                                   client_timeout_s=self.cfg.client_timeout_s, **extra))

    def _estimate(self, job: Job) -> float | None:
        try:
            return self.runner.estimate(job.settings)
        except Exception:  # an estimate is a courtesy: never refuse a job over it
            log.exception("estimating a job's time")
            return None

    def _resubmitted(self, client: bytes, rid: Any, request_digest: bytes) -> bool:
        """A job request sent again after a reconnect: answer for the job it already started, never run it twice.

        Recognised by its bytes, not by its id alone: another request under the id of a finished job is a new
        job (the id is free again once its final reply is out); under the id of a queued or running one it is
        refused, since both jobs' replies would carry the same id.
        """
        known = self.delivered.job_for(client, rid)
        if known is None:
            return False
        job, was = known
        if was != request_digest:
            live = self.jobs.get(job)
            if live is None:
                return False
            raise P.ProtocolError("id_in_use", f"Request id {rid!r} is the id of {job}, which is still {live.state}; "
                                  "this request is another one.",
                                  "Give every request a new id (a request sent again must be the very same bytes).")
        log.info("%s: request sent again after a reconnect", job)
        ahead = next((n for j, n in self.queue.positions() if j.id == job), 0)
        self._accepted(client, rid, job, ahead)
        sent = self.delivered.get(job)
        if sent is not None and job not in self.jobs:
            self.link.send(client, sent.payload, True)
        return True

    def _describe(self) -> dict[str, Any]:
        src = self.runner.source
        return {"weights": self.runner.net.label, "device": self.cfg.device, "compute": self.cfg.compute,
                "work_size": self.cfg.work_size, "presets": self.runner.presets(),
                "database": src.label if src else None, "synthetic": bool(src and src.synthetic),
                "settings": self.settings}

    def _status(self) -> dict[str, Any]:
        running, waiting = self.queue.snapshot()
        mem: dict[str, Any] = {"rss_bytes": rss_bytes()}
        if self.cfg.device.startswith("cuda"):
            import torch

            mem["device_allocated_bytes"] = int(torch.cuda.memory_allocated())
            mem["device_reserved_bytes"] = int(torch.cuda.memory_reserved())
        cache = getattr(getattr(self.runner, "source", None), "cache", None)  # what stays between jobs
        if cache is not None and hasattr(cache, "max_bytes"):
            mem["caches"] = {"features": {"bytes": int(cache.bytes), "limit_bytes": int(cache.max_bytes),
                                          "entries": len(cache), "evicted": int(getattr(cache, "evicted", 0))}}
        return {"pid": os.getpid(), "server": server_version(), "endpoint": self.cfg.endpoint,
                "uptime_s": round(time.time() - self.started, 1), "memory": mem, **self._describe(),
                "queue": {"running": running.id if running else None, "waiting": [j.id for j in waiting],
                          "max_queue": self.cfg.max_queue}, "sessions": self.sessions.stats()}

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Cancel everything, tell waiting clients, stop the worker, remove socket and pid file."""
        for job in self.queue.close("shutting_down"):
            self._send(job.client, P.error_reply("shutting_down", "The daemon is shutting down; the job was "
                                                 "cancelled before it started.", None, job.req_id, job=job.id))
        running, _ = self.queue.snapshot()
        if running is not None:  # tell its client now: it must not wait through the worker's last second
            self._send(running.client, P.error_reply("shutting_down", "The daemon is shutting down; the job was "
                                                     "cancelled.", None, running.req_id, job=running.id))
        if self.worker is not None:
            self.worker.join(timeout=STOP_GRACE_S)  # cancel is checked at least every second
            if self.link is not None and self.events is not None:
                self._forward_events()
            if self.worker.thread.is_alive():
                self._abandon_worker()
        if self.events is not None:
            self.events.close(linger=0)
        if self.link is not None:
            self.link.stop()  # the front sends the last replies (e.g. "bye"), then exits
        if self.ctx is not None:
            self.ctx.term()
        self.lock.release()
        log.info("stopped")

    def _abandon_worker(self) -> None:
        """The worker is inside one long call that cannot be interrupted: tell its client, clean up, and leave.

        Terminating the ZeroMQ context under a thread that still holds a socket aborts the process
        (and the client would never hear why), so the process exits without waiting for it.
        """
        log.warning("the running job did not stop within %.0f s; exiting without waiting for it", STOP_GRACE_S)
        if self.link is not None:
            self.link.stop()  # the replies already sent to the front still leave
        self.lock.release()
        log.info("stopped")
        logging.shutdown()
        os._exit(0)


# op -> the Daemon method that answers it (each takes the client, the typed request and the raw frame)
HANDLERS: dict[str, str] = {
    "hello": "_hello", "ping": "_ping", "status": "_status_request", "attributes": "_attributes", "echo": "_echo",
    "edit": "_job_request", "inpaint": "_job_request", "preview": "_job_request", "heartbeat": "_heartbeat",
    "result": "_result", "cancel": "_cancel", "close_session": "_close_session", "shutdown": "_shutdown",
}


def server_version() -> str:
    try:
        from importlib.metadata import version

        return f"gimp-dfi {version('gimp-dfi')}"
    except Exception:
        return "gimp-dfi"


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

