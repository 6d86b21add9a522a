"""The worker thread: runs one job at a time on the device and reports back.

ZeroMQ sockets are not thread safe, so the worker never touches the ROUTER: it
pushes progress and final replies over an inproc socket to the main thread,
which forwards them to the client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
from dfi_wire import protocol as P

from .jobs import Job, JobQueue
from .sessions import Sessions

if TYPE_CHECKING:
    from dfi_engine.progress import Event, ProgressFn

log = logging.getLogger("dfi.daemon")
EVENTS = "inproc://dfi-events"
PROGRESS_EVERY_S = 0.1


class Worker:
    """Takes jobs from ``queue`` until ``stopping`` is set and the queue is empty."""

    def __init__(self, ctx: zmq.Context, queue: JobQueue, runner: Any, stopping: threading.Event,
                 device: str, sessions: Sessions | None = None) -> None:
        self.ctx, self.queue, self.runner, self.stopping, self.device = ctx, queue, runner, stopping, device
        self.sessions = sessions if sessions is not None else Sessions(256 * 2**20, 600.0)  # live previews
        self.thread = threading.Thread(target=self._work, name="dfi-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _work(self) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(EVENTS)

        def emit(job: Job, msg: dict[str, Any], final: bool) -> None:
            push.send_multipart([job.client, P.pack(msg), b"1" if final else b"0", job.id.encode()])

        try:
            while True:
                job = self.queue.take(0.25)
                if job is None:
                    if self.stopping.is_set():
                        return
                    continue
                log.info("%s: %s started", job.id, job.request.op)
                final, state = self.execute(job, _progress_messages(job, emit), _partial(job, emit))
                job.request = None  # drop the image bytes now
                self._release_memory()
                self.queue.finish(job, state)  # before the final reply: a client that has it sees an idle queue
                emit(job, final, True)
        finally:
            push.close()

    def execute(self, job: Job, progress: ProgressFn,
                partial: Callable[[dict[str, Any]], None] = lambda msg: None) -> tuple[dict[str, Any], str]:
        """Run one job; returns (final reply, end state). Never raises: a bug costs one job, not the daemon.
        ``partial`` sends a preview's non-final looks (the instant one before the refined one)."""
        from dfi_engine.errors import CancelledError, DFIError
        from dfi_engine.progress import Event

        try:
            if job.cancelled:
                raise CancelledError("The job was cancelled before it started.")
            progress(Event("started", 0.0, 1.0, "started"))
            if job.request.op == "preview":
                result = self.runner.run_preview(job, self.sessions, progress, partial)
            else:
                result = self.runner.run(job.request, job.settings, progress, job.cancel_event.is_set)
            log.info("%s: done in %.2f s", job.id, result["seconds"])
            return P.reply(result.pop("type", "result"), job.req_id, job=job.id, **result), "done"
        except CancelledError:
            reason = job.cancel_reason or "cancelled"
            msg = {"client_gone": "The job was cancelled because its client stopped responding.",
                   "shutting_down": "The daemon is shutting down; the job was cancelled.",
                   "superseded": "A newer preview of the same session replaced this one.",
                   }.get(reason, "The job was cancelled.")
            log.info("%s: cancelled (%s)", job.id, reason)
            return P.error_reply(reason, msg, None, job.req_id, job=job.id), "cancelled"
        except (P.ProtocolError, DFIError) as e:
            log.info("%s: refused: %s", job.id, e)
            return P.error_reply(e.code, e.message, e.hint, job.req_id, job=job.id), "failed"
        except Exception as e:
            log.exception("%s: internal error", job.id)
            return P.error_reply("internal_error", f"Internal error: {type(e).__name__}: {e}",
                                 "See 'dfi daemon logs'; please report it.", job.req_id, job=job.id), "failed"

    def _release_memory(self) -> None:
        """Give a job's working memory back: what the caches keep stays, the rest leaves the process.

        Without the trim, glibc keeps the freed pages of a job's big arrays in its arenas (one per thread
        that allocated), so RSS ratchets up with every new image size while nothing leaks."""
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        trim_malloc()


def _load_malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library is another (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_MALLOC_TRIM: Any = None


def trim_malloc() -> bool:
    """Return the allocator's free pages to the OS (``malloc_trim(0)``); False where there is no glibc."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = _load_malloc_trim() or False
    if not _MALLOC_TRIM:
        return False
    _MALLOC_TRIM(0)
    return True


def _partial(job: Job, emit: Any) -> Callable[[dict[str, Any]], None]:
    """A preview job's non-final ``preview`` messages (the instant look), in order with its progress."""
    return lambda fields: emit(job, P.reply("preview", job.req_id, job=job.id, **fields), False)


def _progress_messages(job: Job, emit: Any) -> ProgressFn:
    """A job's events as the wire's progress messages (the maps clients read), at most one per
    PROGRESS_EVERY_S unless the stage changes, the job ends or a preview comes with it."""
    last = [0.0, ""]

    def progress(ev: Event) -> None:
        now = time.monotonic()
        if ev.stage != last[1] or now - last[0] >= PROGRESS_EVERY_S or ev.fraction >= 1.0 or ev.preview:
            last[0], last[1] = now, ev.stage
            extra = {"preview": ev.preview} if ev.preview else {}
            emit(job, P.reply("progress", job.req_id, job=job.id, stage=ev.stage, fraction=round(ev.fraction, 4),
                              message=ev.message, **extra), False)

    return progress
