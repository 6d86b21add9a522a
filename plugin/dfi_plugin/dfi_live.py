"""The edit dialog's live strength slider (issue 23): a preview of the edited face that follows the slider.

The dialog only moves the slider; a worker thread of its own talks to the daemon (``Client.preview``) on a
second connection, so the dialog never waits on the network. Each slider move is sent once the slider has
rested ``DEBOUNCE_S``; a newer move ends the preview still running (its result would be stale anyway). The
first preview of a session carries the photo, later ones only the session id; a daemon that dropped the
session answers ``unknown_session`` and gets the photo again. Results come back to GTK with GLib.idle_add.

The top half (slider range, strengths text, debounce and supersede state, the worker) needs no GTK and is
unit-tested outside GIMP; the bottom half (:class:`LivePanel`) is the GTK widgets. No numpy, no torch.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dfi_bridge as B
import dfi_link as L
from dfi_wire.client import DaemonError

DEBOUNCE_S = 0.1  # the slider must rest this long before its value is sent (+ ~0.08 s instant look: < 0.2 s)
DEBUG_ENV = "DFI_LIVE_DEBUG"  # a folder: every preview shown is also saved there as PNG (for the tests)
SHOW_SIDE = 200  # px: the preview's longer side in the dialog
QUIET = ("superseded", "cancelled")  # a preview that a newer one replaced: nothing to tell the user


# ---------------------------------------------------------------------------- the slider and the strengths


@dataclass(frozen=True)
class SliderRange:
    """The slider's bounds, step and decimals for one attribute."""

    lower: float
    upper: float
    step: float
    digits: int
    default: float


def nice_step(span: float, steps: int = 100) -> float:
    """A round step (1, 2 or 5 times a power of ten) that cuts ``span`` into about ``steps`` parts."""
    raw = max(span / steps, 1e-6)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.999)


def slider_range(attr: Mapping[str, Any] | None) -> SliderRange:
    """From the daemon's ``attributes`` entry: 0 = no edit, the default = 100 % of the attribute.

    The top is the daemon's ``strength_max`` (3 x the default without one); below 0 the edit runs backwards
    (less smile, younger), down to -2 x the default, which is as far as the reverse stays plausible.
    """
    attr = attr or {}
    default = float(attr.get("default_strength") or 1.0)
    top = attr.get("strength_max")
    upper = float(top) if top and float(top) > 0 else 3 * abs(default)
    upper = max(upper, abs(default))
    lower = -min(2 * abs(default), upper)
    step = nice_step(upper - lower)
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return SliderRange(round(lower, digits), round(upper, digits), step, digits, round(default, digits))


def format_strength(value: float, digits: int) -> str:
    """The slider's value as the strengths field writes it: '0.4', '-1', '1.25'."""
    v = round(value, digits) + 0.0  # + 0.0: no "-0"
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if digits else text


class FieldSync:
    """The strengths text field next to the slider: it follows the slider until the user takes it over.

    Moving the slider rewrites the field while it still holds what the slider last wrote (so "move, OK"
    renders what the preview showed). "Add this strength" keeps the value: the first press pins the followed
    value, later presses append theirs. Typing in the field also stops the following.
    """

    def __init__(self, text: str, value: float, digits: int) -> None:
        self.digits = digits
        self.written: str | None = text if text.strip() in ("", format_strength(value, digits)) else None

    def follow(self, text: str, value: float) -> str | None:
        """The field's new text for a slider move, or None to leave the user's text alone."""
        if self.written is None or text != self.written:
            self.written = None
            return None
        self.written = format_strength(value, self.digits)
        return self.written

    def add(self, text: str, value: float) -> str:
        """The field's text with ``value`` kept in it (no duplicates; at most the daemon's count)."""
        self.written = None
        shown = format_strength(value, self.digits)
        have = B.parse_strengths(text) or []
        if any(abs(v - float(shown)) < 1e-9 for v in have):
            return text
        if len(have) >= B.P.MAX_STRENGTHS:
            raise B.PluginError(f"At most {B.P.MAX_STRENGTHS} strengths per edit.", "Remove one from the field.")
        return ", ".join([t.strip() for t in text.replace(";", ",").split(",") if t.strip()] + [shown])


