"""A blocking client for the daemon: requests, jobs with progress, heartbeats and timeouts.

Stdlib + pyzmq + msgpack only (via :mod:`protocol`), so the GIMP plug-in can
use it as is. Every wait has a deadline: GIMP waits forever on a plug-in, so a
dead daemon must turn into a clear error, never a hang.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from . import keys as K
from . import protocol as P

DEFAULT_TIMEOUT_S = 30.0


LIVENESS_S = 5.0  # a daemon silent this long during a job is taken as gone
RECHECK_S = 0.25  # how often a waiting call looks for a reconnect
PREVIEW_POLL_S = 0.05  # how often a live preview asks its caller whether to stop waiting


class DaemonError(Exception):
    """An error reply from the daemon, or the daemon not answering; ``code`` as in the protocol."""

    def __init__(self, code: str, message: str, hint: str | None = None, reply: dict | None = None) -> None:
        self.code = code
        self.message = message
        self.hint = hint
        self.reply = reply or {}
        super().__init__(f"{message} {hint}" if hint else message)


class DaemonUnavailable(DaemonError):
    """Nothing answered on the endpoint within the timeout."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("daemon_unavailable", message, hint)


MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: keys on one side only
_WATCHED = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Client:
    """One DEALER connection to the daemon. Not thread-safe (like the socket under it)."""

    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT_S,
                 curve: tuple[str, str] | None = None, keys_dir: str | os.PathLike | None = None) -> None:
        """``curve``: (server public, client secret) key files; else DFI_CURVE_* or ``keys_dir`` (TCP only)."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # our own routing id: the daemon's replies still find us after a reconnect (e.g. a new front door)
        self.sock.setsockopt(zmq.ROUTING_ID, b"c" + os.urandom(15))
        curve = K.resolve(endpoint, curve, keys_dir)
        self.has_keys = curve is not None
        if curve:
            from zmq.auth import load_certificate

            server_public, _ = load_certificate(curve[0])
            public, secret = load_certificate(curve[1])
            if secret is None:
                raise DaemonError("bad_key", f"{curve[1]} holds no secret key.",
                                  "Pass the client's .key_secret file (DFI_CURVE_CLIENT_KEY).")
            self.sock.curve_serverkey = server_public
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
        # Connection events tell a daemon that died (its socket closed) from one that is merely paused.
        self._monitor = self.sock.get_monitor_socket(_WATCHED)
        self._connected: bool | None = None
        self.reconnects = 0  # connections made again after a drop: requests in flight may be lost
        self._last: tuple[bytes, int] | None = None  # the last request sent, and the reconnects seen then
        self._refused: int | None = None  # the handshake failure event, once the daemon refused us
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self.limits: dict[str, Any] = {}
        self.server: dict[str, Any] = {}  # the daemon's hello: weights, device, quality presets, ...

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self.sock.close(linger=0)
        self.ctx.term()

    def peer_gone(self) -> bool:
        """True once the daemon's end of the connection has closed (a crash or kill), not while it is paused."""
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            info = recv_monitor_message(self._monitor)
            event = info["event"]
            if event in (zmq.EVENT_CONNECTED, zmq.EVENT_DISCONNECTED):
                if event == zmq.EVENT_CONNECTED and self._connected is False:
                    self.reconnects += 1
                self._connected = event == zmq.EVENT_CONNECTED
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH or info.get("value") == MECHANISM_MISMATCH:
                self._refused = event  # definite answers; a connection lost mid-handshake is not one
        return self._connected is False

    def check_refused(self) -> None:
        """Raise ``unauthorized`` once the daemon has refused this client's handshake (keys missing or wrong)."""
        self.peer_gone()
        if self._refused is None:
            return
        if self._refused == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            message = f"The daemon on {self.endpoint} refused this client's CURVE key."
        elif not self.has_keys:
            message = f"The daemon on {self.endpoint} requires CURVE authentication and this client has no keys."
        else:
            message = f"The CURVE handshake with the daemon on {self.endpoint} failed."
        raise DaemonError("unauthorized", message,
                          "Run it as the user who started the daemon (the local keys are in that user's config "
                          "folder, gimp-dfi/local-keys), or set DFI_CURVE_SERVER_KEY and DFI_CURVE_CLIENT_KEY; "
                          "for the GIMP plug-in, re-run the installer.")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def send(self, msg: dict[str, Any], timeout: float | None = None) -> Any:
        """Send a request (assigning an id if it has none); returns the id.

        Waits at most ``timeout`` seconds (the client's by default) for the connection to take it:
        a DEALER whose connection was refused or dropped has no peer, and a plain send would block forever.
        """
        if msg.get("id") is None:
            msg = {**msg, "id": next(self._ids)}
        frame = P.pack(msg)
        limit = self.limits.get("max_message_bytes")
        if limit and len(frame) > limit:
            raise DaemonError("too_large", f"The request is {len(frame):,} bytes; the daemon accepts at most "
                              f"{limit:,}.", "Send a smaller image (select the face) or scale it down.")
        self._put(frame, self.timeout if timeout is None else timeout)
        self._last = (frame, self.reconnects)
        return msg["id"]

    def _put(self, frame: bytes, timeout: float) -> None:
        """Queue ``frame`` within ``timeout`` seconds; a refused handshake raises at once."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLOUT)
        poller.register(self._monitor, zmq.POLLIN)
        end = time.monotonic() + max(timeout, 0)
        while True:
            self.check_refused()  # once refused, always: the daemon will not hear this client
            try:
                self.sock.send(frame, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            left = end - time.monotonic()
            if left <= 0:
                raise DaemonUnavailable(f"No connection to the daemon on {self.endpoint} took the request within "
                                        f"{timeout:g} s.", "Is it running? Check 'dfi daemon status' and "
                                        "'dfi daemon logs'.")
            poller.poll(int(min(left, RECHECK_S) * 1000) + 1)

    def try_send(self, msg: dict[str, Any]) -> bool:
        """Send a notice (heartbeat, cancel) only if the connection takes it now; False if it did not."""
        try:
            self.send(msg, 0)
        except DaemonUnavailable:
            return False
        return True

    def resend_if_reconnected(self) -> bool:
        """Send the last request again if the connection was made anew since (it may have been lost with it).

        Safe for every request: the daemon recognises a job request it already has by client and id.
        """
        self.peer_gone()
        if self._last is None:
            return False
        frame, seen = self._last
        if self.reconnects == seen:
            return False
        try:
            self._put(frame, 0)
        except DaemonUnavailable:
            return False  # not connected yet: the next look tries again
        self._last = (frame, self.reconnects)
        return True

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """Next reply, or None after ``timeout`` seconds; a refused handshake raises at once."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        end = time.monotonic() + max(timeout, 0)
        while True:
            ready = dict(poller.poll(int(max(end - time.monotonic(), 0) * 1000)))
            if self.sock in ready:
                return P.unpack(self.sock.recv(), 1 << 31)
            if self._monitor in ready:
                self.check_refused()
            if time.monotonic() >= end:
                return None

    def call(self, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its reply (error replies raise :class:`DaemonError`)."""
        timeout = self.timeout if timeout is None else timeout
        end = time.monotonic() + timeout
        rid = self.send(msg, timeout)
        while True:
            left = end - time.monotonic()
            reply = self.receive(min(left, RECHECK_S)) if left > 0 else None
            if reply is None and left > 0:
                self.resend_if_reconnected()
                continue
            if reply is None:
                raise DaemonUnavailable(
                    f"The daemon on {self.endpoint} did not answer within {timeout:g} s.",
                    "Is it running? Check 'dfi daemon status' and 'dfi daemon logs'.")
            if reply.get("id") != rid and not (reply.get("id") is None and reply.get("type") == "error"):
                continue  # a late reply to an earlier request
            if reply.get("type") == "error":  # nil id: the daemon could not even decode the request
                raise DaemonError(reply.get("code", "error"), reply.get("message", "error"), reply.get("hint"), reply)
            return reply

    # ------------------------------------------------------------------ simple operations
    def hello(self, client: str = "gimp-dfi", timeout: float | None = None) -> dict[str, Any]:
        reply = self.call(P.hello(client), timeout)
        self.limits = reply.get("limits", {})
        self.server = reply
        return reply

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        return self.call(P.simple("ping"), timeout)

    def status(self) -> dict[str, Any]:
        return self.call(P.simple("status"))

    def attributes(self) -> dict[str, Any]:
        return self.call(P.simple("attributes"))

    def cancel(self, job: str) -> dict[str, Any]:
        return self.call(P.simple("cancel", job=job))

    def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        return self.call(P.simple("shutdown"), timeout)

    def echo(self, image: dict[str, Any]) -> dict[str, Any]:
        return self.call(P.simple("echo", image=image))

    # ------------------------------------------------------------------ jobs
    def run_job(self, msg: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None,
                timeout: float | None = None, stall_timeout: float | None = None) -> dict[str, Any]:
        """Submit an edit/inpaint, stream its events to ``on_event`` and return the result reply.

        Sends heartbeats while waiting (the daemon cancels the job of a silent client)
        and raises :class:`DaemonUnavailable` if the daemon is silent for ``timeout``
        seconds. With ``stall_timeout``, a job that sends no progress for that long
        (while the daemon still answers heartbeats: a wedged worker) is cancelled and
        raises ``stalled``. Ctrl+C cancels the job on the daemon before re-raising.
        """
        timeout = self.timeout if timeout is None else timeout
        accepted = self.call(msg, timeout)
        if on_event:
            on_event(accepted)
        wait = _JobWait.start(accepted, timeout, stall_timeout)
        with self._cancelled_on_interrupt(wait):
            while True:
                reply = self._next_job_reply(wait)
                if reply is None:
                    continue
                if on_event:
                    on_event(reply)
                if reply.get("type") == "result":
                    return reply

    def preview(self, session: str, attribute: str, strength: float, *, image: dict | None = None,
                mask: dict | None = None, on_preview: Callable[[dict[str, Any]], None] | None = None,
                cancel: Callable[[], bool] | None = None, **options: Any) -> dict[str, Any]:
        """A live preview of ``strength`` in ``session``; returns the final ``preview`` message (the refined
        look, or the instant one with ``refine=False``) and passes each ``preview`` message to ``on_preview``.

        The first preview of a session carries ``image`` (and ``mask``); later ones may leave them out. Error
        replies raise :class:`DaemonError`: code ``unknown_session`` (send again with the image), ``superseded``
        (a newer preview of the session replaced it). ``cancel`` is asked about 20 times a second; once it
        says True the job is cancelled on the daemon and ``cancelled`` raised. Heartbeats as for ``run_job``."""
        msg = P.preview_request(session, attribute, strength, image, mask, **options)
        wait = _JobWait.start(self.call(msg, self.timeout), self.timeout, None)
        with self._cancelled_on_interrupt(wait):
            while True:
                if cancel is not None and cancel():
                    self.try_send(P.simple("cancel", job=wait.job))
                    raise DaemonError("cancelled", f"The preview {wait.job} was cancelled.", "Nothing to do.")
                reply = self._next_job_reply(wait, PREVIEW_POLL_S if cancel is not None else None)
                if reply is None or reply.get("type") != "preview":
                    continue
                if on_preview:
                    on_preview(reply)
                if reply.get("final"):
                    return reply

    @contextlib.contextmanager
    def _cancelled_on_interrupt(self, wait: _JobWait) -> Iterator[None]:
        """Ctrl+C while waiting for a job cancels it on the daemon before it is re-raised."""
        try:
            yield
        except KeyboardInterrupt:
            try:
                self.try_send(P.simple("cancel", job=wait.job))
            except (zmq.ZMQError, DaemonError):
                pass
            raise

    def close_session(self, session: str) -> bool:
        """Tell the daemon a live-preview session is done (a dialog closed): its previews stop and its memory
        is freed at once. True if the daemon still held it."""
        return bool(self.call(P.simple("close_session", session=session), self.timeout).get("dropped"))

    def _next_job_reply(self, wait: _JobWait, poll: float | None = None) -> dict[str, Any] | None:
        """The job's next progress or result reply, or None after a heartbeat, a reply of another request or a
        quiet interval (at most ``poll`` seconds, if given); heartbeats, stalls, silence and error replies are
        dealt with here."""
        now = time.monotonic()
        if wait.stall_timeout is not None and now - wait.progressed > wait.stall_timeout:
            self.try_send(P.simple("cancel", job=wait.job))
            raise DaemonError("stalled", f"{wait.job} made no progress for {wait.stall_timeout:g} s and was "
                              "cancelled.", "See 'dfi daemon logs'; restart the daemon with 'dfi daemon stop' if it "
                              "stays stuck.")
        if now >= wait.next_beat:
            self.try_send(P.simple("heartbeat", jobs=[wait.job]))  # unsent: silence tells
            wait.next_beat = now + wait.interval
        reply = self.receive(min(wait.next_beat - now, wait.interval, poll if poll is not None else wait.interval))
        now = time.monotonic()
        if reply is None:
            self._check_silence(wait, now)
            return None
        wait.heard = now
        if reply.get("type") == "heartbeat":
            self._heartbeat_answer(wait, reply)
            return None
        if reply.get("id") != wait.rid:
            return None
        wait.progressed = now
        if reply.get("type") == "error":
            raise DaemonError(reply.get("code", "error"), reply.get("message", "error"), reply.get("hint"), reply)
        return reply

    def _check_silence(self, wait: _JobWait, now: float) -> None:
        """Silence with a closed connection means the daemon is gone; silence on an open one (a paused daemon)
        is waited out up to the timeout."""
        if now - wait.heard > wait.timeout or (now - wait.heard > wait.alive_s and self.peer_gone()):
            raise DaemonUnavailable(
                f"The daemon on {self.endpoint} stopped answering while running {wait.job} "
                f"(no heartbeat reply for {now - wait.heard:.0f} s); it crashed or was stopped.",
                "See 'dfi daemon logs', then retry: 'dfi daemon start' starts a new one (commands "
                "start it themselves unless --no-autostart is given).")

    def _heartbeat_answer(self, wait: _JobWait, reply: dict[str, Any]) -> None:
        state = reply.get("jobs", {}).get(wait.job)
        if state == "sent":  # its final reply was lost on the way (a reconnect): ask again
            self.try_send(P.simple("result", job=wait.job))
        if state == "unknown":
            # results are sent before heartbeat answers, so the job really is gone
            raise DaemonError("unknown_job", f"The daemon no longer knows {wait.job} and sent no result.",
                              "It was probably restarted; submit the request again.")


@dataclass
class _JobWait:
    """Where a client's wait for one job stands: its ids, and when it last heard anything and any progress."""

    job: str
    rid: Any
    interval: float  # seconds between heartbeats
    timeout: float
    stall_timeout: float | None
    alive_s: float  # silence this long on a closed connection: the daemon is gone
    heard: float
    progressed: float
    next_beat: float

    @classmethod
    def start(cls, accepted: dict[str, Any], timeout: float, stall_timeout: float | None) -> _JobWait:
        interval = float(accepted.get("heartbeat_interval_s", P.HEARTBEAT_INTERVAL_S))
        now = time.monotonic()
        # The main loop answers heartbeats even while the worker computes
        return cls(accepted["job"], accepted["id"], interval, timeout, stall_timeout,
                   min(timeout, max(LIVENESS_S, 4 * interval)), now, now, now + interval)
