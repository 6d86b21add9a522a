"""Request builders: the maps a client sends, re-exported by :mod:`protocol` (``protocol.edit_request`` …).

Kept apart so the protocol module stays readable. The version is read from
:mod:`protocol` when a request is built, not when this module loads: either
module may be imported first without an import cycle.
"""

from __future__ import annotations

from typing import Any


def _version() -> int:
    from .protocol import PROTOCOL_VERSION

    return PROTOCOL_VERSION


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def image_map(data: bytes, width: int, height: int, fmt: str) -> dict[str, Any]:
    return {"width": int(width), "height": int(height), "format": fmt, "data": bytes(data)}


def hello(client: str = "gimp-dfi") -> dict[str, Any]:
    from .protocol import SUPPORTED_VERSIONS

    return {"v": _version(), "op": "hello", "versions": list(SUPPORTED_VERSIONS), "client": client}


def edit_request(image: dict, attribute: str, strengths: list[float], mask: dict | None = None,
                 req_id: Any = None, **options: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": _version(), "op": "edit", "id": req_id, "image": image,
                           "attribute": attribute, "strengths": [float(s) for s in strengths]}
    if mask is not None:
        msg["mask"] = mask
    if options:
        msg["options"] = _options(options)
    return msg


def inpaint_request(image: dict, mask: dict, strength: float | None = None, req_id: Any = None,
                    **options: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": _version(), "op": "inpaint", "id": req_id, "image": image, "mask": mask}
    if strength is not None:
        msg["strength"] = float(strength)
    if options:
        msg["options"] = _options(options)
    return msg


def preview_request(session: str, attribute: str, strength: float, image: dict | None = None,
                    mask: dict | None = None, req_id: Any = None, **options: Any) -> dict[str, Any]:
    """A live preview of ``strength`` in ``session``: the first of a session carries ``image`` (and ``mask``);
    later ones may leave them out, and the daemon uses the photo it keeps for the session."""
    msg: dict[str, Any] = {"v": _version(), "op": "preview", "id": req_id, "session": session,
                           "attribute": attribute, "strength": float(strength)}
    if image is not None:
        msg["image"] = image
    if mask is not None:
        msg["mask"] = mask
    if options:
        msg["options"] = _options(options)
    return msg


def simple(op: str, req_id: Any = None, **fields: Any) -> dict[str, Any]:
    return {"v": _version(), "op": op, "id": req_id, **fields}
