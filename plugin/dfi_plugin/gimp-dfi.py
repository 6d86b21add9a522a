#!/usr/bin/env python3
"""gimp-dfi: Deep Feature Interpolation edits under Filters → DFI (GIMP 3).

The GIMP side only: read the layer and the selection, show the dialog, send one
request to the resident dfi daemon, drive GIMP's progress bar from its events and
insert the results as new layers above the source. Everything that needs no GIMP
lives in ``dfi_bridge``; the wire protocol is the daemon's own (``dfi_wire``).
Installed by ``dfi gimp install``.
"""

import contextlib
import json
import os
import sys
import time
import traceback

MARKS = {"module": time.time()}  # wall-clock phase marks, printed when DFI_PLUGIN_TIMING is set

HERE = os.path.dirname(os.path.realpath(__file__))
for _p in (os.path.join(HERE, "vendor"), HERE):  # vendored pyzmq/msgpack (if any), then our modules
    if os.path.isdir(_p) and _p not in sys.path:
        sys.path.insert(0, _p)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
import dfi_bridge as B  # noqa: E402
import dfi_link as L  # noqa: E402
from dfi_wire import protocol as P  # noqa: E402
from gi.repository import Babl, Gegl, Gimp, GLib, GObject  # noqa: E402

RGBA = "R'G'B'A u8"  # perceptual 8-bit: the byte values a PNG of the layer would hold
RW = GObject.ParamFlags.READWRITE


def _choice(options):
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(options.items()):
        choice.add(nick, i, label, "")
    return choice


