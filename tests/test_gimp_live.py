"""The live strength slider (issue 23) in the edit dialog of a real GIMP 3.0 and 3.2, under Xvfb, with xdotool.

Filters → DFI → Smile… opened interactively on grace_hopper, with the real daemon and face database of
tests/helpers/gimp_smile.py (the fixtures). The slider is moved three times with the keyboard; each resting place
must bring a new preview into the dialog (the plug-in saves every preview it shows when DFI_LIVE_DEBUG names a
folder), different from the one before and equal to what the daemon itself previews for that strength. OK then
renders the strengths kept with "Add this strength" as layers that one Ctrl+Z removes; Cancel after moving
leaves the image clean and its undo history as it was (one Ctrl+Z undoes the selection made before).

``DFI_LIVE_SHOTS=FOLDER`` keeps screenshots of the dialog at two slider positions (otherwise pytest's tmp_path).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from dfi_daemon import known_truth as kt
from dfi_wire import protocol as P
from helpers import gimp_smile
from helpers.gimp_harness import Gimp, wait_file
from PIL import Image

pytestmark = pytest.mark.slow  # a real GIMP GUI and a daemon process
gimp, smile_db = gimp_smile.gimp, gimp_smile.smile_db  # the shared fixtures (tests/helpers/gimp_smile.py)
UNDO_RECT = gimp_smile.UNDO_RECT

PROC = "plug-in-dfi-smile"
DIALOG = "^DFI: Smile"
ARGS = {"parts": "shape-tone", "alignment": "auto"}  # what OK renders: the instant parts, quick on a CPU
STEPS = '''
def step_clean(s):
    state["image"].clean_all()
    return {"dirty": state["image"].is_dirty()}


def step_state(s):
    image = state["image"]
    return {"dirty": image.is_dirty(), "layers": len(image.get_layers())}


STEPS.update(clean=step_clean, state=step_state)
'''


def shown(folder: Path) -> list[dict]:
    """The previews the dialog has shown so far, in order (DFI_LIVE_DEBUG's shown.jsonl)."""
    try:
        lines = (folder / "shown.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_final(folder: Path, after: int, timeout: float = 150) -> dict:
    """The final preview at the slider's new resting place: shown after the ``after`` first ones, for the
    strength the slider shows, with nothing newer for a second."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        entries = shown(folder)
        new = entries[after:]
        if new and new[-1]["final"] and abs(new[-1]["strength"] - new[-1]["slider"]) < 1e-6:
            time.sleep(1.0)
            if len(shown(folder)) == len(entries):
                return new[-1]
        time.sleep(0.25)
    raise AssertionError(f"no new final preview within {timeout} s; shown: {shown(folder)}")


def key(g: Gimp, display: str, dialog: str, *keys: str) -> None:
    g.xdotool(display, "windowfocus", "--sync", dialog, "key", "--clearmodifiers", *keys)


def pixels(folder: Path, entry: dict) -> np.ndarray:
    return np.asarray(Image.open(folder / entry["file"]).convert("RGB"))


END_HOME_RIGHT = (["End"], ["Home"], ["Right"] * 15)
HOME_END_LEFT = (["Home"], ["End"], ["Left"] * 15)  # from a dialog that remembers the top strength (last used)


def move_three_times(g: Gimp, display: str, folder: Path, shots: Path | None = None, add: bool = False,
                     moves: tuple = END_HOME_RIGHT) -> list:
    """Focus the dialog's slider (Alt+N), then ``moves`` (End, Home and 15 x Right): the final preview at each
    place. Each move must change the value: GIMP reopens the dialog with its last used strengths."""
    dialog = g.wait_window(display, DIALOG)
    first = wait_final(folder, 0)  # the preview at the starting strength
    places = [first]
    for n, keys in enumerate(moves):
        before = len(shown(folder))
        key(g, display, dialog, "alt+n", *keys)
        places.append(wait_final(folder, before))
        if shots is not None and n < 2:
            time.sleep(0.5)  # let GTK draw it
            g.screenshot(display, shots / f"live-gimp{g.version}-{n + 1}.png", dialog)
        if add and n < 2:
            key(g, display, dialog, "alt+d")  # Add this strength: one layer for it
            time.sleep(0.5)
    return places


def daemon_preview(g: Gimp, strength: float, session: str) -> dict:
    """What the daemon itself previews for grace_hopper at ``strength`` (the image the plug-in sends)."""
    rgba = np.dstack([kt.grace(), np.full(kt.grace().shape[:2], 255, np.uint8)])
    h, w = rgba.shape[:2]
    seen = []
    with g.daemon.client() as c:
        c.preview(session, "smile", strength, image=P.image_map(rgba.tobytes(), w, h, "RGBA8"),
                  on_preview=seen.append, components=["shape", "tone"])
    return {m["kind"]: m for m in seen}


def check_places(g: Gimp, folder: Path, places: list[dict]) -> None:
    strengths = [p["strength"] for p in places]
    assert len(set(strengths)) == 4, f"the slider did not move to three new places: {strengths}"
    images = [pixels(folder, p) for p in places]
    for a, b, sa, sb in zip(images, images[1:], strengths, strengths[1:]):
        assert a.shape != b.shape or np.any(a != b), f"the preview did not change from {sa} to {sb}"
    for n, (place, image) in enumerate(zip(places, images)):
        own = daemon_preview(g, place["strength"], f"test-{n}")
        final = own["refined"] if "refined" in own else own["instant"]
        assert list(final["box"]) == place["box"]
        ref = np.frombuffer(final["image"]["data"], np.uint8).reshape(final["image"]["height"],
                                                                       final["image"]["width"], 3)
        diff = np.abs(ref.astype(int) - image).max()
        print(f"[live] GIMP {g.version} strength {place['strength']:g}: preview {image.shape[1]}x{image.shape[0]}, "
              f"max difference to the daemon's own {diff}")
        assert diff <= 1, f"strength {place['strength']}: the dialog showed another preview than the daemon's"


def test_the_slider_previews_and_ok_adds_the_kept_strengths_in_one_undo_step(gimp, tmp_path):
    folder_inner = f"{gimp.inner}/live-ok"
    folder = gimp.host(folder_inner)
    folder.mkdir()
    shots = Path(os.environ.get("DFI_LIVE_SHOTS") or tmp_path)
    seen = {}

    def drive(display, out):
        seen["places"] = move_three_times(gimp, display, folder, shots, add=True)
        key(gimp, display, gimp.wait_window(display, DIALOG), "Return")
        wait_file(out / "ready", timeout=300)
        window = gimp.wait_window(display, r"layers\) ")
        gimp.xdotool(display, "windowfocus", "--sync", window, "key", "--clearmodifiers", "ctrl+z")

    gimp.add_steps(STEPS)
    run = gimp.run([{"op": "load", "path": gimp.photo}, {"op": "clean"},
                    {"op": "call", "proc": PROC, "interactive": True, "args": {"strengths": "", **ARGS}},
                    {"op": "state"}, {"op": "dump"}, {"op": "display", "timeout": 60}, {"op": "dump"}],
                   env={"DFI_LIVE_DEBUG": folder_inner}, gui=True, during=drive, timeout=600)
    call = run.step("call")
    assert call["status"] == "success", call["message"]
    places = seen["places"]
    check_places(gimp, folder, places)
    kept = [places[1]["strength"], places[2]["strength"]]  # End and Home, each kept with Add this strength
    assert shown(folder)[-1]["strengths"].replace(" ", "") == ",".join(f"{s:g}" for s in kept)
    layers = run.layers(0)
    names = [la.name for la in layers]
    assert len(layers) == 3 and names[:2] == [f"DFI smile {kept[1]:g}", f"DFI smile {kept[0]:g}"], names
    source = layers[-1]
    assert np.array_equal(source.pixels[..., :3], kt.grace()), "the source layer was modified"
    assert all(np.any(la.pixels != source.pixels) for la in layers[:2])
    assert run.step("state")["dirty"]
    undo = run.step("display")
    assert (undo["before"], undo["after"]) == (3, 1), f"one Ctrl+Z did not remove both layers: {undo}"
    (left,) = run.layers(1)
    assert np.array_equal(left.pixels[..., :3], kt.grace())
    print(f"\n[live] GIMP {gimp.version}: previews shown {len(shown(folder))}, GUI run {run.seconds:.0f} s, "
          f"screenshots in {shots}")


def test_cancel_after_moving_leaves_the_image_and_its_undo_history(gimp):
    folder_inner = f"{gimp.inner}/live-cancel"
    folder = gimp.host(folder_inner)
    folder.mkdir()
    seen = {}

    def drive(display, out):
        seen["places"] = move_three_times(gimp, display, folder, moves=HOME_END_LEFT)
        key(gimp, display, gimp.wait_window(display, DIALOG), "Escape")
        wait_file(out / "ready", timeout=120)
        window = gimp.wait_window(display, r"layers?\) ")
        gimp.xdotool(display, "windowfocus", "--sync", window, "key", "--clearmodifiers", "ctrl+z")

    gimp.add_steps(STEPS)
    run = gimp.run([{"op": "load", "path": gimp.photo}, {"op": "select", "rect": list(UNDO_RECT)},
                    {"op": "clean"},
                    {"op": "call", "proc": PROC, "interactive": True, "args": {"strengths": "", **ARGS}},
                    {"op": "state"}, {"op": "display", "timeout": 8}, {"op": "dump"}],
                   env={"DFI_LIVE_DEBUG": folder_inner}, gui=True, during=drive, timeout=600)
    places = [p["strength"] for p in seen["places"]]
    assert len(places) == 4 and all(a != b for a, b in zip(places, places[1:])), places  # every move was seen
    assert run.step("call")["status"] == "cancel"
    after = run.step("state")
    assert (after["dirty"], after["layers"]) == (False, 1), f"Cancel left something in the image: {after}"
    undo = run.step("display")
    assert undo["after"] == 1 and undo["selection_after"][0] is False, \
        f"the first Ctrl+Z after Cancel did not undo the selection made before the dialog: {undo}"
    (left,) = run.layers(0)
    assert np.array_equal(left.pixels[..., :3], kt.grace())
    with gimp.daemon.client() as c:  # and nothing of the dialog's previews runs on in the daemon
        assert c.status()["queue"]["running"] is None
