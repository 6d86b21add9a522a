"""Typed requests and their validation: a decoded map checked field by field against :mod:`protocol`'s rules
and returned as :class:`Edit`, :class:`Inpaint`, :class:`Preview`, … (re-exported by :mod:`protocol`, where
clients and the daemon find them: ``protocol.validate_request``).

Kept apart so the protocol module stays readable; ``dfi_wire/__init__`` loads :mod:`protocol` first, which
loads this module at its end, so either may be imported first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import (
    FORMATS,
    MASK_FORMATS,
    MAX_ID_LEN,
    MAX_SESSION_LEN,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Image,
    Limits,
    Options,
    ProtocolError,
    _bad,
    _float,
    _image,
    _int,
    _job_id,
    _options,
    _str,
    _strengths,
)


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
