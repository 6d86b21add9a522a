# Runs inside GIMP 3 (python-fu-eval, which has Gimp, Gegl, Gio and GLib imported).
# Executes the steps of the JSON plan in $DFI_PLAN and writes what it saw to the plan's "out" folder:
# result.json (one entry per step) and raw pixel dumps, which the host-side tests assert on.
import json
import os
import time
import traceback

from gi.repository import Gegl, Gimp, Gio  # already loaded, with their versions, by python-eval

PLAN = json.load(open(os.environ["DFI_PLAN"]))
OUT = PLAN["out"]
RGBA = "R'G'B'A u8"
state = {"image": None, "dumps": 0}
results = []


def dump_layers(image, fmt=RGBA):
    """Every layer's name, offsets, size and stack position, with its pixels written to a raw file."""
    layers = []
    for pos, layer in enumerate(image.get_layers()):
        w, h = layer.get_width(), layer.get_height()
        _, ox, oy = layer.get_offsets()
        raw = layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE)
        state["dumps"] += 1
        name = f"dump{state['dumps']}.rgba"
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes(raw))
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
    image = state["image"]
    if s.get("rect"):
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *s["rect"])
    else:
        Gimp.Selection.none(image)
    return {"bounds": list(Gimp.Selection.bounds(image))[1:]}


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
         "dump": step_dump, "display": step_display}
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
