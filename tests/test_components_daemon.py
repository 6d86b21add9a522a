"""Shape and tone through a real daemon and the real CLI: ``--components shape,tone`` is the instant part (no
optimisation), ``dfi attributes`` shows each attribute's mix, and a source without landmarks says so in one line.

The database is the demo's: dark glasses painted on jittered astronaut crops, learnt by ``dfi db build``;
the photo is grace_hopper, which is not among the examples.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers.daemon_process import DaemonProcess
from PIL import Image

pytestmark = pytest.mark.slow  # a daemon process serves the module; the CLI runs as a process


def run_cli(d: DaemonProcess, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", *args, "--no-autostart"], env=d.env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from dfi_daemon import samples

    root = tmp_path_factory.mktemp("components")
    db = samples.build_database(root / "examples", root / "db")
    Image.fromarray(samples.portrait("grace_hopper")).save(root / "grace.png")
    d = DaemonProcess(root / "daemon", database=str(db))
    try:
        d.start()
        yield d, root
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_attributes_show_their_mix_of_components(served):
    d, _ = served
    out = run_cli(d, "attributes")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "dark_glasses" in x)
    assert "shape 1" in line and "tone 1 as a cover" in line and "texture 0.5" in line, line  # [custom], shipped


def test_shape_and_tone_alone_darken_the_glasses_without_an_inversion(served):
    d, root = served
    out = run_cli(d, "edit", str(root / "grace.png"), "-a", "dark_glasses", "-s", "0.3", "--components",
                  "shape,tone", "-o", str(root / "st_{strength}.png"))
    assert out.returncode == 0, out.stderr
    assert "components: shape 1, tone 1" in out.stderr and "texture" not in out.stderr.split("components:")[1]
    assert "\r" not in out.stderr and "done in" in out.stderr, "off a terminal: plain progress lines, no bar"
    photo = np.asarray(Image.open(root / "grace.png"), np.float64)
    res = np.asarray(Image.open(root / "st_0.3.png").convert("RGB"), np.float64)
    changed = np.abs(res - photo).max(-1) > 0
    assert changed.any() and changed.mean() < 0.25, "only the face region changes"
    # the lenses (between the brows and the nose tip, around the eyes) get darker: the painted attribute
    ys, xs = np.nonzero(changed)
    darker = (photo - res).mean(-1)[changed]
    assert darker.mean() > 3.0 and np.percentile(darker, 95) > 25.0, (darker.mean(), np.percentile(darker, 95))
    assert ys.min() > 0 and xs.min() > 0


def test_unknown_components_are_refused_before_sending(served):
    d, root = served
    out = run_cli(d, "edit", str(root / "grace.png"), "-a", "dark_glasses", "--components", "shape,colour")
    assert out.returncode == 2 and "must be one of shape, tone, texture" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_synthetic_source_has_no_shape_or_tone(tmp_path):
    d = DaemonProcess(tmp_path / "daemon")
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(tmp_path / "p.png")
    try:
        d.start()
        out = run_cli(d, "edit", str(tmp_path / "p.png"), "-a", "facehair", "--components", "shape")
    finally:
        d.stop()
    assert out.returncode == 2 and "no shape or tone edits" in out.stderr and "Traceback" not in out.stderr


def test_two_strengths_with_shape_and_tone_give_two_layers_and_progress_that_never_goes_back(served):
    """Each strength has its own shape-and-tone start, so the texture runs once per strength; the progress the
    client sees still only goes forward (a GIMP progress bar that jumps back looks broken)."""
    from dfi_wire import protocol as P
    from dfi_wire.client import Client

    d, root = served
    photo = np.asarray(Image.open(root / "grace.png").convert("RGB"))
    image = P.image_map(photo.tobytes(), photo.shape[1], photo.shape[0], "RGB8")
    seen: list[float] = []
    with Client(d.endpoint, timeout=300) as c:
        res = c.run_job(P.edit_request(image, "dark_glasses", [0.15, 0.3], iterations=4, k=12),
                        on_event=lambda ev: seen.append(ev["fraction"]) if ev.get("type") == "progress" else None)
    assert res["strengths"] == [0.15, 0.3] and len(res["images"]) == 2
    assert seen and all(b >= a for a, b in zip(seen, seen[1:])), " ".join(f"{x:.3f}" for x in seen)