class DFIPlugIn(Gimp.PlugIn):
    """One procedure per entry of ``dfi_bridge.MENU``; all share :meth:`run`."""

    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [m.proc for m in B.MENU]

    def do_create_procedure(self, name):
        item = B.MENU_BY_PROC[name]
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label(item.label)
        proc.add_menu_path(B.MENU_PATH)
        proc.set_documentation(item.blurb, item.blurb + " with Deep Feature Interpolation. Works inside the "
                               "selection (or on the whole layer, finding the face) and adds the result as new "
                               "layer(s) above the source; the source layer is never changed. Needs the dfi "
                               "daemon (started automatically).", name)
        proc.set_attribution("gimp-dfi authors", "gimp-dfi authors (Apache-2.0)", "2026")
        if item.attribute is None:
            proc.add_string_argument("attribute", "_Attribute", "Attribute name as 'dfi attributes' lists it",
                                     "facehair", RW)
        if item.inpaint:
            proc.add_double_argument("strength", "_Strength (0 = default)", "Fill strength; 0 = the daemon's default",
                                     0.0, 10.0, 0.0, RW)
        else:
            proc.add_string_argument("strengths", "_Strengths (comma-separated, one layer each)",
                                     "One new layer per strength, separated by commas (e.g. 0.2, 0.4); empty = the "
                                     "attribute's default", "", RW)
        proc.add_choice_argument("quality", "_Quality", "Fast, Balanced or Best: the daemon chooses the iterations "
                                 "and the face's working size for its device", _choice(B.QUALITY), "balanced", RW)
        proc.add_int_argument("iterations", "_Iterations (0 = use the quality preset)",
                              "Overrides the quality preset when above 0",
                              0, 10000, 0, RW)
        proc.add_choice_argument("color", "_Colour match", "Match the result's colours to the original",
                                 _choice(B.COLOR), "channel", RW)
        proc.add_choice_argument("alignment", "Face _alignment", "Align the face to the database's frame",
                                 _choice(B.ALIGNMENT), "auto", RW)
        if not item.inpaint:
            proc.add_choice_argument("parts", "_Parts of the edit", "Shape (a warp), tone (colour) and texture "
                                     "(DFI); shape and tone alone are instant", _choice(B.PARTS), "auto", RW)
        return proc

    # ------------------------------------------------------------------ run
    def run(self, procedure, run_mode, image, drawables, config, run_data):
        item = B.MENU_BY_PROC[procedure.get_name()]
        MARKS["run"] = time.time()
        try:
            return self._run(procedure, item, run_mode, image, drawables, config)
        except L.DaemonError as e:
            if e.code == "cancelled":  # the user pressed Cancel in the preview window
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(L.describe(e)))
        except Exception as e:  # every failure becomes an error status with a message, never SUCCESS
            if not isinstance(e, B.PluginError):
                traceback.print_exc()
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(L.describe(e)))
        finally:
            if os.environ.get("DFI_PLUGIN_TIMING"):
                sys.stderr.write(f"[gimp-dfi] timing {json.dumps(MARKS)}\n")

    def _run(self, procedure, item, run_mode, image, drawables, config):
        if len(drawables) != 1:
            raise B.PluginError(f"{len(drawables)} layers are selected.", "Select exactly one layer.")
        drawable = drawables[0]
        if isinstance(drawable, Gimp.LayerMask):  # right after adding a mask, the mask is the active drawable
            drawable = Gimp.Layer.from_mask(drawable)
        if not isinstance(drawable, Gimp.Layer) or isinstance(drawable, Gimp.GroupLayer):
            raise B.PluginError("The active drawable is not a pixel layer.",
                                "Select a normal layer (not a group or channel).")
        settings = B.Settings.load()
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        Gimp.progress_init(f"DFI: {B.layer_noun(item.label)}")
        client = L.connect(settings, Gimp.progress_set_text, Gimp.progress_pulse)
        MARKS["connected"] = time.time()
        try:
            attrs = [] if item.inpaint else L.attributes(client)
            region = None
            if interactive and not item.inpaint:  # read first: the dialog's live preview edits this region
                region = _read_region(image, drawable, False, client.limits.get("max_pixels", P.DEFAULT_MAX_PIXELS))
            if interactive and not self._dialog(procedure, item, config, attrs, client.server, region, settings):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            self._apply(item, image, drawable, config, client, settings, attrs, interactive, region)
        finally:
            client.close()
        Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)

    # ------------------------------------------------------------------ dialog
    def _dialog(self, procedure, item, config, attrs, server, region=None, settings=None):
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi, Gtk

        GimpUi.init("gimp-dfi")
        if item.attribute is None and attrs and config.get_property("attribute") not in {a["name"] for a in attrs}:
            config.set_property("attribute", attrs[0]["name"])
        if not item.inpaint and not config.get_property("strengths"):
            name = item.attribute or config.get_property("attribute")
            default = next((a.get("default_strength") for a in attrs if a["name"] == name), None)
            if default is not None:
                config.set_property("strengths", f"{default:g}")
        dialog = GimpUi.ProcedureDialog.new(procedure, config, f"DFI: {item.label.replace('_', '')}")
        names = ["strength" if item.inpaint else "strengths", "quality", "iterations", "color", "alignment",
                 *([] if item.inpaint else ["parts"])]
        if item.attribute is None:
            if not attrs:
                raise B.PluginError("The DFI daemon lists no attributes.",
                                    "Start it with a face database: dfi daemon start --database PATH")
            store = Gtk.ListStore(str, str)
            for a in attrs:
                store.append([a["name"], f"{a.get('label', a['name'])} ({a['name']})"])
            combo = GimpUi.prop_string_combo_box_new(config, "attribute", store, 0, 1)
            box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
            box.pack_start(Gtk.Label(label="Attribute"), False, False, 0)
            box.pack_start(combo, True, True, 0)
            box.show_all()
            dialog.get_content_area().pack_start(box, False, False, 6)
        dialog.fill(names)
        def hint(chosen):
            return "\n".join(t for t in (B.strength_hint(item, attrs, chosen), B.quality_hint(server)) if t)

        text = hint(config.get_property("attribute") if item.attribute is None else None)
        if text or item.attribute is None:
            label = Gtk.Label(label=text)
            label.set_line_wrap(True)
            label.set_xalign(0.0)
            label.show()
            dialog.get_content_area().pack_start(label, False, False, 6)
            if item.attribute is None:  # the sensible range follows the attribute chosen in the combo
                config.connect("notify::attribute", lambda *_: label.set_text(hint(config.get_property("attribute"))))
        return _run_dialog(dialog, config, item, attrs, region, settings)

    # ------------------------------------------------------------------ the edit
    def _apply(self, item, image, drawable, config, client, settings, attrs, interactive, region=None):
        """One edit, phase by phase: read the region (unless the dialog did), build the request, run it, insert
        the results."""
        max_pixels = client.limits.get("max_pixels", P.DEFAULT_MAX_PIXELS)
        region = region or _read_region(image, drawable, item.inpaint, max_pixels)
        MARKS["read"] = time.time()
        preview_s = settings.preview_s if interactive else 0.0  # the live preview: interactive runs only
        args = {name: config.get_property(name) for name in B.argument_names(item)}
        plan = B.build_request(item, args, attrs, region, preview_s)
        result = _run_edit(client, plan, settings.stall_timeout_s, preview_s)
        images = B.check_images(result, len(plan.strengths), region.box[2], region.box[3])
        _insert_layers(image, drawable, region, plan, images)
        MARKS["inserted"] = time.time()
        _tell_notes(result.get("notes") or [], interactive)


