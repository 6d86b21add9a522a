"""The plug-in in a real GIMP 3.0 (Debian trixie root), talking to a real daemon on the host.

The plug-in is installed by the project's installer; GIMP is driven through the
PDB (headless, and the GUI binary under Xvfb for the dialog and for undo, which
the PDB cannot trigger). Skips with the reason only where the root cannot be
built (no root privileges, no Debian mirror).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from daemon_process import DaemonProcess
from gimp_harness import Gimp, build_root, free_port, wait_file
from PIL import Image

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


@pytest.fixture(scope="module")
def gimp(tmp_path_factory):
    root, why = build_root()
    if root is None:
        pytest.skip(f"real GIMP 3 tests skipped: {why}")
    g = Gimp(root, "pytest")
    daemon = DaemonProcess(tmp_path_factory.mktemp("gimp-daemon"), endpoint=f"tcp://127.0.0.1:{free_port()}",
                           threads=2).start()
    report = g.install(daemon.endpoint)
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
