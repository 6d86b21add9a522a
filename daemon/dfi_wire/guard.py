"""Bounds on a raw msgpack frame, checked from its headers before anything is decoded.

Part of the wire package (stdlib only). ``error`` is the protocol's error class, passed in so
this module needs nothing of the protocol's.
"""

from __future__ import annotations

MAX_OBJECTS = 10_000  # a real request holds a few dozen; an image is one bin object however large
MAX_DEPTH = 16
# Bytes that follow a msgpack header byte: fixed-size payloads, and the size of a length field.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2,
          0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1), 0xD9: (1, 0),
          0xDA: (2, 0), 0xDB: (4, 0)}  # (length bytes, extra type byte)
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (count bytes, objects per entry)


def check_shape(frame: bytes, error: type[Exception], max_objects: int = MAX_OBJECTS,
                max_depth: int = MAX_DEPTH) -> None:
    """Count msgpack objects and nesting from the headers alone, before anything is decoded.

    A frame of nested empty containers is tiny per object but makes the decoder
    allocate a Python object for each; this walk stops at the limit, so it costs
    at most ``max_objects`` steps whatever the frame holds.
    """
    pos, n, end = 0, 0, len(frame)
    pending = [1]  # objects still to read at each open nesting level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        n += 1
        if n > max_objects:
            raise error("bad_message", f"The message holds more than {max_objects:,} msgpack objects.",
                                "A request is one map of a few dozen fields; images go in one bin field.")
        if pos >= end:
            return  # truncated: the decoder itself reports it
        b = frame[pos]
        pos += 1
        children = 0
        if b <= 0x7F or b >= 0xE0:
            continue
        if 0x80 <= b <= 0x8F:
            children = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            children = b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            width, extra = _SIZED[b]
            pos += width + extra + int.from_bytes(frame[pos:pos + width], "big")
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            children = per * int.from_bytes(frame[pos:pos + width], "big")
            pos += width
        if children:
            if len(pending) >= max_depth:
                raise error("bad_message", f"The message nests deeper than {max_depth} levels.",
                                    "A request is one flat map (image and mask are maps of a few fields).")
            pending.append(children)