def preview_options(alignment: str, parts: str) -> dict[str, Any]:
    """The dialog's choices that change what a preview shows, as the ``preview`` request's options."""
    opts: dict[str, Any] = {}
    if alignment in ("on", "off"):
        opts["align"] = alignment == "on"
    if parts in B.PARTS_COMPONENTS:
        opts["components"] = B.PARTS_COMPONENTS[parts]
    return opts


# ---------------------------------------------------------------------------- debounce and supersede


@dataclass(frozen=True)
class Want:
    """What the dialog shows now: the preview to ask for."""

    strength: float
    attribute: str
    options: tuple[tuple[str, Any], ...]  # sorted items (hashable, comparable)

    @classmethod
    def of(cls, strength: float, attribute: str, options: Mapping[str, Any]) -> Want:
        return cls(float(strength), attribute, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                             for k, v in options.items())))

    @property
    def session_key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """What the daemon's session is built for: another attribute or options need the photo again."""
        return self.attribute, self.options


@dataclass(frozen=True)
class Request:
    seq: int
    want: Want
    with_image: bool


class LiveState:
    """Thread-safe state shared by the dialog (which moves) and the worker (which sends)."""

    def __init__(self, debounce_s: float = DEBOUNCE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.debounce_s, self.clock = debounce_s, clock
        self._cond = threading.Condition()
        self._want: Want | None = None  # the newest move not yet sent
        self._moved_at = 0.0
        self._sent: Request | None = None  # the newest request sent
        self._held: tuple | None = None  # the session key the daemon holds our photo for
        self.closed = False

    def move(self, want: Want) -> None:
        with self._cond:
            self._want, self._moved_at = want, self.clock()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self) -> Request | None:
        """The request to send now: the newest move, once it has rested the debounce time; else None."""
        with self._cond:
            return self._take()

    def wait(self) -> Request | None:
        """Block until a request is due (see :meth:`take`); None once closed."""
        with self._cond:
            while not self.closed:
                left = self._moved_at + self.debounce_s - self.clock() if self._want else None
                if left is not None and left <= 0:
                    return self._take()
                self._cond.wait(left)
            return None

    def _take(self) -> Request | None:
        if self.closed or self._want is None or self.clock() - self._moved_at < self.debounce_s:
            return None
        seq = self._sent.seq + 1 if self._sent else 1
        self._sent = Request(seq, self._want, self._want.session_key != self._held)
        self._want = None
        return self._sent

    def stale(self, seq: int) -> bool:
        """True once request ``seq`` is no longer wanted: closed, or a different move came after it."""
        with self._cond:
            if self.closed or self._sent is None or self._sent.seq != seq:
                return True
            return self._want is not None and self._want != self._sent.want

    def current(self, seq: int) -> bool:
        """Whether a result of request ``seq`` may be shown: it is the newest sent and the dialog is open."""
        with self._cond:
            return not self.closed and self._sent is not None and self._sent.seq == seq

    def holds(self, want: Want | None) -> None:
        """The daemon holds the photo for ``want``'s session (None: it lost it; send it with the next)."""
        with self._cond:
            self._held = want.session_key if want else None


