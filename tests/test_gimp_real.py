"""The plug-in in a real GIMP 3.0 (Debian trixie root) and 3.2 (sid root), talking to a real daemon on the host.

Every test runs once per GIMP version (ids gimp3.0, gimp3.2; ``DFI_GIMP_VERSIONS``
picks some). The plug-in is installed by the project's installer; GIMP is driven
through the PDB (headless, and the GUI binary under Xvfb for the dialog and for
undo, which the PDB cannot trigger). A version skips with the reason only where
its root cannot be built (no root privileges, no Debian mirror).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon_process import DaemonProcess
from helpers.gimp_harness import Gimp, free_port, gimp_for, versions, wait_file
from PIL import Image

pytestmark = pytest.mark.slow  # a real GIMP (3.0 and 3.2) and a daemon process

PROCS = {
    "plug-in-dfi-facial-hair": "Add _facial hair...",
    "plug-in-dfi-older": "_Older...",
    "plug-in-dfi-younger": "_Younger...",
    "plug-in-dfi-smile": "_Smile...",
    "plug-in-dfi-attribute": "_Attribute...",
    "plug-in-dfi-fill": "_Fill selection...",
}
OFFSET = (20, 12)  # the source layer sits at an offset inside a larger canvas
CANVAS = (300, 280)
EDIT_RECT = (84, 76, 128, 128)  # image coordinates: the face
FILL_RECT = (110, 150, 64, 40)
ITERATIONS = 3  # random weights: the path is what is tested, not the look


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:256, 96:352].copy()  # a real photo, 256×256, face in the middle


def rect_mask(rect: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Selection of an image-space rectangle, in the source layer's coordinates."""
    x, y, w, h = rect
    m = np.zeros(shape, bool)
    m[max(y - OFFSET[1], 0):y - OFFSET[1] + h, max(x - OFFSET[0], 0):x - OFFSET[0] + w] = True
    return m


@pytest.fixture(scope="module", params=versions(), ids=lambda v: f"gimp{v}")
def gimp(request, tmp_path_factory):
    g = gimp_for(request.param, "pytest")
    daemon = DaemonProcess(tmp_path_factory.mktemp("gimp-daemon"), endpoint=f"tcp://127.0.0.1:{free_port()}",
                           threads=2).start()
    report = g.install(daemon.endpoint, daemon.config / "local-keys")
    assert "verified with GIMP's Python" in report, report
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "PNG")
    g.photo = g.put("astronaut.png", buf.getvalue())
    g.daemon = daemon
    yield g
    daemon.stop()
    g.cleanup()


def load_steps(g: Gimp) -> list[dict]:
    return [{"op": "load", "path": g.photo, "offsets": list(OFFSET), "canvas": list(CANVAS)}]


@pytest.fixture(scope="module")
def headless(gimp):
    """One headless GIMP session: the menu, an edit, a fill and two refused calls."""
    return gimp.run([
        {"op": "procedures", "names": list(PROCS)},
        *load_steps(gimp),
        {"op": "select", "rect": list(EDIT_RECT)},
        {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"strengths": "0.5, 1.5", "iterations": ITERATIONS}},
        {"op": "dump"},
        {"op": "pick", "name": "Background"},
        {"op": "select", "rect": list(FILL_RECT)},
        {"op": "call", "proc": "plug-in-dfi-fill", "args": {"iterations": ITERATIONS}},
        {"op": "dump"},
        {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"strengths": "0.5, lots"}},
        {"op": "call", "proc": "plug-in-dfi-attribute", "args": {"attribute": "no-such-edit"}},
        {"op": "select"},
        {"op": "call", "proc": "plug-in-dfi-fill", "args": {"iterations": ITERATIONS}},
        {"op": "dump"},
        # a 16-bit image: the new layer keeps every unchanged pixel at full precision
        {"op": "load", "path": gimp.photo, "offsets": list(OFFSET), "canvas": list(CANVAS),
         "precision": "U16_NON_LINEAR"},
        {"op": "select", "rect": list(EDIT_RECT)},
        {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"strengths": "1", "iterations": ITERATIONS}},
        {"op": "dump", "format": "R'G'B'A u16"},
    ])