def _run_dialog(dialog, config, item, attrs, region, settings):
    """Run the dialog (True: OK), with the strength slider and its live preview (dfi_live) when the region was
    read; the preview stops and the dialog goes before anything touches the image."""
    live = None
    if region is not None:
        import dfi_live

        live = dfi_live.attach(dialog, config, item, attrs, region, settings)
    try:
        return dialog.run()
    finally:
        if live is not None:
            live.close()
        dialog.destroy()


# ---------------------------------------------------------------------- reading the region


def _read_region(image, drawable, inpaint, max_pixels):
    """The layer's pixels around the selection (the whole layer without one) and the selection over them."""
    width, height = drawable.get_width(), drawable.get_height()
    _, ox, oy = drawable.get_offsets()
    _, has_selection, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    box = B.edit_box(width, height, (ox, oy), (x1, y1, x2, y2) if has_selection else None, inpaint, max_pixels)
    cx, cy, cw, ch = box
    rect = Gegl.Rectangle.new(cx, cy, cw, ch)
    pixels = bytes(drawable.get_buffer().get(rect, 1.0, RGBA, Gegl.AbyssPolicy.CLAMP))
    selection = _selection_weights(image, ox + cx, oy + cy, cw, ch) if has_selection else None
    return B.Region.read(box, pixels, selection)


def _selection_weights(image, x, y, width, height):
    """The selection over a box of the image, as (bytes, babl format name).

    Exactly as GIMP stores it (Y u8, Y u16, Y float, …: linear, the weights GIMP itself blends
    with). It goes back into the merge channel unconverted, so a feathered selection's band is
    merged with GIMP's own weights; any conversion (say to Y u8 and back into a Y' u8 channel)
    would change them.
    """
    selection = image.get_selection()
    fmt = Babl.get_name(selection.get_format())
    rect = Gegl.Rectangle.new(x, y, width, height)
    return bytes(selection.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE)), fmt


# ---------------------------------------------------------------------- running


def _run_edit(client, plan, stall_timeout_s, preview_s):
    """Send the request and wait; GIMP's progress bar (and the preview window, if any) follow the job.

    The window's Cancel cancels the job on the daemon, which answers with a ``cancelled`` error.
    """
    window = None
    if preview_s > 0:
        from dfi_preview import PreviewWindow

        window = PreviewWindow(plan.noun)

    def progress(fraction, text):
        Gimp.progress_set_text(text)
        Gimp.progress_update(min(max(fraction, 0.0), 1.0))
        if window is not None:
            window.text(text)

    MARKS["sent"] = time.time()
    try:
        result = L.run_job(client, plan.msg, progress, MARKS, stall_timeout_s,
                           preview=window.show if window else None,
                           cancel=(lambda: window.cancelled) if window else (lambda: False))
    finally:
        if window is not None:
            window.close()
    MARKS["result"], MARKS["engine_s"] = time.time(), result.get("seconds")
    return result


# ---------------------------------------------------------------------- inserting the layers