class PreviewWorker:
    """The thread that sends the dialog's previews, on a connection of its own (a Client is not thread-safe).

    ``show(seq, msg)`` and ``fail(text)`` are called through ``post`` (GLib.idle_add in GIMP), never on the
    worker's thread directly. On stop the session is closed on the daemon (else it goes after its idle time, or
    sooner, for its budget).
    """

    def __init__(self, state: LiveState, connect: Callable[[], Any], image: dict, mask: dict | None,
                 show: Callable[[int, dict], Any], fail: Callable[[str], Any],
                 post: Callable[..., Any] = lambda fn, *a: fn(*a)) -> None:
        self.state, self.connect, self.image, self.mask = state, connect, image, mask
        self.show, self.fail, self.post = show, fail, post
        self.session = f"gimp-dfi-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.thread = threading.Thread(target=self._loop, name="dfi-live-preview", daemon=True)
        self.client: Any = None

    def start(self) -> PreviewWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Close: the running preview is cancelled, the connection closed (in the worker's thread)."""
        self.state.close()
        self.thread.join(timeout)

    def _loop(self) -> None:
        try:
            while (req := self.state.wait()) is not None:
                try:
                    if self.client is None:
                        self.client = self.connect()
                    if not hasattr(self.client, "preview"):  # a dfi_wire from before live previews
                        self.post(self.fail, "this dfi has no live preview; update gimp-dfi and re-run "
                                  "'dfi gimp install'.")
                        return
                    self._send(req)
                except (DaemonError, B.PluginError) as e:
                    self.post(self.fail, L.describe(e))
        finally:
            if self.client is not None:
                self._close_session()
                self.client.close()

    def _close_session(self) -> None:
        """The dialog is done: the daemon frees the session now rather than after its idle time."""
        try:
            if hasattr(self.client, "close_session"):
                self.client.close_session(self.session)
        except Exception:  # closing anyway; the idle time frees it
            pass

    def _send(self, req: Request) -> None:
        """One preview, again with the photo if the daemon no longer holds the session."""
        with_image = req.with_image
        while True:
            def got(msg: dict, with_image: bool = with_image) -> None:
                if with_image:
                    self.state.holds(req.want)
                self.post(self.show, req.seq, msg)

            try:
                self.client.preview(self.session, req.want.attribute, req.want.strength,
                                    image=self.image if with_image else None,
                                    mask=self.mask if with_image else None, on_preview=got,
                                    cancel=lambda: self.state.stale(req.seq), **dict(req.want.options))
                return
            except DaemonError as e:
                if e.code in QUIET or self.state.stale(req.seq):
                    return
                if e.code != "unknown_session" or with_image:
                    raise
                self.state.holds(None)
                with_image = True


# ---------------------------------------------------------------------------- the GTK panel


def _once(fn: Callable[..., Any], *args: Any) -> bool:
    """An idle callback that runs once (GLib repeats one that returns True)."""
    fn(*args)
    return False


class LivePanel:
    """The slider, the preview image and "Add this strength", packed into the procedure dialog."""

    def __init__(self, dialog: Any, config: Any, item: B.MenuItem, attrs: list[dict], region: B.Region,
                 connect: Callable[[], Any]) -> None:
        import gi

        gi.require_version("Gtk", "3.0")
        gi.require_version("GdkPixbuf", "2.0")
        from gi.repository import GdkPixbuf, GLib, Gtk

        self.Gtk, self.GLib, self.Pixbuf = Gtk, GLib, GdkPixbuf
        self.config, self.item, self.attrs = config, item, {a["name"]: a for a in attrs}
        self.props = {p.name for p in config.list_properties()}
        self.debug = os.environ.get(DEBUG_ENV) or None
        self.count = 0
        self.state = LiveState()
        rng = slider_range(self.attrs.get(self._attribute()))
        first = (B.parse_strengths(config.get_property("strengths") or "") or [rng.default])[0]
        self.sync = FieldSync(config.get_property("strengths") or "", first, rng.digits)

        self.picture = Gtk.Image()
        self.picture.set_size_request(SHOW_SIDE, SHOW_SIDE)
        self.status = Gtk.Label(label="Preparing the preview…")
        self.status.set_line_wrap(True)
        self.adjust = Gtk.Adjustment(value=first, lower=rng.lower, upper=rng.upper, step_increment=rng.step,
                                     page_increment=(rng.upper - rng.lower) / 10, page_size=0)
        self.scale = Gtk.Scale(orientation=Gtk.Orientation.HORIZONTAL, adjustment=self.adjust)
        self.scale.set_hexpand(True)
        self._set_range(rng, first)
        label = Gtk.Label.new_with_mnemonic("Stre_ngth")
        label.set_mnemonic_widget(self.scale)
        add = Gtk.Button.new_with_mnemonic("A_dd this strength")
        add.set_tooltip_text("Keep the slider's strength in the strengths field: one new layer for each")
        add.connect("clicked", self._add)
        row, box = Gtk.Box(spacing=6), Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        for w, grow in ((label, False), (self.scale, True), (add, False)):
            row.pack_start(w, grow, grow, 0)
        for w in (self.picture, self.status, row):
            box.pack_start(w, False, False, 0)
        frame = Gtk.Frame(label="Live preview", child=box)
        frame.show_all()
        dialog.get_content_area().pack_start(frame, False, False, 6)

        self.adjust.connect("value-changed", lambda *_: self._moved(follow=True))
        for prop in ("attribute", "alignment", "parts"):
            if prop in self.props:
                config.connect(f"notify::{prop}", self._options_changed)
        dialog.connect("map", lambda *_: GLib.idle_add(self.scale.grab_focus))
        self.worker = PreviewWorker(self.state, connect, region.photo, region.mask, self._show, self._fail,
                                    post=lambda fn, *a: GLib.idle_add(_once, fn, *a)).start()
        self._moved(follow=False)  # the first preview, at the starting strength

    def _attribute(self) -> str:
        return self.item.attribute or self.config.get_property("attribute")

    def _set_range(self, rng: SliderRange, value: float) -> None:
        self.digits = rng.digits
        self.scale.set_digits(rng.digits)
        self.scale.clear_marks()
        self.scale.add_mark(0.0, self.Gtk.PositionType.BOTTOM, "0")
        self.scale.add_mark(rng.default, self.Gtk.PositionType.BOTTOM, "default")
        self.adjust.configure(value, rng.lower, rng.upper, rng.step, (rng.upper - rng.lower) / 10, 0)

    def _want(self) -> Want:
        args = {p: self.config.get_property(p) for p in ("alignment", "parts") if p in self.props}
        options = preview_options(args.get("alignment", "auto"), args.get("parts", "auto"))
        return Want.of(round(self.adjust.get_value(), self.digits), self._attribute(), options)

    def _moved(self, follow: bool) -> None:
        want = self._want()
        if follow:
            text = self.sync.follow(self.config.get_property("strengths") or "", want.strength)
            if text is not None:
                self.config.set_property("strengths", text)
        self.status.set_text(f"Previewing strength {format_strength(want.strength, self.digits)}…")
        self.state.move(want)

    def _options_changed(self, config: Any, spec: Any) -> None:
        if spec.name == "attribute":  # another attribute: its own range, at its default
            rng = slider_range(self.attrs.get(self._attribute()))
            self.sync = FieldSync(config.get_property("strengths") or "", self.adjust.get_value(), rng.digits)
            self._set_range(rng, rng.default)
        self._moved(follow=True)

    def _add(self, *_: Any) -> None:
        try:
            text = self.sync.add(self.config.get_property("strengths") or "", self.adjust.get_value())
        except B.PluginError as e:
            self.status.set_text(L.describe(e))
            return
        self.config.set_property("strengths", text)

    def _show(self, seq: int, msg: dict) -> None:
        if not self.state.current(seq):
            return
        im = msg["image"]
        w, h = int(im["width"]), int(im["height"])
        alpha = im["format"] == "RGBA8"
        data = self.GLib.Bytes.new(bytes(im["data"]))
        pixbuf = self.Pixbuf.Pixbuf.new_from_bytes(data, self.Pixbuf.Colorspace.RGB, alpha, 8, w, h,
                                                   w * (4 if alpha else 3))
        k = SHOW_SIDE / max(w, h)
        self.picture.set_from_pixbuf(pixbuf.scale_simple(max(round(w * k), 1), max(round(h * k), 1),
                                                         self.Pixbuf.InterpType.BILINEAR))
        kind = "refined" if msg.get("kind") == "refined" else "instant (shape and tone)"
        self.status.set_text(f"Strength {float(msg.get('strength', 0)):g}: {kind} preview"
                             + ("" if msg.get("final") else "; refining…"))
        self.count += 1
        if self.debug:
            self._save(pixbuf, msg)

    def _save(self, pixbuf: Any, msg: dict) -> None:
        """``DFI_LIVE_DEBUG``: the preview's own pixels as PNG, and a line about it in shown.jsonl."""
        name = f"{self.count:03d}-{msg.get('kind')}-{float(msg.get('strength', 0)):g}.png"
        pixbuf.savev(os.path.join(self.debug, name), "png", [], [])
        line = {"n": self.count, "file": name, "kind": msg.get("kind"), "strength": msg.get("strength"),
                "box": list(msg.get("box") or []), "final": bool(msg.get("final")),
                "slider": self.adjust.get_value(), "strengths": self.config.get_property("strengths")}
        with open(os.path.join(self.debug, "shown.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _fail(self, text: str) -> None:
        if not self.state.closed:
            self.status.set_text(f"No preview: {text}")

    def close(self) -> None:
        """The dialog is answered: stop previewing (the image is never touched here)."""
        self.worker.stop()


def attach(dialog: Any, config: Any, item: B.MenuItem, attrs: list[dict], region: B.Region,
           settings: B.Settings) -> LivePanel | None:
    """The live panel in ``dialog`` for an attribute edit (not Fill selection); None when there is nothing
    to preview (no attributes)."""
    if item.inpaint or not attrs:
        return None
    return LivePanel(dialog, config, item, attrs, region, lambda: L.connect(settings))