def test_procedures_are_under_filters_dfi(headless):
    found = headless.step("procedures")["procedures"]
    for name, label in PROCS.items():
        assert found[name] is not None, f"{name} is not registered"
        assert found[name]["menu_paths"] == ["<Image>/Filters/DFI"]
        assert found[name]["label"] == label
    assert "strengths" in found["plug-in-dfi-facial-hair"]["args"]
    assert "attribute" in found["plug-in-dfi-attribute"]["args"]


def check_new_layers(layers, names, rect):
    """New layers directly above the untouched source, changed inside the selection only."""
    source = layers[-1]
    assert source.name == "Background"
    assert np.array_equal(source.pixels[..., :3], photo()), "the source layer was modified"
    assert [la.name for la in layers[:-1]] == names
    inside = rect_mask(rect, source.pixels.shape[:2])
    for la in layers[:-1]:
        assert la.offsets == OFFSET and la.pixels.shape == source.pixels.shape
        assert np.array_equal(la.pixels[~inside], source.pixels[~inside]), f"{la.name}: changed outside the selection"
        changed = np.any(la.pixels[inside] != source.pixels[inside], axis=-1).mean()
        assert changed > 0.5, f"{la.name}: only {changed:.0%} of the selection changed"


def test_edit_adds_one_layer_per_strength_above_the_source(headless):
    call = headless.step("call", 0)
    assert call["status"] == "success", call["message"]
    layers = headless.layers(0)
    # the first strength directly above the source, the next above it
    check_new_layers(layers, ["DFI facial hair 1.5", "DFI facial hair 0.5"], EDIT_RECT)
    assert not np.array_equal(layers[0].pixels, layers[1].pixels), "both strengths gave the same result"


def test_fill_selection_adds_a_filled_layer(headless):
    call = headless.step("call", 1)
    assert call["status"] == "success", call["message"]
    layers = headless.layers(1)  # the fill went onto the source, so its layer sits directly above it
    assert [la.name for la in layers[:2]] == ["DFI facial hair 1.5", "DFI facial hair 0.5"]
    check_new_layers(layers[2:], ["DFI fill selection"], FILL_RECT)


def test_bad_arguments_are_execution_errors(headless):
    bad = headless.step("call", 2)
    assert bad["status"] == "execution-error"
    assert "'lots' is not a number" in bad["message"]
    unknown = headless.step("call", 3)
    assert unknown["status"] == "execution-error"
    assert "does not define the attribute 'no-such-edit'" in unknown["message"] and "facehair" in unknown["message"]
    no_selection = headless.step("call", 4)
    assert no_selection["status"] == "execution-error"
    assert "needs a selection" in no_selection["message"]
    assert len(headless.layers(2)) == 4, "a refused call added a layer"


