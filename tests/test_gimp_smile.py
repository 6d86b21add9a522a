"""Filters → DFI → Smile… in a real GIMP 3.0 and 3.2 moves a real portrait's mouth corners as a known smile does.

Why: the unit tests check the shape component (the learnt landmark change and its warp) inside the engine, and
tests/test_gimp_real.py checks the plug-in's path with random weights, where nothing about the look can be
asserted. Here the whole chain runs for real: a face database whose attribute ``smile`` is learnt from a
KNOWN warp (daemon/dfi_daemon/known_truth.py: 12 jittered astronaut crops, each also warped with the mouth
corners raised and widened by LIFT = 8 % of the eye distance), a real daemon on the host serving it (seeded
random weights: parts "shape-tone" needs no feature network), the plug-in installed by the project's
installer into GIMP, and ``plug-in-dfi-smile`` called through the PDB on matplotlib's grace_hopper (held out:
she is in no example). dlib, re-run on the new layer, must see her mouth corners moved towards the known
smile; the source layer and everything far from the face must be untouched; and (GUI GIMP under Xvfb, the
only way to press Ctrl+Z) one undo step must remove the edit and nothing before it.

Every test runs once per GIMP version (ids gimp3.0, gimp3.2; ``DFI_GIMP_VERSIONS`` picks some), skipping
with the reason where a version's root cannot be built. ``DFI_SMILE_SHEETS=FOLDER`` also writes a PNG per
version of the face before, after and their difference (×4), for looking at.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dfi_daemon import known_truth as kt
from helpers import gimp_smile
from helpers.gimp_harness import Gimp, wait_file

pytestmark = pytest.mark.slow  # a real GIMP and a daemon process
gimp, smile_db = gimp_smile.gimp, gimp_smile.smile_db  # the shared fixtures (tests/helpers/gimp_smile.py)
UNDO_RECT = gimp_smile.UNDO_RECT

PROC = "plug-in-dfi-smile"
FLAG = (slice(0, 300), slice(0, 110))  # rows, columns of grace_hopper's flag, well left of her face
CORNER = (slice(0, 50), slice(0, 50))
MIN_MOVE = 0.3  # px in the 128-px aligned crop: each corner's move towards the truth, at least


def smile_call(g: Gimp) -> dict:
    return {"op": "call", "proc": PROC, "args": {"strengths": g.strength, "parts": "shape-tone", "alignment": "auto"}}


@pytest.fixture(scope="module")
def headless(gimp):
    """One headless GIMP session: grace_hopper as the only layer, no selection (the plug-in finds the face),
    Smile… at the attribute's default strength, shape and tone only."""
    return gimp.run([{"op": "load", "path": gimp.photo}, {"op": "select"}, smile_call(gimp), {"op": "dump"}])


def test_the_database_s_smile_overrides_the_shipped_one(gimp, smile_db):
    """``dfi attributes`` lists the database's own two-folder ``smile`` (its label), not data/attributes.toml's
    ``smile`` (label "Smile", which needs a ``smiling`` column this database lacks)."""
    from dfi_engine.faces.attributes import load_definitions
    from dfi_engine.faces.database import Database

    defs = load_definitions()
    assert defs.attributes["smile"].label == "Smile"  # the shipped one exists ...
    usable = [a for a in defs.usable(Database(smile_db)) if a.name == "smile"]
    assert [a.label for a in usable] == ["Smile (known warp)"]  # ... and the database's own wins
    res = subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "attributes", "--no-autostart"],
                         env=gimp.daemon.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("  ")}
    assert "smile" in rows and "Smile (known warp)" in rows["smile"], res.stdout
    assert gimp.smile["label"] == "Smile (known warp)", gimp.smile