def _insert_layers(image, source, region, plan, images):
    """One new layer per image, each above the previous one, in one undo group; the source is only read."""
    # Above 8 bits, apply only the pixels the edit changed: the rest keeps the source's full precision.
    exact = not image.get_precision().value_nick.startswith("u8")
    rect = Gegl.Rectangle.new(*region.box)
    if not image.undo_group_start():
        raise B.PluginError("GIMP refused to start an undo group.", "Is the image still open?")
    try:
        with _merge_selection(image) as channel:
            below = source
            for strength, im in zip(plan.strengths, images):
                weights = region.merge_weights(im["data"], exact)
                below = _insert_layer(image, source, below, im["data"], rect, channel, weights,
                                      region.weights_format, B.layer_name(plan.noun, strength))
    finally:
        image.undo_group_end()


def _insert_layer(image, source, below, data, rect, channel, weights, weights_fmt, name):
    """A copy of the source directly above ``below``, with the result merged in through ``weights``.

    The weights (the selection as it was read, in ``weights_fmt``, put in ``channel``) are the
    selection only for the merge. merge_shadow applies the new pixels only there, blending
    with its weights as GIMP blends any filter or fill through a selection, at the layer's
    own precision: every pixel outside stays exactly the source's.
    """
    layer = source.copy()
    layer.set_name(name)
    layer.set_lock_content(False)
    _check(image.insert_layer(layer, source.get_parent(), image.get_item_position(below)), "insert the new layer")
    _, ox, oy = layer.get_offsets()
    box = Gegl.Rectangle.new(ox + rect.x, oy + rect.y, rect.width, rect.height)
    channel.get_buffer().set(box, _raw_format(channel, weights_fmt), weights)
    _check(image.select_item(Gimp.ChannelOps.REPLACE, channel), "select the edited region")
    shadow = layer.get_shadow_buffer()
    shadow.set(rect, RGBA, data)
    shadow.flush()
    _check(layer.merge_shadow(True), "write the result into the new layer")
    layer.update(rect.x, rect.y, rect.width, rect.height)
    return layer


def _tell_notes(notes, interactive):
    """The daemon's notes on the edit: on stderr always, and in a GIMP message in interactive runs."""
    if notes:
        sys.stderr.write("[gimp-dfi] " + "\n[gimp-dfi] ".join(notes) + "\n")
        if interactive:
            Gimp.message("DFI: " + "\n".join(notes))


def _check(ok, what):
    if not ok:
        raise B.PluginError(f"GIMP refused to {what}.", "Is the layer or its group locked? Unlock it "
                            "(Layers dialog) and run the edit again.")


def _raw_format(channel, region_fmt):
    """The format to write the merge region into ``channel`` with, so that the selection it makes holds it unchanged.

    GIMP copies masks between channels and the selection value for value, whatever the formats' TRC says (an
    8-bit image's selection is "Y u8", its channels "Y' u8"): with the same component type the region is written
    raw, in the channel's own format. Otherwise (not seen in GIMP 3.0 or 3.2) babl converts.
    """
    own = Babl.get_name(channel.get_format())
    return own if own.split()[-1] == region_fmt.split()[-1] else region_fmt


@contextlib.contextmanager
def _merge_selection(image):
    """A temporary channel to merge through; the user's selection (changed meanwhile or not) is restored.

    select_item feathers and antialiases by the context's settings, which are the caller's (a script that made a
    feathered selection leaves feathering on): off here, in a context of our own, so every selection is taken as is.
    """
    Gimp.context_push()
    try:
        Gimp.context_set_feather(False)
        Gimp.context_set_antialias(False)
        channel = Gimp.Channel.new(image, "DFI region", image.get_width(), image.get_height(), 100.0,
                                   Gegl.Color.new("black"))
        _check(image.insert_channel(channel, None, 0), "add a temporary channel")
        current = Gimp.Selection.save(image)
        try:
            yield channel
        finally:
            image.select_item(Gimp.ChannelOps.REPLACE, current)
            image.remove_channel(current)
            image.remove_channel(channel)
    finally:
        Gimp.context_pop()


Gimp.main(DFIPlugIn.__gtype__, sys.argv)
