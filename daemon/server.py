"""The resident daemon: a ZeroMQ ROUTER in front of one worker thread that owns the device.

Start-up order matters: take the per-endpoint lock first (a second daemon fails
fast with a clear message and a stale socket/pid file from a crash is simply
replaced), then load VGG-19 and the neighbour source and warm up, and only then
bind — so a client that can talk to the socket talks to a ready daemon.

Threads: the main thread owns the ROUTER socket (ZeroMQ sockets are not thread
safe) and does all validation, queueing, heartbeats and replies; the worker runs
jobs and sends its progress/results to the main thread over an inproc socket.

Run as ``python -m dfi_daemon.server`` or ``dfi daemon start``.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from . import paths
from . import protocol as P
from .jobs import ClientWatch, Job, JobQueue, QueueFull

log = logging.getLogger("dfi.daemon")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3
EVENTS = "inproc://dfi-events"
PROGRESS_EVERY_S = 0.1
LOOPBACK_NAMES = ("localhost",)


class StartError(Exception):
    """The daemon cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Config:
    endpoint: str
    weights: str = "torchvision"
    device: str = "cpu"
    database: str = "auto"
    threads: int = 0  # 0 = torch's default
    max_queue: int = 8
    max_pixels: int = P.DEFAULT_MAX_PIXELS
    max_message_bytes: int = 32 * 1024 * 1024
    client_timeout_s: float = P.DEFAULT_CLIENT_TIMEOUT_S
    curve_dir: str | None = None
    warm_up: bool = True
    foreground: bool = True


# --------------------------------------------------------------------------- endpoint checks


