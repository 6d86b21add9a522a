"""The gimp-dfi wire protocol: the single source of truth for daemon, CLI and GIMP plug-in.

Importable with only the standard library, pyzmq and msgpack (GIMP's Python has
no numpy or torch). Every message is one ZeroMQ frame holding one msgpack map
with the protocol version ``v``. Clients use a DEALER socket, the daemon a
ROUTER. docs/protocol.md describes every message; this module enforces it.

Requests carry ``op`` (and an optional client-chosen ``id`` echoed in every
reply); replies carry ``type``. Validation is strict: an unknown version, op
or field, a wrong type, or an image whose byte count does not match its size
is answered with a typed ``error`` reply (``code`` + ``message`` + ``hint``),
checked before any pixel memory is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from dataclasses import fields as dataclass_fields
from typing import Any

import msgpack

from .guard import check_shape

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 2_000_000
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_STRENGTHS = 16
MAX_ID_LEN = 64
MAX_STR_LEN = 4096
HEARTBEAT_INTERVAL_S = 1.0  # clients send a heartbeat this often while they wait for a job
DEFAULT_CLIENT_TIMEOUT_S = 6.0  # the daemon cancels a job whose client has been silent this long

FORMATS = {"RGB8": 3, "RGBA8": 4}  # image pixel formats: bytes per pixel, row-major, top row first
MASK_FORMATS = {"L8": 1}  # mask: one byte per pixel, 0 = keep, 255 = edit, in between = partial
SCALINGS = ("relative", "none", "beta")
COLOR_MODES = ("channel", "global", "none")
# Quality presets: the daemon decides what each costs on its device (iterations, working size); explicit
# ``iterations`` / ``work_size`` options override the preset's. A request naming none gets "balanced".
QUALITIES = ("fast", "balanced", "best")
COMPONENTS = ("shape", "tone", "texture")  # an edit's parts: warp, low-passed colour change, DFI's inversion
DEFAULT_QUALITY = "balanced"

# Error codes: (meaning, default hint). Engine errors (bad_input, image_too_small, ...) reuse their codes.
ERRORS: dict[str, str] = {
    "bad_message": "The message is not a msgpack map; send one frame holding a msgpack map.",
    "unsupported_version": "Protocol version not supported; upgrade the older side (see 'supported').",
    "unknown_op": "Unknown operation; see the 'ops' list of the hello reply.",
    "bad_field": "A field is missing, unknown or of the wrong type or range.",
    "too_large": "The message exceeds the daemon's size limit.",
    "image_too_small": "The image is smaller than 32x32 pixels.",
    "image_too_large": "The image has more pixels than the daemon's limit.",
    "queue_full": "The daemon's job queue is full; retry later or cancel a job.",
    "unknown_job": "No queued or running job has that id.",
    "unread_replies": "This client has too many replies it has not read; read them before sending more.",
    "id_in_use": "Another request of this client, still queued or running, has that id; use a new id.",
    "unknown_attribute": "The neighbour source does not define that attribute; run 'dfi attributes'.",
    "no_database": "The daemon has no neighbour database loaded.",
    "align_unavailable": "The neighbour source has no face frame to align to; send align=false.",
    "cancelled": "The job was cancelled.",
    "client_gone": "The job was cancelled because its client stopped sending heartbeats.",
    "shutting_down": "The daemon is shutting down.",
    "bad_input": "The image, mask or a parameter is unusable as given.",
    "weights_error": "The VGG-19 weights could not be loaded.",
    "engine_error": "The engine failed.",
    "internal_error": "Unexpected daemon error; see 'dfi daemon logs'.",
    "unknown_session": "The daemon does not hold that live-preview session (never opened, or dropped by its "
                       "budget or idle time); send the preview again with its image.",
    "superseded": "A newer preview of the same session replaced this one; nothing to do.",
}


class ProtocolError(Exception):
    """A typed protocol error; ``code`` is one of :data:`ERRORS`."""

    def __init__(self, code: str, message: str, hint: str | None = None, **extra: Any) -> None:
        self.code = code
        self.message = message
        self.hint = hint
        self.extra = extra
        super().__init__(f"{message} {hint}" if hint else message)


@dataclass(frozen=True)
class Limits:
    """What the daemon accepts; announced in the hello reply."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_strengths: int = MAX_STRENGTHS


