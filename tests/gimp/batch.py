# Runs inside GIMP 3 (python-fu-eval, which has Gimp, Gegl, Gio and GLib imported).
# Executes the steps of the JSON plan in $DFI_PLAN and writes what it saw to the plan's "out" folder:
# result.json (one entry per step) and raw pixel dumps, which the host-side tests assert on.
import json
import os
import time
import traceback
from array import array

from gi.repository import Babl, Gegl, Gimp, Gio  # already loaded, with their versions, by python-eval

PLAN = json.load(open(os.environ["DFI_PLAN"]))
OUT = PLAN["out"]
RGBA = "R'G'B'A u8"
state = {"image": None, "dumps": 0, "channels": {}}
results = []


def raw_file(data):
    state["dumps"] += 1
    name = f"dump{state['dumps']}.raw"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(data))
    return name


def layer_named(name):
    return next(la for la in state["image"].get_layers() if la.get_name() == name)


def whole(drawable):
    return Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())


def native(drawable):
    """A drawable's pixels in its own format (no conversion), and that format's name."""
    fmt = Babl.get_name(drawable.get_format())
    return bytes(drawable.get_buffer().get(whole(drawable), 1.0, fmt, Gegl.AbyssPolicy.NONE)), fmt


def merged_copy(source, data, fmt, name):
    """A copy of ``source`` above everything with ``data`` merged in through the current selection by GIMP itself
    (the shadow buffer and merge_shadow: the path of every GIMP filter, as Edit → Fill's is)."""
    layer = source.copy()
    layer.set_name(name)
    state["image"].insert_layer(layer, None, 0)
    shadow = layer.get_shadow_buffer()
    shadow.set(whole(layer), fmt, data)
    shadow.flush()
    if not layer.merge_shadow(True):
        raise RuntimeError("merge_shadow failed")
    layer.update(0, 0, layer.get_width(), layer.get_height())
    return layer


def dump_layers(image, fmt=RGBA):
    """Every layer's name, offsets, size and stack position, with its pixels written to a raw file."""
    layers = []
    for pos, layer in enumerate(image.get_layers()):
        w, h = layer.get_width(), layer.get_height()
        _, ox, oy = layer.get_offsets()
        name = raw_file(layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))
        layers.append({"name": layer.get_name(), "position": pos, "offsets": [ox, oy], "size": [w, h],
                       "visible": layer.get_visible(), "pixels": name, "dtype": fmt.split()[-1]})
    return layers


def step_load(s):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(s["path"]))
    layer = image.get_layers()[0]
    if "offsets" in s:
        layer.set_offsets(*s["offsets"])
    if s.get("canvas"):
        image.resize(*s["canvas"], 0, 0)
    if s.get("precision"):
        image.convert_precision(getattr(Gimp.Precision, s["precision"]))
    image.set_selected_layers([layer])
    state["image"] = image
    return {"layers": len(image.get_layers())}


def step_select(s):
    """A rectangle or an ellipse, feathered by ``feather`` px; the context keeps that feather setting afterwards,
    as a script's does, so the calls that follow run with it."""
    image = state["image"]
    Gimp.context_set_feather(bool(s.get("feather")))
    if s.get("feather"):
        Gimp.context_set_feather_radius(s["feather"], s["feather"])
    if s.get("rect"):
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *s["rect"])
    elif s.get("ellipse"):
        image.select_ellipse(Gimp.ChannelOps.REPLACE, *s["ellipse"])
    else:
        Gimp.Selection.none(image)
    return {"bounds": list(Gimp.Selection.bounds(image))[1:]}


def step_selection(s):
    """The selection mask, raw in its own format (Y u8, Y u16, Y float: the weights GIMP blends with)."""
    sel = state["image"].get_selection()
    data, fmt = native(sel)
    return {"format": fmt, "size": [sel.get_width(), sel.get_height()], "pixels": raw_file(data),
            "dtype": fmt.split()[-1]}


def step_save_selection(s):
    image = state["image"]
    layers = image.get_selected_layers()
    state["channels"][s["name"]] = Gimp.Selection.save(image)
    image.set_selected_layers(layers)  # saving made the new channel the active drawable
    return {}


def step_restore_selection(s):
    Gimp.context_set_feather(False)  # select_item feathers by the context's setting
    if not state["image"].select_item(Gimp.ChannelOps.REPLACE, state["channels"][s["name"]]):
        raise RuntimeError("select_item failed")
    return {}


def step_harden(s):
    """Every pixel the selection touches at all becomes fully selected."""
    image = state["image"]
    sel = image.get_selection()
    weights = array("f", bytes(sel.get_buffer().get(whole(sel), 1.0, "Y float", Gegl.AbyssPolicy.NONE)))
    hard = array("f", (1.0 if v > 0 else 0.0 for v in weights))
    channel = Gimp.Channel.new(image, "hard", sel.get_width(), sel.get_height(), 100.0, Gegl.Color.new("black"))
    image.insert_channel(channel, None, 0)
    channel.get_buffer().set(whole(channel), "Y float", hard.tobytes())  # 0 and 1 convert exactly in any format
    channel.get_buffer().flush()
    Gimp.context_set_feather(False)
    image.select_item(Gimp.ChannelOps.REPLACE, channel)
    image.remove_channel(channel)
    return {"bounds": list(Gimp.Selection.bounds(image))[1:]}