def check_endpoint(endpoint: str, curve: bool) -> None:
    """Only ipc:// and tcp://; TCP on a non-loopback address only with CURVE keys."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if not path.startswith("/"):
            raise StartError(f"ipc endpoint {endpoint!r} must use an absolute path.", EXIT_USAGE)
        if len(path.encode()) > paths.MAX_IPC_PATH:
            raise StartError(f"Socket path {path} is {len(path.encode())} bytes; Unix sockets allow "
                             f"{paths.MAX_IPC_PATH}. Use a shorter --runtime-dir.", EXIT_USAGE)
        return
    if not endpoint.startswith("tcp://"):
        raise StartError(f"Unsupported endpoint {endpoint!r}. Use ipc:///path/to/socket or tcp://127.0.0.1:PORT.",
                         EXIT_USAGE)
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise StartError(f"TCP endpoint {endpoint!r} needs an explicit port, e.g. tcp://127.0.0.1:5557.", EXIT_USAGE)
    if not is_loopback(host) and not curve:
        raise StartError(
            f"Refusing to listen on {endpoint}: that address is reachable from other machines and no CURVE keys "
            "are configured, so anyone on the network could run jobs. Use tcp://127.0.0.1:PORT (or the default "
            "Unix socket), or configure CURVE encryption and client authentication with --curve-dir "
            "(see docs/protocol.md, 'Remote use').", EXIT_USAGE)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # names other than localhost, '*', interface names: treat as exposed


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One daemon process: lock, model, socket, worker, main loop."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.limits = P.Limits(max_pixels=cfg.max_pixels, max_message_bytes=cfg.max_message_bytes)
        self.queue = JobQueue(cfg.max_queue)
        self.watch = ClientWatch(cfg.client_timeout_s)
        self.jobs: dict[str, Job] = {}  # accepted, final reply not yet sent (main thread only)
        self.stopping = threading.Event()
        self.started = time.time()
        self.ctx: zmq.Context | None = None
        self.router: zmq.Socket | None = None
        self.events: zmq.Socket | None = None
        self.runner: Any = None
        self.worker: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._pid_path = paths.pid_file(cfg.endpoint)
        self._sock_path = paths.ipc_path(cfg.endpoint)
        self._auth: Any = None

    # ------------------------------------------------------------------ start-up
    def acquire_lock(self) -> None:
        """Hold an exclusive lock on the pid file for the daemon's lifetime."""
        if not self._pid_path.parent.exists():  # an explicit ipc path in a new folder: make it private
            self._pid_path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(self._pid_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode(errors="replace").split()
            os.close(fd)
            pid = other[0] if other else "?"
            raise StartError(
                f"A dfi daemon is already running on {self.cfg.endpoint} (pid {pid}). Use it, stop it with "
                "'dfi daemon stop', or start this one on another --endpoint.", EXIT_RUNNING) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.cfg.endpoint}\n".encode())
        self._lock_fd = fd
        if self._sock_path is not None and (self._sock_path.exists() or self._sock_path.is_symlink()):
            log.info("removing stale socket %s left by a daemon that did not shut down", self._sock_path)
            self._sock_path.unlink()

    def load(self) -> None:
        """Load VGG-19 and the neighbour source once; they stay resident."""
        import torch

        from dfi_engine import load_vgg19

        from .neighbours import SourceUnavailable, open_source
        from .paths import user_attributes_path
        from .runner import Runner

        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        t0 = time.perf_counter()
        net = load_vgg19(self.cfg.weights, self.cfg.device, progress=self.cfg.foreground)
        net.eval()
        try:
            source = open_source(self.cfg.database, [user_attributes_path()])
        except SourceUnavailable as e:
            raise StartError(f"{e} Start with --database synthetic for the offline smoke test, or --database none."
                             ) from None
        self.runner = Runner(net, source, self.limits)
        log.info("weights: %s on %s (%.2f s)", net.label, self.cfg.device, time.perf_counter() - t0)
        log.info("neighbours: %s", source.label if source else "none (edits will answer no_database)")
        if self.cfg.warm_up:
            log.info("warm-up pass: %.2f s", self.runner.warm_up())

    def bind(self) -> None:
        self.ctx = zmq.Context()
        r = self.ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_message_bytes)
        r.setsockopt(zmq.RCVHWM, 64)
        r.setsockopt(zmq.SNDHWM, 1000)
        if self.cfg.curve_dir:
            self._setup_curve(r, Path(self.cfg.curve_dir))
        try:
            r.bind(self.cfg.endpoint)
        except zmq.ZMQError as e:
            r.close()
            raise StartError(f"Cannot listen on {self.cfg.endpoint}: {e}. Is another program using it? "
                             "Choose another --endpoint.", EXIT_RUNNING if e.errno == zmq.EADDRINUSE else EXIT_ERROR
                             ) from None
        if self._sock_path is not None:
            os.chmod(self._sock_path, 0o600)
        self.router = r
        self.events = self.ctx.socket(zmq.PULL)
        self.events.bind(EVENTS)

    def _setup_curve(self, sock: zmq.Socket, folder: Path) -> None:
        """CURVE encryption + client authentication from a key folder (see ``dfi daemon keys``)."""
        from zmq.auth import load_certificate
        from zmq.auth.thread import ThreadAuthenticator

        secret, clients = folder / "server.key_secret", folder / "clients"
        if not secret.is_file() or not clients.is_dir():
            raise StartError(f"CURVE folder {folder} needs server.key_secret and a clients/ folder of client public "
                             "keys; create them with 'dfi daemon keys --dir FOLDER'.", EXIT_USAGE)
        public, private = load_certificate(str(secret))
        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(clients))
        sock.curve_secretkey = private
        sock.curve_publickey = public
        sock.curve_server = True

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        assert self.ctx is not None
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
                last = [0.0, ""]

                def progress(stage: str, fraction: float, message: str, job: Job = job, last: list = last) -> None:
                    now = time.monotonic()
                    if stage != last[1] or now - last[0] >= PROGRESS_EVERY_S or fraction >= 1.0:
                        last[0], last[1] = now, stage
                        emit(job, P.reply("progress", job.req_id, job=job.id, stage=stage,
                                          fraction=round(min(max(fraction, 0.0), 1.0), 4), message=message), False)

                log.info("%s: %s started", job.id, job.request["op"])
                final, state = self._execute(job, progress)
                job.request = {}  # drop the image bytes now
                self._release_memory()
                self.queue.finish(job, state)  # before the final reply: a client that has it sees an idle queue
                emit(job, final, True)
        finally:
            push.close()

    def _execute(self, job: Job, progress: Any) -> tuple[dict[str, Any], str]:
        """Run one job; returns (final reply, end state). Never raises: a bug costs one job, not the daemon."""
        from dfi_engine.errors import CancelledError, DFIError

        try:
            if job.cancelled:
                raise CancelledError("The job was cancelled before it started.")
            progress("started", 0.0, "started")
            result = self.runner.run(job.request, progress, job.cancel_event.is_set)
            log.info("%s: done in %.2f s", job.id, result["seconds"])
            return P.reply("result", job.req_id, job=job.id, **result), "done"
        except CancelledError:
            reason = job.cancel_reason or "cancelled"
            msg = {"client_gone": "The job was cancelled because its client stopped responding.",
                   "shutting_down": "The daemon is shutting down; the job was cancelled."
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
        import gc

        gc.collect()
        if self.cfg.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ main loop
    def serve(self) -> None:
        assert self.router is not None and self.events is not None
        self.worker = threading.Thread(target=self._work, name="dfi-worker", daemon=True)
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        next_check = time.monotonic()
        log.info("ready on %s (pid %d)", self.cfg.endpoint, os.getpid())
        while not self.stopping.is_set():
            ready = dict(poller.poll(200))
            if self.events in ready:
                self._forward_events()
            if self.router in ready:
                for _ in range(100):  # bounded burst, then give the worker's events a turn
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            if time.monotonic() >= next_check:
                self._check_clients()
                next_check = time.monotonic() + 0.25

    def _forward_events(self) -> None:
        assert self.events is not None and self.router is not None
        while True:
            try:
                client, payload, final, job_id = self.events.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._send_raw(client, payload)
            if final == b"1":
                self.jobs.pop(job_id.decode(), None)
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
        self.watch.forget_except({j.client for j in self.jobs.values()})

    def _send(self, client: bytes, msg: dict[str, Any]) -> None:
        self._send_raw(client, P.pack(msg))

    def _send_raw(self, client: bytes, payload: bytes) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([client, payload], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # peer gone or its queue full: a reply is lost, the daemon goes on
            log.debug("reply to a client dropped: %s", e)

    def _handle(self, frames: list[bytes]) -> None:
        client = frames[0]
        req_id = None
        try:
            if len(frames) != 2:
                raise P.ProtocolError("bad_message", f"Got {len(frames) - 1} frames; a request is exactly one frame.",
                                      "Use a DEALER socket and send one msgpack map per message.")
            self.watch.touch(client)
            msg = P.unpack(frames[1], self.cfg.max_message_bytes)
            req_id = P.request_id(msg)
            req = P.validate_request(msg, self.limits)
            self._dispatch(client, req)
        except P.ProtocolError as e:
            self._send(client, P.error_reply(e.code, e.message, e.hint, req_id, **e.extra))
        except Exception as e:  # never let one message take the daemon down
            log.exception("internal error handling a request")
            self._send(client, P.error_reply("internal_error", f"Internal error: {type(e).__name__}.", None, req_id))

    def _dispatch(self, client: bytes, req: dict[str, Any]) -> None:
        op, rid = req["op"], req["id"]
        if op == "hello":
            common = sorted(set(req.get("versions", [P.PROTOCOL_VERSION])) & set(P.SUPPORTED_VERSIONS))
            if not common:
                raise P.ProtocolError("unsupported_version", f"No common protocol version: client speaks "
                                      f"{req.get('versions')}, daemon {list(P.SUPPORTED_VERSIONS)}.",
                                      "Upgrade the older side.", supported=list(P.SUPPORTED_VERSIONS))
            self._send(client, P.reply("hello", rid, version=common[-1], server=_server_version(), ops=list(P.OPS),
                                       limits={"max_pixels": self.limits.max_pixels,
                                               "max_message_bytes": self.limits.max_message_bytes,
                                               "max_strengths": self.limits.max_strengths,
                                               "min_side": P.MIN_SIDE},
                                       heartbeat_interval_s=P.HEARTBEAT_INTERVAL_S,
                                       client_timeout_s=self.cfg.client_timeout_s, **self._describe()))
        elif op == "ping":
            self._send(client, P.reply("pong", rid, time=time.time()))
        elif op == "status":
            self._send(client, P.reply("status", rid, **self._status()))
        elif op == "attributes":
            src = self.runner.source
            self._send(client, P.reply("attributes", rid, attributes=src.attributes() if src else [],
                                       source=src.label if src else None, synthetic=bool(src and src.synthetic)))
        elif op == "echo":
            self._send(client, P.reply("echo", rid, image=req["image"].to_wire()))
        elif op in ("edit", "inpaint"):
            self.runner.check(req)
            job = Job(self.queue.new_id(), client, rid, req)
            try:
                ahead = self.queue.submit(job)
            except QueueFull:
                running, waiting = self.queue.snapshot()
                raise P.ProtocolError(
                    "queue_full", f"The daemon's queue is full ({len(waiting)} waiting, "
                    f"{1 if running else 0} running).",
                    "Try again when a job has finished, or cancel one; 'dfi daemon status' shows the queue.") from None
            self.jobs[job.id] = job
            log.info("%s: %s accepted (%d ahead)", job.id, op, ahead)
            self._send(client, P.reply("accepted", rid, job=job.id, position=ahead,
                                       heartbeat_interval_s=P.HEARTBEAT_INTERVAL_S,
                                       client_timeout_s=self.cfg.client_timeout_s))
        elif op == "heartbeat":
            states = {}
            for jid in req.get("jobs", []):
                j = self.jobs.get(jid)
                states[jid] = j.state if j is not None else "unknown"
            self._send(client, P.reply("heartbeat", rid, jobs=states))
        elif op == "cancel":
            job = self.jobs.get(req["job"])
            if job is None:
                raise P.ProtocolError("unknown_job", f"No queued or running job {req['job'][:64]!r}.",
                                      "It may have finished already; 'dfi daemon status' lists the queue.")
            was = job.state
            if was not in ("queued", "running"):  # finished; its final reply is on its way
                raise P.ProtocolError("unknown_job", f"Job {job.id} has already finished ({was}).",
                                      "Nothing to cancel.")
            self.queue.cancel(job.id, "cancelled")
            if job.state == "cancelled":  # a waiting job is gone at once: tell its client here
                self.jobs.pop(job.id, None)
                self._send(job.client, P.error_reply("cancelled", "The job was cancelled before it started.",
                                                     None, job.req_id, job=job.id))
                self._announce_positions()
            log.info("%s: cancel requested (was %s)", job.id, was)
            self._send(client, P.reply("cancelling", rid, job=job.id, was=was))
        elif op == "shutdown":
            log.info("shutdown requested by a client")
            self._send(client, P.reply("bye", rid, message="The daemon is shutting down."))
            self.stopping.set()

    def _describe(self) -> dict[str, Any]:
        src = self.runner.source
        return {"weights": self.runner.net.label, "device": self.cfg.device,
                "database": src.label if src else None, "synthetic": bool(src and src.synthetic)}

    def _status(self) -> dict[str, Any]:
        running, waiting = self.queue.snapshot()
        mem: dict[str, Any] = {"rss_bytes": _rss_bytes()}
        if self.cfg.device.startswith("cuda"):
            import torch

            mem["device_allocated_bytes"] = int(torch.cuda.memory_allocated())
            mem["device_reserved_bytes"] = int(torch.cuda.memory_reserved())
        return {"pid": os.getpid(), "server": _server_version(), "endpoint": self.cfg.endpoint,
                "uptime_s": round(time.time() - self.started, 1), "memory": mem, **self._describe(),
                "queue": {"running": running.id if running else None, "waiting": [j.id for j in waiting],
                          "max_queue": self.cfg.max_queue}}

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Cancel everything, tell waiting clients, stop the worker, remove socket and pid file."""
        for job in self.queue.close("shutting_down"):
            self._send(job.client, P.error_reply("shutting_down", "The daemon is shutting down; the job was "
                                                 "cancelled before it started.", None, job.req_id, job=job.id))
        if self.worker is not None:
            self.worker.join(timeout=30)
            if self.router is not None and self.events is not None:
                self._forward_events()
        if self.events is not None:
            self.events.close(linger=0)
        if self.router is not None:
            self.router.close(linger=500)  # let the last replies (e.g. "bye") leave
        if self._auth is not None:
            self._auth.stop()
        if self.ctx is not None:
            self.ctx.term()
        if self._lock_fd is not None:
            if self._sock_path is not None:
                self._sock_path.unlink(missing_ok=True)
            self._pid_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped")


def _server_version() -> str:
    try:
        from importlib.metadata import version

        return f"gimp-dfi {version('gimp-dfi')}"
    except Exception:
        return "gimp-dfi"


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def setup_logging(foreground: bool) -> Path:
    path = paths.log_file()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    root = logging.getLogger("dfi")
    root.handlers[:] = [handler]
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("dfi daemon: %(message)s"))
        root.addHandler(console)
    root.setLevel(logging.INFO)
    return path


def run(cfg: Config) -> int:
    """Run a daemon until SIGTERM/SIGINT or a shutdown request; returns the process exit code."""
    os.umask(0o077)  # socket, pid file and log are private from the first byte
    try:
        setup_logging(cfg.foreground)
    except (OSError, paths.PathError) as e:
        print(f"dfi daemon: cannot open the log: {e}", file=sys.stderr)
        return EXIT_ERROR
    daemon = Daemon(cfg)
    stop = daemon.stopping

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    locked = False
    try:
        check_endpoint(cfg.endpoint, bool(cfg.curve_dir))
        daemon.acquire_lock()
        locked = True
        log.info("starting on %s: weights=%s device=%s database=%s", cfg.endpoint, cfg.weights, cfg.device,
                 cfg.database)
        daemon.load()
        if stop.is_set():
            return EXIT_OK
        daemon.bind()
        daemon.serve()
        return EXIT_OK
    except StartError as e:
        log.error("%s", e)
        if not cfg.foreground:
            print(f"dfi daemon: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        from dfi_engine.errors import DFIError

        if isinstance(e, DFIError):
            log.error("cannot start: %s", e)
            if not cfg.foreground:
                print(f"dfi daemon: cannot start: {e}", file=sys.stderr)
            return EXIT_ERROR
        log.exception("daemon crashed")
        return EXIT_ERROR
    finally:
        if locked:
            daemon.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Daemon options, shared by ``python -m dfi_daemon.server`` and ``dfi daemon start``."""
    env = os.environ.get
    p.add_argument("--weights", default=env("DFI_WEIGHTS", "torchvision"),
                   help="VGG-19 weights: torchvision | gatys | random[:SEED] | PATH (env DFI_WEIGHTS)")
    p.add_argument("--device", default=env("DFI_DEVICE", "cpu"), help="torch device, e.g. cpu or cuda (env DFI_DEVICE)")
    p.add_argument("--database", default=env("DFI_DATABASE", "auto"),
                   help="neighbour source: PATH of a face database | auto (the one 'dfi db fetch lfw' made, if any) "
                        "| synthetic (offline smoke test) | none (env DFI_DATABASE)")
    p.add_argument("--threads", type=int, default=int(env("DFI_THREADS", "0")),
                   help="CPU threads for torch (0 = default)")
    p.add_argument("--max-queue", type=int, default=8, help="jobs that may wait behind the running one")
    p.add_argument("--max-pixels", type=int, default=P.DEFAULT_MAX_PIXELS, help="largest image accepted")
    p.add_argument("--max-message-mb", type=float, default=32.0, help="largest message accepted (MiB)")
    p.add_argument("--client-timeout", type=float, default=float(env("DFI_CLIENT_TIMEOUT", P.DEFAULT_CLIENT_TIMEOUT_S)),
                   help="cancel a job whose client sent no heartbeat for this many seconds")
    p.add_argument("--curve-dir", default=env("DFI_CURVE_DIR"),
                   help="folder with server.key_secret and clients/*.key: CURVE for remote TCP use")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="skip the warm-up pass")


def config_from_args(args: argparse.Namespace, endpoint: str, foreground: bool) -> Config:
    return Config(endpoint=endpoint, weights=args.weights, device=args.device, database=args.database,
                  threads=args.threads, max_queue=args.max_queue, max_pixels=args.max_pixels,
                  max_message_bytes=int(args.max_message_mb * 1024 * 1024), client_timeout_s=args.client_timeout,
                  curve_dir=args.curve_dir, warm_up=args.warm_up, foreground=foreground)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfi_daemon.server", description="Run the gimp-dfi daemon.")
    p.add_argument("--endpoint", help="ipc:///path or tcp://127.0.0.1:PORT (default: a socket in the runtime dir)")
    p.add_argument("--runtime-dir", help="folder for the socket and pid file (env DFI_RUNTIME_DIR)")
    p.add_argument("--state-dir", help="folder for the log (env DFI_STATE_DIR)")
    p.add_argument("--background", action="store_true", help="log to the file only (used by 'dfi daemon start')")
    add_arguments(p)
    args = p.parse_args(argv)
    if args.runtime_dir:
        os.environ["DFI_RUNTIME_DIR"] = args.runtime_dir
    if args.state_dir:
        os.environ["DFI_STATE_DIR"] = args.state_dir
    try:
        endpoint = args.endpoint or paths.default_endpoint()
    except (OSError, paths.PathError) as e:
        print(f"dfi daemon: {e}", file=sys.stderr)
        return EXIT_USAGE
    return run(config_from_args(args, endpoint, foreground=not args.background))


if __name__ == "__main__":
    sys.exit(main())
