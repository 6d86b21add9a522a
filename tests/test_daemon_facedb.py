"""A real daemon serving a real face database (built by the CLI): attributes, unaligned and aligned edits."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers.daemon_process import DaemonProcess
from PIL import Image

from dfi_engine.synthetic import face

pytestmark = pytest.mark.slow  # a daemon process serving a database the CLI builds

RES = 48


def run_cli(d: DaemonProcess | None, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = d.env() if d else None
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("facedb")
    rng = np.random.default_rng(3)
    for sub, beard in (("with", True), ("without", False)):
        (root / sub).mkdir()
        for i in range(12):
            Image.fromarray(face(rng, beard, RES)).save(root / sub / f"{i}.png")
    built = run_cli(None, "db", "build", str(root / "db"), "--with", str(root / "with"), "--without",
                    str(root / "without"), "--name", "Dark Beard", "--aligned", "--resolution", str(RES), "-q")
    assert built.returncode == 0, built.stderr
    d = DaemonProcess(root / "daemon", database=str(root / "db"))
    try:
        d.start()
        yield d, root
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_attributes_come_from_the_database(served):
    d, _ = served
    out = run_cli(d, "attributes", "--no-autostart")
    assert out.returncode == 0, out.stderr
    assert "dark_beard" in out.stdout and "facehair" not in out.stdout


def test_unaligned_edit_through_the_database(served):
    d, root = served
    photo = face(np.random.default_rng(42), False, RES)
    mask = np.zeros((RES, RES), np.uint8)
    mask[26:44, 8:40] = 255
    Image.fromarray(photo).save(root / "p.png")
    Image.fromarray(mask).save(root / "m.png")
    out = run_cli(d, "edit", str(root / "p.png"), "-a", "dark_beard", "-s", "1.0", "--mask", str(root / "m.png"),
                  "--no-align", "--iterations", "6", "-k", "10", "--scaling", "none", "--no-autostart",
                  "-o", str(root / "{stem}_out_{strength}.png"))
    assert out.returncode == 0, out.stderr
    res = np.asarray(Image.open(root / "p_out_1.png"))
    assert res.shape == photo.shape
    assert np.array_equal(res[mask == 0], photo[mask == 0])
    assert not np.array_equal(res[mask > 0], photo[mask > 0])


def test_aligned_edit_of_a_real_photo_changes_only_the_face(served):
    from skimage import data

    d, root = served
    photo = data.astronaut()
    Image.fromarray(photo).save(root / "astronaut.png")
    out = run_cli(d, "edit", str(root / "astronaut.png"), "-a", "dark_beard", "-s", "1.0", "--iterations", "4",
                  "-k", "10", "--scaling", "none", "--no-autostart", "-o", str(root / "astro_{strength}.png"))
    assert out.returncode == 0, out.stderr
    res = np.asarray(Image.open(root / "astro_1.png"))
    # the daemon's CPU default edits at the face's own scale (~170 px across the crop here) up to 256, not at
    # the database's 48 px
    assert "edited at 160 px" in out.stderr + out.stdout, out.stderr
    changed = np.any(res != photo, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    # The astronaut's face lies around x 150-240, y 40-170 of the 512x512 photo; nothing else may change.
    assert xs.min() > 100 and xs.max() < 300 and ys.min() > 0 and ys.max() < 230, (xs.min(), xs.max(), ys.max())


def test_inpaint_through_the_database(served):
    d, root = served
    photo = face(np.random.default_rng(43), True, RES)
    mask = np.zeros((RES, RES), np.uint8)
    mask[14:24, 8:22] = 255
    Image.fromarray(photo).save(root / "q.png")
    Image.fromarray(mask).save(root / "qm.png")
    out = run_cli(d, "inpaint", str(root / "q.png"), "--mask", str(root / "qm.png"), "--no-align",
                  "--iterations", "6", "-k", "10", "--scaling", "none", "-s", "1.0", "--no-autostart",
                  "-o", str(root / "q_filled.png"))
    assert out.returncode == 0, out.stderr
    res = np.asarray(Image.open(root / "q_filled.png"))
    assert np.array_equal(res[mask == 0], photo[mask == 0])
    assert not np.array_equal(res[mask > 0], photo[mask > 0])


def test_an_aligned_edit_previews_the_whole_photo(served):
    """Live previews of an aligned edit show the photo (warped back and blended), small, not the aligned crop."""
    from dfi_wire import protocol as P
    from skimage import data

    d, _ = served
    photo = data.astronaut()[:400, 60:460].copy()
    msg = P.edit_request(P.image_map(photo.tobytes(), 400, 400, "RGB8"), "dark_beard", [1.0], iterations=60, k=10,
                         scaling="none", preview=0.5)
    previews = []
    with d.client(120) as c:
        c.run_job(msg, on_event=lambda e: previews.append(e["preview"]) if e.get("preview") else None)
    assert previews, "previews were asked for (60 iterations at this size take over 2 s)"
    for p in previews:
        assert (p["width"], p["height"], p["format"]) == (P.PREVIEW_MAX_SIDE, P.PREVIEW_MAX_SIDE, "RGB8")
    last = np.frombuffer(previews[-1]["data"], np.uint8).reshape(256, 256, 3).astype(int)
    small = np.asarray(Image.fromarray(photo).resize((256, 256), Image.Resampling.BOX)).astype(int)
    assert np.abs(last[:20] - small[:20]).max() <= 2, "the top of the photo is unchanged in the preview too"
    with d.client(120) as c:  # without the option: no previews
        events = []
        c.run_job({**msg, "options": {**msg["options"], "preview": 0, "iterations": 40}}, on_event=events.append)
    assert not any("preview" in e for e in events)