def step_rename(s):
    layer_named(s["name"]).set_name(s["to"])
    return {}


def step_reference(s):
    """GIMP's own blend of ``source`` and the pixels of ``edit`` through the current selection, as a new layer."""
    data, fmt = native(layer_named(s["edit"]))
    merged_copy(layer_named(s["source"]), data, fmt, s["name"])
    return {"format": fmt}


def step_fill_check(s):
    """Edit → Fill with a colour through the current selection, next to the shadow merge of that colour (as
    step_reference merges): two layers, ``name`` and ``name`` + " merge"."""
    source = layer_named(s["source"])
    Gimp.context_push()
    Gimp.context_set_foreground(Gegl.Color.new(s["color"]))
    try:
        filled = source.copy()
        filled.set_name(s["name"])
        state["image"].insert_layer(filled, None, 0)
        if not filled.edit_fill(Gimp.FillType.FOREGROUND):
            raise RuntimeError("edit_fill failed")
        plain = source.copy()  # the colour itself, in the layer's own format
        state["image"].insert_layer(plain, None, 0)
        saved = Gimp.Selection.save(state["image"])
        Gimp.Selection.none(state["image"])
        plain.edit_fill(Gimp.FillType.FOREGROUND)
        colour, fmt = native(plain)
        Gimp.context_set_feather(False)
        state["image"].select_item(Gimp.ChannelOps.REPLACE, saved)
        state["image"].remove_channel(saved)
        state["image"].remove_layer(plain)
        merged_copy(source, colour, fmt, s["name"] + " merge")
    finally:
        Gimp.context_pop()
    return {}


def step_pick(s):
    """Make the named layer the one the next call works on (GIMP selects a plug-in's new layers)."""
    image = state["image"]
    layer = next(la for la in image.get_layers() if la.get_name() == s["name"])
    image.set_selected_layers([layer])
    return {}


def step_procedures(s):
    pdb = Gimp.get_pdb()
    found = {}
    for name in s["names"]:
        proc = pdb.lookup_procedure(name)
        found[name] = None if proc is None else {"menu_paths": list(proc.get_menu_paths()),
                                                 "label": proc.get_menu_label(),
                                                 "args": [a.name for a in proc.get_arguments()]}
    return {"procedures": found}


def step_call(s):
    image = state["image"]
    proc = Gimp.get_pdb().lookup_procedure(s["proc"])
    if proc is None:
        raise RuntimeError(f"procedure {s['proc']} is not registered")
    config = proc.create_config()
    mode = Gimp.RunMode.INTERACTIVE if s.get("interactive") else Gimp.RunMode.NONINTERACTIVE
    config.set_property("run-mode", mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", image.get_selected_drawables())
    for key, value in s.get("args", {}).items():
        config.set_property(key, value)
    t0, wall = time.monotonic(), time.time()
    result = proc.run(config)
    seconds = time.monotonic() - t0
    status = result.index(0)
    message = result.index(1) if result.length() > 1 else None
    return {"status": status.value_nick, "message": message if isinstance(message, str) else None,
            "seconds": seconds, "wall_start": wall}


def step_dump(s):
    return {"layers": dump_layers(state["image"], s.get("format", RGBA))}


def step_display(s):
    """Show the image (GUI GIMP only), tell the host, then wait until the layer count changes."""
    image = state["image"]
    Gimp.Display.new(image)
    Gimp.displays_flush()
    before = len(image.get_layers())
    with open(os.path.join(OUT, "ready"), "w") as f:
        f.write(str(before))
    end = time.monotonic() + s.get("timeout", 30)
    while time.monotonic() < end and len(image.get_layers()) == before:
        time.sleep(0.2)
    return {"before": before, "after": len(image.get_layers()),
            "selection_after": list(Gimp.Selection.bounds(image))[1:]}


STEPS = {"load": step_load, "pick": step_pick, "select": step_select, "procedures": step_procedures, "call": step_call,
         "dump": step_dump, "display": step_display, "selection": step_selection, "save_selection": step_save_selection,
         "restore_selection": step_restore_selection, "harden": step_harden, "rename": step_rename,
         "reference": step_reference, "fill_check": step_fill_check}
try:
    for step in PLAN["steps"]:
        entry = {"op": step["op"]}
        try:
            entry.update(STEPS[step["op"]](step))
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()
            results.append(entry)
            break
        results.append(entry)
finally:
    with open(os.path.join(OUT, "result.json"), "w") as f:
        json.dump(results, f, indent=1)
    if state["image"] is not None and not PLAN.get("keep_image"):
        state["image"].delete()
