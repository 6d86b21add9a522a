"""The live preview: the result forming while the daemon optimises, in a small window (interactive runs only).

A window of the plug-in's own rather than a layer in the image, on purpose: GIMP kills a
plug-in whose progress the user cancels, so a preview layer (and a frozen undo history)
could be left behind in the user's image. This window dies with the plug-in; the image
changes once, when the final layers arrive, in one undo group. Its Cancel button stops
the job on the daemon cleanly.
"""

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, GLib, Gtk  # noqa: E402

TITLE = "DFI preview"
SIDE = 256  # the daemon's previews are at most this large


class PreviewWindow:
    def __init__(self, what: str) -> None:
        self.cancelled = False
        self.window = Gtk.Dialog(title=f"{TITLE}: {what}")
        self.window.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.window.connect("response", self._cancel)
        self.window.connect("delete-event", lambda *_: self._cancel() or True)
        self.image = Gtk.Image()
        self.image.set_size_request(SIDE, SIDE)
        self.label = Gtk.Label(label="Starting…")
        self.label.set_xalign(0.0)
        box = self.window.get_content_area()
        box.pack_start(self.image, True, True, 6)
        box.pack_start(self.label, False, False, 6)
        self.window.show_all()
        self.shown = 0  # previews shown (the tests read it from the title)
        self.pump()

    def _cancel(self, *_: object) -> None:
        self.cancelled = True
        self.label.set_text("Cancelling…")

    def text(self, text: str) -> None:
        if not self.cancelled:
            self.label.set_text(text)
        self.pump()

    def show(self, preview: dict) -> None:
        """Show one preview image map (RGB8 or RGBA8)."""
        w, h, fmt = int(preview["width"]), int(preview["height"]), preview["format"]
        alpha = fmt == "RGBA8"
        data = GLib.Bytes.new(bytes(preview["data"]))
        stride = w * (4 if alpha else 3)
        pixbuf = GdkPixbuf.Pixbuf.new_from_bytes(data, GdkPixbuf.Colorspace.RGB, alpha, 8, w, h, stride)
        self.image.set_from_pixbuf(pixbuf)
        self.shown += 1
        self.window.set_title(f"{self.window.get_title().split(' [')[0]} [{self.shown}]")
        self.pump()

    @staticmethod
    def pump() -> None:
        """Let GTK draw and take clicks: the plug-in has no main loop while it waits for the daemon."""
        while Gtk.events_pending():
            Gtk.main_iteration_do(False)

    def close(self) -> None:
        self.window.destroy()
        self.pump()
