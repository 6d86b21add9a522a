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


# --------------------------------------------------------------------------- typed requests (after validation)


@dataclass(frozen=True, kw_only=True)
class Request:
    """A validated request: ``op`` and the client's ``id`` (echoed in every reply). Ops without fields
    (ping, status, attributes, shutdown) are this class itself."""

    op: str
    id: Any = None


@dataclass(frozen=True, kw_only=True)
class Hello(Request):
    versions: tuple[int, ...] | None = None
    client: str | None = None


@dataclass(frozen=True, kw_only=True)
class Echo(Request):
    image: Image


@dataclass(frozen=True, kw_only=True)
class Edit(Request):
    """An attribute edit: one result image per strength."""

    image: Image
    attribute: str
    strengths: tuple[float, ...]
    mask: Image | None = None
    options: Options = Options()


@dataclass(frozen=True, kw_only=True)
class Inpaint(Request):
    """Fill selection: the masked region reconstructed from neighbours."""

    image: Image
    mask: Image
    strength: float | None = None
    options: Options = Options()


@dataclass(frozen=True, kw_only=True)
class Preview(Request):
    """A live preview of one strength in a session the daemon keeps (the photo set up once, then any strength).
    ``image`` (and ``mask``) open or replace the session; without them the daemon's copy is used."""

    session: str
    attribute: str
    strength: float
    image: Image | None = None
    mask: Image | None = None
    options: Options = Options()


@dataclass(frozen=True, kw_only=True)
class SessionRef(Request):
    """close_session: the client is done with a live-preview session (its dialog closed)."""

    session: str


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Request):
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobRef(Request):
    """cancel and result: a request about one job."""

    job: str


JobRequest = Edit | Inpaint | Preview


def _image_of(formats: dict[str, int]) -> Callable[[str, Any, Limits], Image]:
    return lambda f, v, lim: _image(f, v, lim, formats)


def _job_ref(f: str, v: Any, lim: Limits) -> str:
    return _job_id(f, v)


# op -> (the class it becomes, {field: (required, checker(field, value, limits))})
_Field = tuple[bool, Callable[[str, Any, Limits], Any]]
OPS: dict[str, tuple[type[Request], dict[str, _Field]]] = {
    "hello": (Hello, {"versions": (False, lambda f, v, lim: tuple(_int(f, x, 0, 1 << 30) for x in _list(f, v, 32))),
                      "client": (False, lambda f, v, lim: _str(f, v, max_len=200))}),
    "ping": (Request, {}),
    "status": (Request, {}),
    "attributes": (Request, {}),
    "echo": (Echo, {"image": (True, _image_of(FORMATS))}),
    "edit": (Edit, {
        "image": (True, _image_of(FORMATS)),
        "mask": (False, lambda f, v, lim: None if v is None else _image(f, v, lim, MASK_FORMATS)),
        "attribute": (True, lambda f, v, lim: _str(f, v, max_len=200)),
        "strengths": (True, _strengths),
        "options": (False, _options("edit")),
    }),
    "inpaint": (Inpaint, {
        "image": (True, _image_of(FORMATS)),
        "mask": (True, _image_of(MASK_FORMATS)),
        "strength": (False, lambda f, v, lim: _float(f, v, -100.0, 100.0)),
        "options": (False, _options("inpaint")),
    }),
    "preview": (Preview, {
        "session": (True, lambda f, v, lim: _session(f, v)),
        "attribute": (True, lambda f, v, lim: _str(f, v, max_len=200)),
        "strength": (True, lambda f, v, lim: _float(f, v, -100.0, 100.0)),
        "image": (False, lambda f, v, lim: None if v is None else _image(f, v, lim, FORMATS)),
        "mask": (False, lambda f, v, lim: None if v is None else _image(f, v, lim, MASK_FORMATS)),
        "options": (False, _options("preview")),
    }),
    "close_session": (SessionRef, {"session": (True, lambda f, v, lim: _session(f, v))}),
    "heartbeat": (Heartbeat, {"jobs": (False, lambda f, v, lim: tuple(_job_id(f, x) for x in _list(f, v, 64)))}),
    "cancel": (JobRef, {"job": (True, _job_ref)}),
    "result": (JobRef, {"job": (True, _job_ref)}),
    "shutdown": (Request, {}),
}


