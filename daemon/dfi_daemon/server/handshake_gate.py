"""The front door's handshake gate: a byte relay on the public TCP port, so a peer without keys costs a few KiB.

libzmq reads a CURVE handshake command like any message: a peer that declares a 31 MiB
HELLO and sends it slowly is buffered up to ``ZMQ_MAXMSGSIZE`` before anything checks its
key, and about 16 such peers pushed the front door over its budget (issue 22). No libzmq
option bounds handshake commands apart from messages, and authenticated clients need large
messages. So on a CURVE TCP endpoint this thread owns the TCP port and the ROUTER listens on
a private Unix socket (0600, in the daemon's 0700 runtime folder) that only the gate reaches.

Per connection, the gate reads the ZMTP 3 stream client → server only until the server's
READY command has passed server → client: the 64-byte greeting, then frames (flags byte:
0x04 command, 0x02 eight-byte size, else one-byte size). Before READY, a client frame that
is not a command or declares more than ``HANDSHAKE_FRAME_MAX``, more than
``HANDSHAKE_BYTES_MAX`` bytes in all, or a handshake that lasts past ``HANDSHAKE_S``
closes the connection at once; no frame header is passed on before it has been checked.
Real commands are small: HELLO 202 bytes, INITIATE ~300 with its metadata. READY comes only
after the key was accepted, so after it the gate pipes bytes both ways through one bounded
chunk per direction (a side is read only while the other side has taken everything), adding
no unbounded memory. CURVE stays end to end: the gate never sees a key or a plaintext byte.
"""

from __future__ import annotations

import errno
import ipaddress
import resource
import selectors
import socket
import struct
import threading
import time

GREETING = 64
HANDSHAKE_FRAME_MAX = 4096  # a client command before READY (HELLO is 200 bytes, INITIATE ~300)
HANDSHAKE_BYTES_MAX = 8192  # all a client may send before READY, greeting included
HANDSHAKE_S = 10.0  # a handshake takes milliseconds (libzmq waits 30 s); a peer that stalls is cut here
CHUNK = 128 * 1024  # per direction and connection: what the gate holds in transit
DRAIN_S = 2.0  # after one side closed: time left to pass on what the other side still has
MAX_PENDING = 256  # connections still in their handshake (~18 KiB each here); more are closed at once
SERVER_WATCH_MAX = 65536  # server bytes before READY (greeting + WELCOME are ~230); more is not libzmq
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Refused(Exception):
    """The client broke a handshake limit: the connection is closed."""


