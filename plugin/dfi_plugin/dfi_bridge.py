"""The GIMP-free half of the plug-in: menu table, settings and requests (the daemon connection: :mod:`dfi_link`).

Runs under GIMP's own Python with the standard library, pyzmq and msgpack only
(no numpy, no torch, no GI), so it is unit-tested on the host as installed.
The wire format comes from ``dfi_wire`` (the package ``daemon/dfi_wire/``),
copied unchanged beside this file by ``dfi gimp install``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfi_wire import protocol as P

HERE = Path(__file__).resolve().parent
CONFIG_NAME = "gimp-dfi.json"
KEYS_DIR = HERE / "keys"  # the installer copies the daemon's local CURVE keys here (TCP endpoints)
CLIENT_NAME = "gimp-dfi-plugin/1"


@dataclass(frozen=True)
class MenuItem:
    """One entry under Filters → DFI. ``attribute`` None = chosen by the user (Attribute…)."""

    proc: str
    attribute: str | None
    label: str
    blurb: str
    inpaint: bool = False


MENU: tuple[MenuItem, ...] = (
    MenuItem("plug-in-dfi-facial-hair", "facehair", "Add _facial hair...", "Add a beard and moustache to a face"),
    MenuItem("plug-in-dfi-older", "older", "_Older...", "Make a face look older"),
    MenuItem("plug-in-dfi-younger", "younger", "_Younger...", "Make a face look younger"),
    MenuItem("plug-in-dfi-smile", "smile", "_Smile...", "Make a face smile"),
    MenuItem("plug-in-dfi-attribute", None, "_Attribute...", "Apply any attribute the DFI daemon defines"),
    MenuItem("plug-in-dfi-fill", "inpaint", "_Fill selection...", "Fill the selection from similar faces "
             "(inpainting)", inpaint=True),
)
MENU_BY_PROC = {m.proc: m for m in MENU}
MENU_PATH = "<Image>/Filters/DFI"

# Quality presets: the daemon decides what each costs on its device (iterations, working size); the dialog
# shows what they mean there (``quality_hint``).
QUALITY: dict[str, str] = {"fast": "Fast", "balanced": "Balanced", "best": "Best"}
assert set(QUALITY) == set(P.QUALITIES)
ALIGNMENT: dict[str, str] = {"auto": "Automatic (on with a face database)", "on": "On", "off": "Off"}
COLOR: dict[str, str] = {"channel": "Per channel", "global": "Global (as the paper)", "none": "None"}
assert set(COLOR) == set(P.COLOR_MODES)
# Which parts of the edit run (the wire's "components"): "auto" = the attribute's own mix.
PARTS: dict[str, str] = {"auto": "The attribute's mix", "shape-tone": "Shape and tone only (instant)",
                         "all": "Shape, tone and texture", "texture": "Texture only (DFI, as the paper)"}
PARTS_COMPONENTS = {"shape-tone": ["shape", "tone"], "all": list(P.COMPONENTS), "texture": ["texture"]}

CONTEXT_MARGIN = 0.25  # context around the selection's bounding box sent to the daemon, per side ...
CONTEXT_MAX_PX = 64  # ... but no more than this (a big selection already holds its context)


class PluginError(Exception):
    """A failure to report to GIMP: what went wrong, then what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message, self.hint = message, hint
        super().__init__(f"{message}\n{hint}" if hint else message)