def _session(field: str, v: Any) -> str:
    name = _str(field, v, max_len=MAX_SESSION_LEN)
    if not name:
        raise _bad(field, "must not be empty")
    return name


def _list(field: str, v: Any, max_len: int) -> list:
    if not isinstance(v, list):
        raise _bad(field, f"must be a list, got {type(v).__name__}")
    if len(v) > max_len:
        raise _bad(field, f"has more than {max_len} entries")
    return v


def request_id(msg: dict[str, Any]) -> Any:
    """The client's request id if it is of an allowed type (so even an error reply can carry it)."""
    rid = msg.get("id")
    if isinstance(rid, bool) or not (rid is None or isinstance(rid, int) or
                                     (isinstance(rid, str) and len(rid) <= MAX_ID_LEN)):
        return None
    if isinstance(rid, int) and not -(1 << 63) <= rid < (1 << 63):
        return None
    return rid


def _check_version(msg: dict[str, Any]) -> None:
    v = msg.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("unsupported_version", "Message has no integer protocol version 'v'.",
                            f"Add \"v\": {PROTOCOL_VERSION}.", supported=list(SUPPORTED_VERSIONS))
    if v not in SUPPORTED_VERSIONS:
        raise ProtocolError("unsupported_version", f"Protocol version {v} is not supported by this daemon.",
                            f"This daemon speaks versions {list(SUPPORTED_VERSIONS)}; upgrade the older side.",
                            supported=list(SUPPORTED_VERSIONS))


def _check_op(msg: dict[str, Any]) -> str:
    op = msg.get("op")
    if op is None:
        raise ProtocolError("unknown_op", "The message has no 'op' field.", f"Add 'op', one of: {', '.join(OPS)}.")
    if not isinstance(op, str) or op not in OPS:
        shown = repr(op[:40]) if isinstance(op, str) else f"of type {type(op).__name__}"
        raise ProtocolError("unknown_op", f"Unknown operation {shown}.", f"Use one of: {', '.join(OPS)}.")
    if "id" in msg and request_id(msg) is None and msg["id"] is not None:
        raise _bad("id", f"must be an integer or a string of at most {MAX_ID_LEN} characters")
    return op


def _check_fields(op: str, msg: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Each field of ``op`` checked; unknown fields and missing required ones refused."""
    fields = OPS[op][1]
    unknown = [k for k in msg if k not in ("v", "op", "id") and k not in fields]
    if unknown:
        allowed = ", ".join(["v", "op", "id", *fields])
        raise _bad(str(unknown[0])[:40], f"is not part of '{op}' (allowed: {allowed})")
    out: dict[str, Any] = {}
    for name, (required, check) in fields.items():
        if name in msg:
            out[name] = check(name, msg[name], limits)
        elif required:
            raise _bad(name, f"is required by '{op}'")
    m, im = out.get("mask"), out.get("image")
    if m is not None and im is None:  # a preview's mask belongs to the image that opens its session
        raise _bad("mask", "was sent without an image; send the image with it")
    if m is not None and im is not None and (m.width, m.height) != (im.width, im.height):
        raise _bad("mask", f"is {m.width}x{m.height} but the image is {im.width}x{im.height}; "
                   "they must be the same size")
    return out


def validate_request(msg: dict[str, Any], limits: Limits = Limits()) -> Request:
    """Check a decoded request; return it typed (:class:`Edit`, :class:`Inpaint`, … with images as
    :class:`Image` and options as :class:`Options`). The wire itself stays plain maps.

    Raises :class:`ProtocolError` for anything not exactly as documented.
    """
    _check_version(msg)
    op = _check_op(msg)
    return OPS[op][0](op=op, id=request_id(msg), **_check_fields(op, msg, limits))


# --------------------------------------------------------------------------- request builders (for clients)
# They live in ``requests`` (this module's size); clients keep calling them as ``protocol.edit_request`` etc.
from .requests import (  # noqa: E402, F401 (re-exported)
    edit_request,
    hello,
    image_map,
    inpaint_request,
    preview_request,
    simple,
)