def test_high_bit_depth_keeps_full_precision_outside_the_edit(headless):
    call = headless.step("call", 5)
    assert call["status"] == "success", call["message"]
    new, source = headless.layers(3)
    assert new.name == "DFI facial hair 1" and source.pixels.dtype == np.uint16
    assert np.array_equal(source.pixels[..., :3] // 257, photo()), "the 16-bit source was modified"
    inside = rect_mask(EDIT_RECT, source.pixels.shape[:2])
    assert np.array_equal(new.pixels[~inside], source.pixels[~inside])
    assert np.any(new.pixels[inside] != source.pixels[inside], axis=-1).mean() > 0.5


def test_daemon_down_without_autostart_is_an_execution_error(gimp, tmp_path):
    stopped = DaemonProcess(tmp_path, endpoint=f"tcp://127.0.0.1:{free_port()}").start()
    stopped.stop()
    run = gimp.run([*load_steps(gimp), {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {}}],
                   env={"DFI_ENDPOINT": stopped.endpoint, "DFI_AUTOSTART": "0"})
    call = run.step("call")
    assert call["status"] == "execution-error"
    assert "The DFI daemon is not running" in call["message"]
    assert "dfi daemon start" in call["message"]
    assert call["seconds"] < 15, f"took {call['seconds']:.1f} s to notice"


def test_dialog_then_undo_in_the_gui(gimp):
    """GUI GIMP under Xvfb: OK in the Attribute… dialog edits; one Ctrl+Z removes all its layers."""

    def press(display, out):
        dialog = gimp.wait_window(display, "^DFI: Attribute")
        gimp.xdotool(display, "windowfocus", "--sync", dialog, "key", "Return")
        wait_file(out / "ready")
        window = gimp.wait_window(display, r"layers\) ")
        gimp.xdotool(display, "windowfocus", "--sync", window, "key", "--clearmodifiers", "ctrl+z")

    run = gimp.run([*load_steps(gimp), {"op": "select", "rect": list(EDIT_RECT)},
                    {"op": "call", "proc": "plug-in-dfi-attribute", "interactive": True,
                     "args": {"strengths": "0.5, 1", "iterations": ITERATIONS}},
                    {"op": "dump"}, {"op": "display", "timeout": 60}, {"op": "dump"}],
                   gui=True, during=press)
    call = run.step("call")
    assert call["status"] == "success", call["message"]
    check_new_layers(run.layers(0), ["DFI facial hair 1", "DFI facial hair 0.5"], EDIT_RECT)
    undo = run.step("display")
    assert (undo["before"], undo["after"]) == (3, 1), undo
    x, y, w, h = EDIT_RECT
    assert undo["selection_after"] == [True, x, y, x + w, y + h], "undo went past the edit"
    (source,) = run.layers(1)
    assert np.array_equal(source.pixels[..., :3], photo())


def test_live_preview_then_cancel_in_the_gui(gimp):
    """GUI: a preview window shows the result forming; its Cancel stops the job and adds nothing; a second run
    with a preview finishes normally."""
    seen = {}

    def press(display, out):
        dialog = gimp.wait_window(display, "^DFI: Add facial hair")
        gimp.xdotool(display, "windowfocus", "--sync", dialog, "key", "Return")
        gimp.wait_window(display, r"^DFI preview.*\[([2-9]|[1-9][0-9]+)\]", timeout=150)  # 2+ previews shown
        with gimp.daemon.client() as c:
            seen["running"] = c.status()["queue"]["running"]
        for _ in range(10):  # a window id found a moment ago may be one GTK has replaced meanwhile
            try:
                gimp.xdotool(display, "windowfocus", "--sync", gimp.wait_window(display, "^DFI preview"), "key",
                             "Escape")
                break
            except AssertionError:
                time.sleep(0.3)
        dialog = gimp.wait_window(display, "^DFI: Add facial hair", timeout=120)
        gimp.xdotool(display, "windowfocus", "--sync", dialog, "key", "Return")
        gimp.wait_window(display, r"^DFI preview.*\[[1-9][0-9]*\]", timeout=150)
        seen["second_preview"] = True

    # a procedure no other test runs interactively: GIMP gives an interactive run its last values, not these args
    call = {"op": "call", "proc": "plug-in-dfi-facial-hair", "interactive": True}
    run = gimp.run([*load_steps(gimp), {"op": "select", "rect": list(EDIT_RECT)},
                    {**call, "args": {"strengths": "1", "iterations": 3000}}, {"op": "dump"},
                    {**call, "args": {"strengths": "1", "iterations": 40}}, {"op": "dump"}],
                   env={"DFI_PREVIEW_S": "0.5"}, gui=True, during=press)
    cancelled, finished = run.step("call", 0), run.step("call", 1)
    assert seen.get("running"), "the job was running while its previews came"
    assert cancelled["status"] == "cancel", cancelled
    assert len(run.layers(0)) == 1, "a cancelled edit adds nothing"
    assert seen.get("second_preview") and finished["status"] == "success", finished
    assert len(run.layers(1)) == 2
    with gimp.daemon.client() as c:
        assert c.status()["queue"]["running"] is None, "the cancelled job is gone from the daemon"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_killing_the_plugin_makes_the_daemon_drop_the_job(gimp):
    """GIMP cancels a plug-in by killing it: the daemon must notice (heartbeats stop) and free itself."""
    import os
    import signal
    import time

    seen = {}

    def kill_when_running(display, out):
        with gimp.daemon.client() as c:
            end = time.monotonic() + 120
            while c.status()["queue"]["running"] is None:
                if (out / "result.json").exists():
                    return  # the call ended before its job ran: the assertions below say how
                assert time.monotonic() < end, "the job never started"
                time.sleep(0.2)
            plugin = f"{gimp.profile}/plug-ins/gimp-dfi/gimp-dfi.py".encode()
            pids = [p.parent.name for p in Path("/proc").glob("[0-9]*/cmdline") if plugin in _read(p)]
            assert len(pids) == 1, pids
            os.kill(int(pids[0]), signal.SIGKILL)
            t0 = time.monotonic()
            while c.status()["queue"]["running"] is not None:
                assert time.monotonic() - t0 < 20, "the daemon kept running the job of a killed plug-in"
                time.sleep(0.2)
            seen["dropped_after_s"] = time.monotonic() - t0

    run = gimp.run([*load_steps(gimp), {"op": "select", "rect": list(EDIT_RECT)},
                    {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"iterations": 5000}}],
                   during=kill_when_running)
    call = run.step("call")
    assert "dropped_after_s" in seen, f"the job never ran: {call}"
    assert call["status"] != "success"
    assert seen["dropped_after_s"] < 15