class ClientHandshake:
    """Client → server bytes before READY: says how many may be passed on, or refuses."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.checked = GREETING  # bytes [0, checked) are checked (or greeting); a frame header starts here
        self.passed = 0  # bytes already passed on
        self.server_greeted = False  # the ROUTER's whole greeting has come (see ``take``)

    def take(self) -> bytes:
        """The bytes that may be passed on now.

        The client's greeting after its version byte waits until the ROUTER's whole greeting has
        come: libzmq sends the rest of its greeting when it reads the client's version, and if the
        client's rest arrives in the same read and is refused (a keyless client's NULL mechanism), it
        closes without sending it, so the client would not learn why (a relay joins what TCP alone
        keeps apart).
        """
        ready = min(len(self.buf), self.checked if self.server_greeted else 11)
        out = bytes(self.buf[self.passed:ready])
        self.passed = max(self.passed, ready)
        return out

    def feed(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HANDSHAKE_BYTES_MAX:
            raise Refused(f"more than {HANDSHAKE_BYTES_MAX} bytes before the handshake ended")
        buf = self.buf
        while len(buf) > self.checked:
            flags = buf[self.checked]
            if flags & ~0x06 or not flags & 0x04:
                raise Refused(f"a frame with flags {flags:#x} during the handshake")
            head = 9 if flags & 0x02 else 2
            if len(buf) < self.checked + head:
                break
            size = struct.unpack_from(">Q", buf, self.checked + 1)[0] if head == 9 else buf[self.checked + 1]
            if size > HANDSHAKE_FRAME_MAX:
                raise Refused(f"a {size}-byte command during the handshake")
            self.checked += head + size

    def rest(self) -> bytes:
        """What was held back (at most a frame header's start), passed on once the peer is authenticated."""
        return bytes(self.buf[self.passed:])


class ServerWatch:
    """Server → client bytes (all passed on): finds the READY command that ends the handshake."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.at = GREETING

    def feed(self, data: bytes) -> bool:
        self.buf += data
        buf = self.buf
        while len(buf) > self.at:
            flags = buf[self.at]
            head = 9 if flags & 0x02 else 2
            if len(buf) < self.at + head:
                break
            size = struct.unpack_from(">Q", buf, self.at + 1)[0] if head == 9 else buf[self.at + 1]
            body = self.at + head
            if flags & 0x04 and size:
                if len(buf) <= body or len(buf) < body + 1 + buf[body]:
                    break
                name = buf[body]
                if buf[body + 1:body + 1 + name] == b"READY":
                    return True
            self.at = body + size
        if len(buf) > SERVER_WATCH_MAX:
            raise Refused("the server sent no READY")
        return False


class Link:
    """One client connection and its connection to the ROUTER."""

    def __init__(self, outer: socket.socket, inner: socket.socket) -> None:
        self.outer, self.inner = outer, inner
        self.to_inner = memoryview(b"")  # read from the client, not yet written to the ROUTER
        self.to_outer = memoryview(b"")
        self.client: ClientHandshake | None = ClientHandshake()
        self.server: ServerWatch | None = ServerWatch()
        self.deadline = time.monotonic() + HANDSHAKE_S
        self.drain_until: float | None = None  # set when one side has closed
        self.gone: socket.socket | None = None  # the side that closed first
        self.shut = False  # the client was sent our FIN (after the ROUTER closed and all was passed on)
        self.masks = {outer: 0, inner: 0}

    @property
    def pending(self) -> bool:
        return self.server is not None


def listen(endpoint: str) -> socket.socket:
    """A listening socket for ``tcp://HOST:PORT`` (HOST an address, ``*``, a name, or an interface)."""
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if host == "*":
        family, addr = socket.AF_INET, ("0.0.0.0", int(port))
    elif host in {name for _, name in socket.if_nameindex()}:
        family, addr = socket.AF_INET, (_interface_address(host), int(port))
    else:
        try:
            ip = ipaddress.ip_address(host)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            addr = (host, int(port))
        except ValueError:
            family, _, _, _, addr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq: a restarted front door rebinds
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _interface_address(name: str) -> str:
    """The IPv4 address of a network interface, as libzmq resolves ``tcp://eth0:PORT``."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
    return socket.inet_ntoa(packed[20:24])


class Gate:
    """The relay, for one listening socket (``listen``); ``start`` runs it, ``stop`` ends it."""

    def __init__(self, listener: socket.socket, inner_path: str) -> None:
        self.listener, self.inner_path = listener, inner_path
        self.sel = selectors.DefaultSelector()
        self.links: dict[socket.socket, Link] = {}  # both sockets of each link
        self.handshaking: set[Link] = set()
        self.refused = 0  # connections cut for breaking a handshake limit
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_links = max(8, (soft - 64) // 3) if soft != resource.RLIM_INFINITY else 10_000  # 3 fds each
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._accept_paused_until = 0.0
        self._next_expire = 0.0
        self.thread: threading.Thread | None = None
        self.sel.register(self.listener, READ)
        self.sel.register(self._wake_r, READ)

    def serve(self) -> None:
        stop_by = None
        while True:
            if self._stopping and stop_by is None:
                stop_by = time.monotonic() + DRAIN_S
                self._unregister(self.listener)
                self.listener.close()
            if stop_by is not None and (all(link.shut for link in self.links.values())
                                        or time.monotonic() > stop_by):
                break  # every client has had all the ROUTER sent it (or the time is up)
            if 0 < self._accept_paused_until < time.monotonic():
                self._accept_paused_until = 0.0
                self.sel.register(self.listener, READ)
            for key, mask in self.sel.select(0.25):
                sock = key.fileobj
                if sock is self.listener:
                    self._accept()
                elif sock is self._wake_r:
                    self._wake_r.recv(64)
                elif sock in self.links:
                    self._event(self.links[sock], sock, mask)
            self._expire()
        for link in {id(v): v for v in self.links.values()}.values():
            self._close(link)
        self.sel.close()

    def start(self) -> None:
        """Relay from a daemon thread (it dies with the process, as every connection must)."""
        self.thread = threading.Thread(target=self.serve, daemon=True, name="handshake-gate")
        self.thread.start()

    def stop(self, wait: bool = True) -> None:
        """Close the port, pass on what is in transit (at most ``DRAIN_S``), then end the thread."""
        self._stopping = True
        self._wake_w.send(b"x")
        if wait and self.thread is not None:
            self.thread.join(DRAIN_S + 1)

    # ------------------------------------------------------------------ connections
    def _accept(self) -> None:
        for _ in range(64):
            try:
                outer, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:  # out of descriptors or memory: stop accepting for a moment
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._unregister(self.listener)
                    self._accept_paused_until = time.monotonic() + 0.1
                return
            if len(self.handshaking) >= MAX_PENDING or len(self.links) // 2 >= self.max_links:
                outer.close()
                self.refused += 1
                continue
            outer.setblocking(False)
            outer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as libzmq: small replies leave at once
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            inner.setblocking(False)
            if inner.connect_ex(self.inner_path) != 0:  # no ROUTER, or its backlog is full: the client retries
                outer.close()
                inner.close()
                continue
            link = Link(outer, inner)
            self.links[outer] = self.links[inner] = link
            self.handshaking.add(link)
            self._interest(link)

    def _event(self, link: Link, sock: socket.socket, mask: int) -> None:
        try:
            if mask & WRITE:
                self._write(link, sock)
            if mask & READ and sock in self.links:
                self._read(link, sock)
        except Refused:
            self.refused += 1
            self._close(link)
        except OSError:  # reset, broken pipe: both sides go
            self._close(link)
            return
        if link.outer in self.links:
            self._interest(link)

    def _read(self, link: Link, sock: socket.socket) -> None:
        data = sock.recv(CHUNK)
        if link.gone is not None:  # the client's last bytes, after the ROUTER closed: dropped
            if not data:
                self._close(link)
            return
        if not data:  # this side closed: pass on what the other side still needs, then close both
            link.drain_until = time.monotonic() + DRAIN_S
            link.gone = sock
            if sock is link.outer:
                link.to_outer = memoryview(b"")  # nobody left to read it
            else:
                link.to_inner = memoryview(b"")
            self._close_if_drained(link)
            return
        if sock is link.outer:
            if link.client is not None:
                link.client.feed(data)
                data = link.client.take()
            link.to_inner = memoryview(data)
            self._write(link, link.inner)
        else:
            client, server = link.client, link.server
            if client is not None and server is not None:
                done = server.feed(data)
                if not client.server_greeted and len(server.buf) >= GREETING:
                    client.server_greeted = True
                    link.to_inner = memoryview(bytes(link.to_inner) + client.take())
                if done:  # READY: authenticated from here on
                    link.to_inner = memoryview(bytes(link.to_inner) + client.rest())
                    link.client = link.server = None
                    self.handshaking.discard(link)
                self._write(link, link.inner)
            link.to_outer = memoryview(data)
            self._write(link, link.outer)

    def _write(self, link: Link, sock: socket.socket) -> None:
        pending = link.to_inner if sock is link.inner else link.to_outer
        if not pending:
            return
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            return
        if sock is link.inner:
            link.to_inner = pending[sent:]
        else:
            link.to_outer = pending[sent:]
        self._close_if_drained(link)

    def _close_if_drained(self, link: Link) -> None:
        """Once what is owed has been passed on: close both, or after the ROUTER closed, say so to the client.

        The client then reads the ROUTER's last bytes (its greeting, an ERROR) before it sees the end: a socket
        closed with unread input sends a reset instead, and the client could lose them (a keyless client would
        not learn of the mechanism mismatch, and wait for its timeout).
        """
        if link.gone is link.outer and not link.to_inner:
            self._close(link)
        elif link.gone is link.inner and not link.to_outer and not link.shut:
            link.outer.shutdown(socket.SHUT_WR)
            link.shut = True  # then read the client until it closes too (or DRAIN_S)

    def _interest(self, link: Link) -> None:
        """Read a side only while what it sent before has been taken by the other (that is the back-pressure)."""
        reading = link.gone is None
        want = {link.outer: (READ if (reading and not link.to_inner) or link.shut else 0)
                | (WRITE if link.to_outer else 0),
                link.inner: (READ if reading and not link.to_outer else 0) | (WRITE if link.to_inner else 0)}
        if link.gone is not None:
            want[link.gone] = 0  # nothing more comes from it, and what was owed to it was dropped
        for sock, mask in want.items():
            if mask == link.masks[sock]:
                continue
            if not mask:
                self.sel.unregister(sock)
            elif link.masks[sock]:
                self.sel.modify(sock, mask)
            else:
                self.sel.register(sock, mask)
            link.masks[sock] = mask

    def _expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expire:  # a tenth of a second is precise enough, and a busy relay skips the scan
            return
        self._next_expire = now + 0.1
        for link in {id(v): v for v in self.links.values()}.values():
            if (link.pending and now > link.deadline) or (link.drain_until is not None and now > link.drain_until):
                if link.pending:
                    self.refused += 1
                self._close(link)

    def _close(self, link: Link) -> None:
        self.handshaking.discard(link)
        for sock in (link.outer, link.inner):
            if self.links.pop(sock, None) is not None and link.masks[sock]:
                self.sel.unregister(sock)
            link.masks[sock] = 0
            sock.close()

    def _unregister(self, sock: socket.socket) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