# ---------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What the installer recorded (``gimp-dfi.json``), overridable by environment variables."""

    endpoint: str = ""
    dfi: list[str] = field(default_factory=list)  # argv prefix that runs the dfi CLI
    daemon_args: list[str] = field(default_factory=list)  # extra 'dfi daemon start' options (--device, ...)
    autostart: bool = True
    timeout_s: float = 60.0  # daemon silent this long while a job runs = dead
    stall_timeout_s: float = 1800.0  # a job without progress this long (wedged worker) is cancelled
    connect_timeout_s: float = 3.0
    start_timeout_s: float = 300.0  # first start loads VGG-19 (and may download it)
    preview_s: float = 2.0  # interactive runs: a live preview this often (0 = none)

    @classmethod
    def load(cls, folder: Path = HERE, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        path = folder / CONFIG_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as e:
            raise PluginError(f"The plug-in's settings file {path} is unreadable ({e}).",
                              "Re-run the installer: dfi gimp install") from None
        s = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        if isinstance(s.dfi, str):
            s.dfi = [s.dfi]
        s.endpoint = env.get("DFI_ENDPOINT") or s.endpoint
        if env.get("DFI_AUTOSTART"):
            s.autostart = env["DFI_AUTOSTART"].strip().lower() not in ("0", "false", "no", "off")
        if env.get("DFI_PREVIEW_S"):
            try:
                s.preview_s = max(float(env["DFI_PREVIEW_S"]), 0.0)
            except ValueError:
                raise PluginError(f"DFI_PREVIEW_S={env['DFI_PREVIEW_S']!r} is not a number of seconds.",
                                  "Set it to e.g. 2, or 0 for no live preview.") from None
        if env.get("DFI_EXECUTABLE"):
            s.dfi = [env["DFI_EXECUTABLE"]]
        if not s.endpoint:
            raise PluginError("The plug-in does not know the daemon's endpoint.",
                              "Re-run the installer (dfi gimp install) or set DFI_ENDPOINT.")
        return s


# ---------------------------------------------------------------------------- arguments -> request


def parse_strengths(text: str, max_count: int = P.MAX_STRENGTHS) -> list[float] | None:
    """'0.4, 0.8 1.2' -> [0.4, 0.8, 1.2]; empty -> None (the attribute's default)."""
    tokens = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    if not tokens:
        return None
    out = []
    for t in tokens:
        try:
            v = float(t)
        except ValueError:
            raise PluginError(f"Strength {t!r} is not a number.",
                              "Type numbers separated by commas, e.g. 0.4, 0.8 (one layer each).") from None
        if not math.isfinite(v) or abs(v) > 100:
            raise PluginError(f"Strength {t} is out of range.", "Use values between -100 and 100 (typically 0-1 "
                              "for beta-scaled attributes, 0-5 otherwise).")
        out.append(v)
    if len(out) > max_count:
        raise PluginError(f"{len(out)} strengths given; at most {max_count} per edit.", "Run the edit twice.")
    return out


def edit_options(quality: str, iterations: int, color: str, alignment: str, parts: str = "auto") -> dict[str, Any]:
    """Dialog values -> protocol options (only what the user set; the daemon fills the rest)."""
    if parts not in PARTS:
        raise PluginError(f"Unknown parts {parts!r}.", f"Use one of: {', '.join(PARTS)}.")
    if quality not in QUALITY:
        raise PluginError(f"Unknown quality {quality!r}.", f"Use one of: {', '.join(QUALITY)}.")
    if alignment not in ALIGNMENT:
        raise PluginError(f"Unknown alignment {alignment!r}.", f"Use one of: {', '.join(ALIGNMENT)}.")
    if color not in COLOR:
        raise PluginError(f"Unknown colour mode {color!r}.", f"Use one of: {', '.join(COLOR)}.")
    opts: dict[str, Any] = {"quality": quality, "color": color}
    if iterations > 0:
        opts["iterations"] = iterations
    if alignment != "auto":
        opts["align"] = alignment == "on"
    if parts != "auto":
        opts["components"] = PARTS_COMPONENTS[parts]
    return opts


def layer_noun(label: str) -> str:
    """'Add facial hair' -> 'facial hair', 'Older' -> 'older' (for layer names)."""
    label = re.sub(r"\s*\(.*\)$", "", label.strip().rstrip(".…").replace("_", ""))
    if label.lower().startswith("add "):
        label = label[4:]
    return label[:1].lower() + label[1:]


def strength_hint(item: Any, attrs: list[dict[str, Any]], chosen: str | None = None) -> str:
    """The sensible range of strengths for the menu item's attribute, as the daemon's network defines it."""
    name = "inpaint" if item.inpaint else (item.attribute or chosen)
    a = next((a for a in attrs if a.get("name") == name), None)
    if item.inpaint or a is None:
        return "Strength 0 uses the daemon's default for Fill selection." if item.inpaint else ""
    top, default = a.get("strength_max"), a.get("default_strength")
    if top is None or default is None:
        return ""
    mix = ", ".join(f"{c} {w:g}" for c, w in (a.get("components") or {}).items() if w)
    return (f"Strengths: a comma-separated list, one new layer each. For {a.get('label', name)} about "
            f"0–{top:g} makes sense (default {default:g}; {a.get('scaling', 'relative')} scaling)"
            + (f"; its mix: {mix}." if mix else "."))


def quality_hint(server: dict[str, Any]) -> str:
    """What the quality presets mean on the daemon's device (from its hello), for the dialog."""
    presets = server.get("presets") or {}
    if not presets:
        return ""
    parts = "; ".join(f"{QUALITY.get(k, k)} = {v.get('text', '')}" for k, v in presets.items())
    return f"Quality on this daemon ({server.get('device', 'its device')}): {parts}."


def layer_name(noun: str, strength: float | None) -> str:
    return f"DFI {noun}" if strength is None else f"DFI {noun} {strength:g}"


def crop_box(layer_w: int, layer_h: int, sel: tuple[int, int, int, int] | None,
             margin: float = CONTEXT_MARGIN, min_side: int = P.MIN_SIDE) -> tuple[int, int, int, int]:
    """The layer region (x, y, w, h) to send: the selection's box plus context, at least min_side wide.

    ``sel`` is the selection's box (x1, y1, x2, y2) in layer coordinates, None for the whole layer.
    """
    if layer_w < min_side or layer_h < min_side:
        raise PluginError(f"The layer is {layer_w}x{layer_h} pixels; DFI needs at least {min_side}x{min_side}.",
                          "Scale the image up or pick a larger layer.")
    if sel is None:
        return 0, 0, layer_w, layer_h
    x1, y1, x2, y2 = max(sel[0], 0), max(sel[1], 0), min(sel[2], layer_w), min(sel[3], layer_h)
    if x2 <= x1 or y2 <= y1:
        raise PluginError("The selection does not overlap the active layer.",
                          "Select a region on this layer, or pick the layer under the selection.")

    def grow(a: int, b: int, size: int) -> tuple[int, int]:
        pad = min(round((b - a) * margin), CONTEXT_MAX_PX)
        a, b = max(a - pad, 0), min(b + pad, size)
        short = min_side - (b - a)
        if short > 0:  # widen to the minimum, shifting inside the layer
            a = max(min(a - (short + 1) // 2, size - min_side), 0)
            b = a + min_side
        return a, b

    x1, x2 = grow(x1, x2, layer_w)
    y1, y2 = grow(y1, y2, layer_h)
    return x1, y1, x2 - x1, y2 - y1


# ---------------------------------------------------------------------------- one edit, phase by phase

FULL_FORMAT = "Y u8"  # the merge weights without a selection: 0 and 255, exact in any channel format
BINARY = bytes([0] + [255] * 255)  # bytes.translate table: any selection > 0 becomes fully selected
BUG_HINT = "This is a bug; please report it with 'dfi daemon logs'."


def edit_box(layer_w: int, layer_h: int, offsets: tuple[int, int], bounds: tuple[int, int, int, int] | None,
             inpaint: bool, max_pixels: int) -> tuple[int, int, int, int]:
    """The layer region (x, y, w, h) one edit reads and writes, from GIMP's selection bounds.

    ``bounds`` is the selection's box (x1, y1, x2, y2) in image coordinates, None without a
    selection; ``offsets`` the layer's place in the image. The daemon refuses over ``max_pixels``.
    """
    if inpaint and bounds is None:
        raise PluginError("Fill selection needs a selection.", "Select the region to fill, then run it again.")
    ox, oy = offsets
    sel = None if bounds is None else (bounds[0] - ox, bounds[1] - oy, bounds[2] - ox, bounds[3] - oy)
    box = crop_box(layer_w, layer_h, sel)
    if box[2] * box[3] > max_pixels:
        raise PluginError(f"The region to edit is {box[2]}x{box[3]} pixels, over the daemon's limit of "
                          f"{max_pixels:,}.", "Select just the face, or scale the image down (Image → Scale Image).")
    return box


def touched(weights: bytes, bpp: int) -> bytes:
    """L8 from a mask of ``bpp`` bytes a pixel: 255 wherever it is above zero (any of its bytes is not 0)."""
    acc = weights[0::bpp]
    for i in range(1, bpp):  # OR of the pixels' bytes, as big integers (no carries between bytes)
        acc = (int.from_bytes(acc, "little") | int.from_bytes(weights[i::bpp], "little")).to_bytes(len(acc), "little")
    return acc.translate(BINARY)


def changed_region(region: bytes, sent: bytes, result: bytes) -> bytes:
    """``region`` (L8) restricted to the pixels whose RGBA8 value the edit changed."""
    from array import array

    a, b = array("I"), array("I")
    a.frombytes(sent)
    b.frombytes(result)
    return bytes(r if x != y else 0 for r, x, y in zip(region, a, b))


def only_changed(weights: bytes, sent: bytes, result: bytes) -> bytes:
    """``weights`` (any mask format) with the pixels whose RGBA8 value the edit did not change set to zero."""
    keep = changed_region(b"\xff" * (len(sent) // 4), sent, result)  # 255 where changed, else 0
    bpp = len(weights) // len(keep)
    if bpp > 1:
        keep = bytes(itertools.chain.from_iterable(zip(*[keep] * bpp)))  # each pixel's flag for each of its bytes
    return (int.from_bytes(weights, "little") & int.from_bytes(keep, "little")).to_bytes(len(weights), "little")


@dataclass(frozen=True)
class Region:
    """The part of the layer one edit reads, sends and writes back, as GIMP gave it.

    ``weights`` is the selection over ``box`` exactly as GIMP stores it (``weights_format``: Y u8,
    Y u16, Y float, …; linear, the weights GIMP itself blends with), all 255 without a selection.
    It goes back into the merge channel unconverted, so a feathered band merges with GIMP's own
    weights. The daemon edits the whole selected area (``mask``); the weights apply once, on merge.
    """

    box: tuple[int, int, int, int]  # x, y, width, height in layer coordinates
    pixels: bytes  # RGBA8 (R'G'B'A u8): the byte values a PNG of the layer would hold
    weights: bytes
    weights_format: str
    photo: dict[str, Any]  # the image map sent
    mask: dict[str, Any] | None  # L8: 255 wherever the selection is above zero; None without a selection

    @classmethod
    def read(cls, box: tuple[int, int, int, int], pixels: bytes, selection: tuple[bytes, str] | None) -> Region:
        """The region from the box's RGBA8 pixels and the selection over it (its bytes and babl format)."""
        w, h = box[2], box[3]
        photo = P.image_map(pixels, w, h, "RGBA8")
        if selection is None:
            return cls(box, pixels, b"\xff" * (w * h), FULL_FORMAT, photo, None)
        weights, fmt = selection
        return cls(box, pixels, weights, fmt, photo, P.image_map(touched(weights, len(weights) // (w * h)), w, h, "L8"))

    def merge_weights(self, result: bytes, exact: bool) -> bytes:
        """The weights to merge ``result`` through; ``exact`` (above 8 bits): only where the edit changed a
        pixel, so every other pixel keeps the source's full precision."""
        return only_changed(self.weights, self.pixels, result) if exact else self.weights


def argument_names(item: MenuItem) -> tuple[str, ...]:
    """The procedure arguments an edit reads: those ``gimp-dfi.py`` declares for ``item``."""
    chosen = ("attribute",) if item.attribute is None else ()
    own = ("strength",) if item.inpaint else ("strengths", "parts")
    return (*chosen, *own, "quality", "iterations", "color", "alignment")


@dataclass(frozen=True)
class EditPlan:
    """One request as it goes on the wire (a plain map) and how to name the layers it brings back.

    ``strengths`` has one entry per image the daemon returns, in order (a fill's one is None).
    """

    msg: dict[str, Any]
    noun: str
    strengths: list[float | None]


def build_request(item: MenuItem, args: Mapping[str, Any], attrs: list[dict[str, Any]], region: Region,
                  preview_s: float = 0.0) -> EditPlan:
    """The request for ``item`` from its arguments (``argument_names``) and the daemon's attributes.

    ``preview_s`` above 0 asks for a live preview that often (interactive runs).
    """
    options = edit_options(args["quality"], args["iterations"], args["color"], args["alignment"],
                           "auto" if item.inpaint else args["parts"])
    if preview_s > 0:
        options["preview"] = preview_s
    if item.inpaint:
        msg = P.inpaint_request(region.photo, region.mask, args["strength"] or None, **options)
        return EditPlan(msg, layer_noun(item.label), [None])
    attribute = item.attribute or (args["attribute"] or "").strip()
    known = {a["name"]: a for a in attrs}
    if attribute not in known:
        raise PluginError(f"The DFI daemon does not define the attribute {attribute!r}.",
                          f"Defined: {', '.join(known) or 'none (start it with a face database)'}.")
    strengths = parse_strengths(args["strengths"] or "")  # GIMP may give None for ""
    if strengths is None:
        strengths = [known[attribute].get("default_strength", 1.0)]
    msg = P.edit_request(region.photo, attribute, strengths, region.mask, **options)
    noun = layer_noun(item.label if item.attribute else known[attribute].get("label", attribute))
    return EditPlan(msg, noun, list(strengths))


def check_images(result: dict[str, Any], count: int, width: int, height: int) -> list[dict[str, Any]]:
    """The result's images: ``count`` RGBA8 images of the region's size, or a PluginError (a daemon bug)."""
    images = result.get("images", [])
    if len(images) != count:
        raise PluginError(f"The daemon returned {len(images)} images for {count} strengths.", BUG_HINT)
    for im in images:
        if (im.get("width"), im.get("height"), im.get("format"), len(im.get("data", b""))) != \
                (width, height, "RGBA8", width * height * 4):
            raise PluginError("The daemon returned an image of the wrong size or format.", BUG_HINT)
    return images