@dataclass(frozen=True)
class Image:
    """A validated image or mask: the byte count matches width × height × channels."""

    width: int
    height: int
    format: str
    data: bytes

    @property
    def channels(self) -> int:
        return {**FORMATS, **MASK_FORMATS}[self.format]

    def to_wire(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "format": self.format, "data": self.data}


# --------------------------------------------------------------------------- encoding


def pack(msg: dict[str, Any]) -> bytes:
    """One message -> one frame. Adds the protocol version if absent."""
    if "v" not in msg:
        msg = {"v": PROTOCOL_VERSION, **msg}
    return msgpack.packb(msg, use_bin_type=True)


def unpack(frame: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One frame -> a map, with msgpack's own length limits so a hostile header cannot make it allocate."""
    if len(frame) > max_bytes:
        raise ProtocolError("too_large", f"Message of {len(frame):,} bytes exceeds the limit of {max_bytes:,}.",
                            "Send a smaller image (select the face) or raise the daemon's --max-message-mb.")
    check_shape(frame, ProtocolError)
    try:
        msg = msgpack.unpackb(
            frame, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=MAX_STR_LEN * 16,
            max_array_len=4096, max_map_len=256, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types (ValueError, ExtraData, StackError, ...)
        raise ProtocolError("bad_message", f"Could not decode the message as msgpack: {_decode_reason(e)}.",
                            "Send exactly one frame holding one msgpack map.") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", f"Message is a msgpack {type(msg).__name__}, not a map.",
                            "Send one msgpack map with 'v' and 'op' keys.")
    return msg


def _decode_reason(e: Exception) -> str:
    """msgpack's reason in words a client author can act on."""
    text = str(e)
    for key, what in (("max_array_len", "a list"), ("max_map_len", "a map"), ("max_str_len", "a string"),
                      ("max_bin_len", "a binary field"), ("max_ext_len", "an extension type")):
        if key in text:
            limit = text.rsplit("(", 1)[-1].rstrip(")") if "(" in text else "?"
            return (f"{what} is longer than the {limit} entries any message may hold (the fields have lower "
                    "limits of their own, e.g. at most 16 strengths)") if key in ("max_array_len", "max_map_len") \
                else f"{what} is longer than {limit} bytes"
    return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__


def error_reply(code: str, message: str, hint: str | None = None, req_id: Any = None, **extra: Any) -> dict:
    """A typed error reply; ``hint`` defaults to the code's standard advice."""
    return {"v": PROTOCOL_VERSION, "type": "error", "id": req_id, "code": code, "message": message,
            "hint": hint if hint is not None else ERRORS.get(code, ""), **extra}


def reply(kind: str, req_id: Any = None, /, **fields: Any) -> dict:
    """A reply of type ``kind`` (positional: a preview reply has a field named ``kind`` of its own)."""
    return {"v": PROTOCOL_VERSION, "type": kind, "id": req_id, **fields}


# --------------------------------------------------------------------------- validation helpers


def _bad(field: str, what: str) -> ProtocolError:
    return ProtocolError("bad_field", f"Field '{field}' {what}.", "Fix the request; see docs/protocol.md.")


def _int(field: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(field, f"must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _bad(field, f"must be between {lo} and {hi}, got {v}")
    return v


def _float(field: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(field, f"must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise _bad(field, f"must be a finite number between {lo:g} and {hi:g}, got {v!r}")
    return f


def _str(field: str, v: Any, choices: tuple[str, ...] | None = None, max_len: int = MAX_STR_LEN) -> str:
    if not isinstance(v, str):
        raise _bad(field, f"must be a string, got {type(v).__name__}")
    if choices is not None and v not in choices:
        raise _bad(field, f"must be one of {', '.join(choices)}, got {v[:40]!r}")
    if len(v) > max_len:
        raise _bad(field, f"is longer than {max_len} characters")
    return v


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(field, f"must be true or false, got {type(v).__name__}")
    return v


def _image(field: str, v: Any, limits: Limits, formats: dict[str, int]) -> Image:
    """Check an image map; sizes are checked against the limits before the byte count is even looked at."""
    if not isinstance(v, dict):
        raise _bad(field, f"must be a map with width, height, format and data, got {type(v).__name__}")
    unknown = set(v) - {"width", "height", "format", "data"}
    if unknown:
        raise _bad(field, f"has unknown keys {sorted(map(str, unknown))}; allowed: width, height, format, data")
    for key in ("width", "height", "format", "data"):
        if key not in v:
            raise _bad(f"{field}.{key}", "is missing")
    w = _int(f"{field}.width", v["width"], 1, 1 << 20)
    h = _int(f"{field}.height", v["height"], 1, 1 << 20)
    fmt = _str(f"{field}.format", v["format"], tuple(formats))
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ProtocolError("image_too_small", f"{field} is {w}x{h} pixels; DFI needs at least {MIN_SIDE}x{MIN_SIDE}.",
                            "Select a larger region or scale the image up.")
    if w * h > limits.max_pixels:
        raise ProtocolError("image_too_large",
                            f"{field} is {w}x{h} = {w * h:,} pixels, over the daemon's limit of {limits.max_pixels:,}.",
                            "Select a smaller region (the face), scale the image down, or start the daemon "
                            "with a larger --max-pixels if the device has the memory.")
    data = v["data"]
    if not isinstance(data, (bytes, bytearray)):
        raise _bad(f"{field}.data", f"must be binary (msgpack bin), got {type(data).__name__}")
    expected = w * h * formats[fmt]
    if len(data) != expected:
        raise _bad(f"{field}.data", f"has {len(data):,} bytes but {w}x{h} {fmt} needs exactly {expected:,}")
    return Image(w, h, fmt, bytes(data))


def _strengths(field: str, v: Any, limits: Limits) -> tuple[float, ...]:
    if not isinstance(v, list) or not v:
        raise _bad(field, "must be a non-empty list of numbers")
    if len(v) > limits.max_strengths:
        raise _bad(field, f"has {len(v)} entries; at most {limits.max_strengths} per request")
    return tuple(_float(f"{field}[{i}]", s, -100.0, 100.0) for i, s in enumerate(v))


def _job_id(field: str, v: Any) -> str:
    return _str(field, v, max_len=MAX_ID_LEN)


MAX_WORK_SIZE = 4096  # px: the largest side an aligned face is edited at (0 = the database's own)
PREVIEW_MIN_S = 0.5  # previews come at most this often, whatever a request asks
PREVIEW_MAX_SIDE = 256  # a preview's longer side, in pixels
JOB_OPS = ("edit", "inpaint")
ALL_JOB_OPS = (*JOB_OPS, "preview")  # preview: a live slider's quick look (see docs/protocol.md, sessions)
MAX_SESSION_LEN = 64  # a live-preview session id, chosen by the client


def _components(field: str, v: Any) -> tuple[str, ...]:
    """A non-empty list of distinct COMPONENTS (e.g. ["shape", "tone"]: the instant part, no optimisation)."""
    if not isinstance(v, list) or not v or len(v) > len(COMPONENTS):
        raise _bad(field, f"must be a non-empty list of {', '.join(COMPONENTS)}")
    names = [_str(f"{field}[{i}]", x, COMPONENTS) for i, x in enumerate(v)]
    if len(set(names)) != len(names):
        raise _bad(field, "lists a component twice")
    return tuple(c for c in COMPONENTS if c in names)


def _option(check: Callable[[str, Any], Any], ops: tuple[str, ...] = JOB_OPS) -> Any:
    """One row of the option table: how a value is checked, and which requests take it."""
    return dataclass_field(default=None, metadata={"check": check, "ops": ops})


@dataclass(frozen=True)
class Options:
    """A job's options as the client sent them; None = not given (the daemon resolves its defaults once, when
    it accepts the job). This class is the one table of options: each field says how it is checked and which
    requests take it; ``EDIT_OPTIONS``/``INPAINT_OPTIONS``/``PREVIEW_OPTIONS`` and the checks are read from it."""

    iterations: int | None = _option(lambda f, v: _int(f, v, 1, 10_000), ALL_JOB_OPS)
    k: int | None = _option(lambda f, v: _int(f, v, 1, 1000), ALL_JOB_OPS)
    scaling: str | None = _option(lambda f, v: _str(f, v, SCALINGS))
    color: str | None = _option(lambda f, v: _str(f, v, COLOR_MODES))
    align: bool | None = _option(lambda f, v: _bool(f, v), ALL_JOB_OPS)
    feather: float | None = _option(lambda f, v: _float(f, v, 0.0, 10_000.0), ("edit",))
    preview: float | None = _option(lambda f, v: _float(f, v, 0.0, 3600.0))
    work_size: int | None = _option(lambda f, v: _int(f, v, 0, MAX_WORK_SIZE))
    quality: str | None = _option(lambda f, v: _str(f, v, QUALITIES))
    components: tuple[str, ...] | None = _option(lambda f, v: _components(f, v), ("edit", "preview"))
    refine: bool | None = _option(lambda f, v: _bool(f, v), ("preview",))  # preview: also the refined look

    def given(self) -> dict[str, Any]:
        """The options that were sent, as wire values (what a client would send to get this object)."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclass_fields(self) if (v := getattr(self, f.name)) is not None}


_OPTION_ROWS = {f.name: f.metadata for f in dataclass_fields(Options)}
EDIT_OPTIONS = tuple(name for name, row in _OPTION_ROWS.items() if "edit" in row["ops"])
INPAINT_OPTIONS = tuple(name for name, row in _OPTION_ROWS.items() if "inpaint" in row["ops"])
PREVIEW_OPTIONS = tuple(name for name, row in _OPTION_ROWS.items() if "preview" in row["ops"])
SESSION_OPTIONS = ("align", "k", "components")  # a preview's options that shape its session (the rest do not)


def validate_option(name: str, value: Any) -> Any:
    """One option checked as a request's would be (for clients that check before sending)."""
    checked = _OPTION_ROWS[name]["check"](f"options.{name}", value)
    return list(checked) if isinstance(checked, tuple) else checked


def _options(op: str) -> Callable[[str, Any, Limits], Options]:
    """The checker of ``op``'s options map: known names only, each checked by its row of :class:`Options`."""
    def check(field: str, v: Any, limits: Limits) -> Options:
        if not isinstance(v, dict):
            raise _bad(field, f"must be a map, got {type(v).__name__}")
        allowed = tuple(name for name, row in _OPTION_ROWS.items() if op in row["ops"])
        out = {}
        for key, val in v.items():
            if key not in allowed:
                raise _bad(f"{field}.{str(key)[:40]}", f"is not an option here; allowed: {', '.join(allowed)}")
            out[key] = _OPTION_ROWS[key]["check"](f"{field}.{key}", val)
        return Options(**out)
    return check


# --------------------------------------------------------------------------- re-exported (this module's size)
# Request builders live in ``requests`` (clients call ``protocol.edit_request`` …), typed requests and their
# validation in ``validation`` (the daemon calls ``protocol.validate_request`` …).
from .requests import (  # noqa: E402, F401 (re-exported)
    edit_request,
    hello,
    image_map,
    inpaint_request,
    preview_request,
    simple,
)
from .validation import (  # noqa: E402, F401 (re-exported)
    OPS,
    Echo,
    Edit,
    Heartbeat,
    Hello,
    Inpaint,
    JobRef,
    JobRequest,
    Preview,
    Request,
    SessionRef,
    request_id,
    validate_request,
)