# ------------------------------------------------------------------ soft selections
SOFT_ELLIPSE = (58, 44, 100, 124)  # image coordinates: the face of soft_photo(), in a feathered ellipse
FEATHER = 16  # px; the band where the selection is partial is about this wide
FILL_COLOR = "#e63380"
SOFT_STRENGTH = "4"  # a strong edit, so that a wrong weight in the band shows
DEPTHS = {"u8": (None, "R'G'B'A u8", np.uint8, 255), "u16": ("U16_NON_LINEAR", "R'G'B'A u16", np.uint16, 65535)}


def soft_photo() -> np.ndarray:
    """The astronaut's face, 160×160: a real photo, small enough to keep the four edits below quick."""
    from skimage import data

    return data.astronaut()[16:176, 136:296].copy()


def soft_steps(g: Gimp, depth: str) -> list[dict]:
    """The plug-in's edit through a feathered ellipse, and GIMP's own blend of the same edit through it.

    The second call edits the same box through the hardened selection (every touched pixel fully selected:
    the daemon gets the same request, so the same edit), which gives the edit itself; GIMP merges that
    through the original feathered selection. The first call runs with the context's feather on, as a
    script's would after making a feathered selection.
    """
    precision, fmt = DEPTHS[depth][:2]
    edit = {"op": "call", "proc": "plug-in-dfi-facial-hair",
            "args": {"strengths": SOFT_STRENGTH, "iterations": ITERATIONS}}
    load = {"op": "load", "path": g.soft_photo, "offsets": list(OFFSET), "canvas": list(CANVAS), "precision": precision}
    return [load,
            {"op": "select", "ellipse": list(SOFT_ELLIPSE), "feather": FEATHER},
            {"op": "save_selection", "name": "soft"},
            {"op": "selection"},
            edit,
            {"op": "rename", "name": f"DFI facial hair {SOFT_STRENGTH}", "to": "plug-in"},
            {"op": "selection"},
            {"op": "harden"},
            {"op": "pick", "name": "Background"},
            edit,
            {"op": "rename", "name": f"DFI facial hair {SOFT_STRENGTH}", "to": "edit"},
            {"op": "restore_selection", "name": "soft"},
            {"op": "selection"},
            {"op": "reference", "edit": "edit", "source": "Background", "name": "GIMP"},
            {"op": "fill_check", "source": "Background", "color": FILL_COLOR, "name": "fill"},
            {"op": "dump", "format": fmt}]