def test_smile_adds_one_layer_and_leaves_the_rest_of_the_photo(headless):
    call = headless.step("call")
    assert call["status"] == "success", call["message"]
    print(f"\n[smile] GIMP run {headless.seconds:.1f} s, of which the plug-in call {call['seconds']:.1f} s")
    layers = headless.layers()
    assert len(layers) == 2, [la.name for la in layers]
    new, source = layers
    assert new.name.startswith("DFI smile"), new.name
    g = kt.grace()
    assert np.array_equal(source.pixels[..., :3], g), "the source layer was modified"
    assert new.pixels.shape == source.pixels.shape and new.offsets == source.offsets
    after = new.pixels[..., :3]
    for name, (rows, cols) in (("top-left corner", CORNER), ("flag", FLAG)):
        assert np.array_equal(after[rows, cols], g[rows, cols]), f"the {name} changed"
    changed = np.any(after != g, axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000, f"only {changed.sum()} pixels changed"
    print(f"[smile] changed {changed.sum()} px within x {xs.min()}..{xs.max()}, y {ys.min()}..{ys.max()}")


def test_smile_moves_the_mouth_corners_towards_the_known_smile(gimp, headless):
    from dfi_engine.faces.pipeline import align_photo

    assert headless.step("call")["status"] == "success"
    g = kt.grace()
    after = np.ascontiguousarray(headless.layers()[0].pixels[..., :3])
    det = kt.detector()
    pts = kt.dense_points(det, g)
    scale = np.sqrt(abs(np.linalg.det(align_photo(g, 128, det).matrix[:, :2])))  # crop (128) px per photo px
    moved = (kt.dense_points(det, after) - pts)[list(kt.CORNERS)]
    truth = kt.corner_moves(pts, kt.LIFT)
    across, up = kt.face_axes(pts)
    towards = np.sum(moved * truth, 1) / np.linalg.norm(truth, axis=1) * scale
    outward = np.array([moved[0] @ -across, moved[1] @ across]) * scale
    upward = (moved @ up) * scale
    before_off = np.linalg.norm(truth, axis=1) * scale  # the original corners' distance to the truth
    after_off = np.linalg.norm(moved - truth, axis=1) * scale
    print(f"\n[smile] GIMP {gimp.version}, corners 48 and 54 in 128-px crop px: towards the truth {towards.round(2)}, "
          f"outward {outward.round(2)}, upward {upward.round(2)}; off the truth before {before_off.round(2)}, "
          f"after {after_off.round(2)}")
    if os.environ.get("DFI_SMILE_SHEETS"):
        x0, y0 = np.floor(pts.min(0) - 30).astype(int)
        x1, y1 = np.ceil(pts.max(0) + 30).astype(int)
        diff = np.clip(np.abs(after.astype(np.int16) - g) * 4, 0, 255).astype(np.uint8)
        path = Path(os.environ["DFI_SMILE_SHEETS"]) / f"gimp_smile-{gimp.version}.png"
        kt.sheet(str(path), [g, after, diff], (max(x0, 0), max(y0, 0), x1, y1))
        print(f"[smile] before | after | difference ×4: {path}")
    assert np.all(towards >= MIN_MOVE), f"a corner moved less than {MIN_MOVE} px towards the truth: {towards}"
    assert np.all(after_off < before_off), f"a corner is no closer to the truth: {before_off} -> {after_off}"


def test_one_undo_step_removes_the_smile_in_the_gui(gimp):
    """GUI GIMP under Xvfb: the non-interactive Smile… through a selection, then one Ctrl+Z removes its layer
    and leaves the selection made before it (the undo stack's previous step)."""

    def press(display, out):
        wait_file(out / "ready")
        window = gimp.wait_window(display, r"layers\) ")
        gimp.xdotool(display, "windowfocus", "--sync", window, "key", "--clearmodifiers", "ctrl+z")

    run = gimp.run([{"op": "load", "path": gimp.photo}, {"op": "select", "rect": list(UNDO_RECT)}, smile_call(gimp),
                    {"op": "dump"}, {"op": "display", "timeout": 60}, {"op": "dump"}], gui=True, during=press)
    call = run.step("call")
    assert call["status"] == "success", call["message"]
    print(f"\n[smile] GUI run {run.seconds:.1f} s")
    new, source = run.layers(0)
    assert new.name.startswith("DFI smile") and np.any(new.pixels != source.pixels)
    undo = run.step("display")
    assert (undo["before"], undo["after"]) == (2, 1), undo
    x, y, w, h = UNDO_RECT
    assert undo["selection_after"] == [True, x, y, x + w, y + h], "undo went past the edit"
    (left,) = run.layers(1)
    assert np.array_equal(left.pixels[..., :3], kt.grace())
