"""A hostile ZeroMQ peer for tests: ZMTP 3.0 (NULL mechanism) spoken by hand over a raw socket.

Unlike a real DEALER it can stop reading at the socket level (so the daemon's replies back up
in the daemon, not in the client's library) and can send any frames, e.g. a multipart message
that never ends. ``EndlessHello`` is a peer without keys that starts a CURVE handshake and
never finishes its first command.
"""

from __future__ import annotations

import socket
import struct
import time


def connect(endpoint: str, rcvbuf: int = 4096) -> socket.socket:
    """A plain stream socket to an ipc:// or tcp://HOST:PORT endpoint."""
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(endpoint[len("ipc://"):])
        return sock
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    return sock


class RawPeer:
    def __init__(self, endpoint: str, rcvbuf: int = 4096) -> None:
        self.sock = connect(endpoint, rcvbuf)
        self.sock.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + b"\x00" + bytes(31))
        self._read_exact(64)  # the daemon's greeting
        body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
        self.sock.sendall(b"\x04" + bytes([len(body)]) + body)

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            data += chunk
        return data

    def frame(self, data: bytes, more: bool = False) -> None:
        flags = 0x01 if more else 0x00
        if len(data) > 255:
            self.sock.sendall(bytes([flags | 0x02]) + struct.pack(">Q", len(data)) + data)
        else:
            self.sock.sendall(bytes([flags, len(data)]) + data)

    def close(self) -> None:
        self.sock.close()


CURVE_GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\0") + b"\x00" + bytes(31)


class EndlessHello:
    """A peer without keys: a CURVE greeting, then a HELLO command that declares ``declared`` bytes.

    ``trickle`` then sends the body slowly and says how far it got before the server cut it off.
    A real HELLO is 200 bytes; libzmq alone buffers such a command up to ``ZMQ_MAXMSGSIZE``.
    """

    def __init__(self, endpoint: str, declared: int = 31 << 20, timeout: float = 10.0) -> None:
        self.sock = connect(endpoint, 1 << 16)
        self.sock.settimeout(timeout)
        self.declared = declared
        self.sent = 0  # body bytes the kernel took
        self.cut = False  # the server closed the connection
        try:
            self.sock.sendall(CURVE_GREETING)
            greeting = b""
            while len(greeting) < 64:
                chunk = self.sock.recv(64 - len(greeting))
                if not chunk:
                    raise ConnectionError("closed during the greeting")
                greeting += chunk
            self.sock.sendall(b"\x06" + struct.pack(">Q", declared) + b"\x05HELLO")
        except OSError:
            self.cut = True

    def trickle(self, chunk: int = 1 << 16, pause: float = 0.005, until: float | None = None) -> int:
        """Send the body ``chunk`` bytes at a time, ``pause`` s apart, until cut, done or ``until`` (monotonic)."""
        data = bytes(chunk)
        while not self.cut and self.sent < self.declared and (until is None or time.monotonic() < until):
            try:
                self.sent += self.sock.send(data[:self.declared - self.sent])
            except TimeoutError:  # the server stopped reading: not cut, only stalled
                break
            except OSError:  # reset or closed by the server
                self.cut = True
                break
            time.sleep(pause)
        return self.sent

    def closed_by_server(self, timeout: float) -> bool:
        """Whether the server closes the connection within ``timeout`` s (sending nothing more)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