@pytest.fixture(scope="module")
def soft(gimp):
    """One headless GIMP session: the feathered edit on the 8-bit photo, then on the same photo at 16 bits,
    then an edit of the whole 16-bit layer (no selection)."""
    buf = io.BytesIO()
    Image.fromarray(soft_photo()).save(buf, "PNG")
    gimp.soft_photo = gimp.put("face.png", buf.getvalue())
    whole = [{"op": "load", "path": gimp.soft_photo, "offsets": list(OFFSET), "canvas": list(CANVAS),
              "precision": "U16_NON_LINEAR"}, {"op": "select"},
             {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"strengths": "1", "iterations": ITERATIONS}},
             {"op": "dump", "format": "R'G'B'A u16"}]
    return gimp.run([step for depth in DEPTHS for step in soft_steps(gimp, depth)] + whole)


@pytest.mark.parametrize("depth", list(DEPTHS))
def test_feathered_selection_blends_exactly_like_gimp(soft, depth):
    """The new layer is GIMP's own blend of source and edit through the feathered selection, in the image's
    precision: within 1 level at 8 bits in the band, inside and outside (outside: identical to the source)."""
    k = list(DEPTHS).index(depth)
    _, _, dtype, full = DEPTHS[depth]
    level = full / 255
    for nth in (2 * k, 2 * k + 1):
        call = soft.step("call", nth)
        assert call["status"] == "success", call["message"]
    before, after, reference_sel = (soft.selection(3 * k + i) for i in range(3))
    assert np.array_equal(after, before), "the plug-in left the user's selection changed"
    assert np.array_equal(reference_sel, before), "the reference did not blend through the same selection"
    layers = {la.name: la for la in soft.layers(k)}
    px = {name: la.pixels[..., :3].astype(np.float64) for name, la in layers.items()}
    assert layers["Background"].pixels.dtype == dtype
    # The reference is what Edit → Fill does: GIMP's fill through the selection equals its merge through it.
    assert np.abs(px["fill"] - px["fill merge"]).max() <= level

    x, y = OFFSET
    h, w = soft_photo().shape[:2]
    sel = before[y:y + h, x:x + w]
    band, inside, outside = (sel > 0) & (sel < full), sel == full, sel == 0
    assert min(band.sum(), inside.sum(), outside.sum()) > 500, (band.sum(), inside.sum(), outside.sum())
    assert np.array_equal(layers["Background"].pixels[..., :3] // (full // 255), soft_photo())
    source, edit = px["Background"], px["edit"]
    # The edit must differ from the source in the band, or a wrong weight would go unseen.
    assert np.percentile(np.abs(edit - source).max(axis=-1)[band], 90) > 10 * level
    err = np.abs(px["plug-in"] - px["GIMP"]).max(axis=-1) / level  # in levels at 8 bits
    print(f"{depth}: max error vs GIMP's blend in levels at 8 bits: band {err[band].max():.2f}, "
          f"inside {err[inside].max():.2f}, outside {err[outside].max():.2f}")
    for name, region in (("band", band), ("inside", inside), ("outside", outside)):
        assert err[region].max() <= 1, f"{name}: off by up to {err[region].max():.1f} levels at 8 bits"
    assert np.array_equal(layers["plug-in"].pixels[outside], layers["Background"].pixels[outside])


def test_whole_layer_edit_at_16_bits(soft):
    """No selection: the whole layer is edited; changed pixels take the edit's 8-bit values, the rest keep 16 bits."""
    call = soft.step("call", 2 * len(DEPTHS))
    assert call["status"] == "success", call["message"]
    new, source = soft.layers(len(DEPTHS))
    assert new.name == "DFI facial hair 1" and new.offsets == OFFSET
    assert np.array_equal(source.pixels[..., :3] // 257, soft_photo()), "the 16-bit source was modified"
    changed = np.any(new.pixels != source.pixels, axis=-1)
    assert changed.mean() > 0.5, f"only {changed.mean():.0%} of the layer changed"
    assert np.all(new.pixels[changed] % 257 == 0), "an edited pixel is not the edit's 8-bit value"
