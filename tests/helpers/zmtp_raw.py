"""A hostile ZeroMQ peer for tests: ZMTP 3.0 (NULL mechanism) spoken by hand over a raw socket.

Unlike a real DEALER it can stop reading at the socket level (so the daemon's replies back up
in the daemon, not in the client's library) and can send any frames, e.g. a multipart message
that never ends.
"""

from __future__ import annotations

import socket
import struct


class RawPeer:
    def __init__(self, endpoint: str, rcvbuf: int = 4096) -> None:
        if endpoint.startswith("ipc://"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.connect(endpoint[len("ipc://"):])
        else:
            host, _, port = endpoint[len("tcp://"):].rpartition(":")
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.connect((host, int(port)))
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
