"""``dfi edit --preview-strip``: the live slider's previews as one contact strip, through a real daemon serving the
demo's face database (dark glasses painted on astronaut crops, 68-point landmarks) and grace_hopper, which is
not among its examples. The strip must cost the daemon far less work than the full edit of the same strengths:
measured as the daemon process's CPU seconds (its work, whatever else the machine runs), not wall time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dfi_wire import protocol as P
from helpers.daemon_process import DaemonProcess
from PIL import Image

ATTRIBUTE = "dark_glasses"
STRENGTHS = [0.0, 0.45, 0.9]
TOP = 34  # the sheet's title and caption band above the panels (sheet.contact_sheet)


def run_cli(env: dict[str, str] | None, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (/proc/PID/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from dfi_daemon import samples

    root = tmp_path_factory.mktemp("strip")
    db = samples.build_database(root / "examples", root / "db")
    Image.fromarray(samples.portrait("grace_hopper")).save(root / "grace_hopper.png")
    d = DaemonProcess(root / "daemon", "--no-warm-up", database=str(db))
    try:
        d.start()
        yield d, root
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def panel_size(d: DaemonProcess, photo: Path) -> tuple[int, int]:
    """(width, height) of one preview of the photo, asked of the daemon directly (an instant one: cheap)."""
    im = np.asarray(Image.open(photo).convert("RGB"))
    with d.client(300) as c:
        look = c.preview("probe", ATTRIBUTE, 0.5, image=P.image_map(im.tobytes(), im.shape[1], im.shape[0], "RGB8"),
                         refine=False)
    return look["image"]["width"], look["image"]["height"]


def panels(strip: Path, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The strip's n panels, checking it is exactly n previews wide under its caption band."""
    sheet = np.asarray(Image.open(strip).convert("RGB")).astype(float)
    w, h = size
    assert sheet.shape[:2] == (h + TOP, w * n), (sheet.shape, size)
    return [sheet[TOP:, i * w:(i + 1) * w] for i in range(n)]


def check_differ(tiles: list[np.ndarray]) -> None:
    for t in tiles:
        assert t.std() > 10, "a panel is blank"
    for a, b in zip(tiles, tiles[1:]):
        assert np.abs(a - b).mean() > 0.5, "two strengths gave the same panel"


@pytest.mark.slow  # a daemon process, a session's refinements and a full edit on the CPU
def test_strip_has_a_panel_per_strength_and_costs_far_less_than_the_full_edit(served):
    d, root = served
    photo, out = root / "grace_hopper.png", root / "strip.png"
    size = panel_size(d, photo)
    strengths = ",".join(f"{s:g}" for s in STRENGTHS)

    cpu0 = cpu_seconds(d.pid)
    res = run_cli(d.env(), "edit", str(photo), "-a", ATTRIBUTE, "--preview-strip", strengths, "--no-autostart",
                  "-o", str(out))
    strip_cpu = cpu_seconds(d.pid) - cpu0
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == [res.stdout.strip()] and str(out) in res.stdout
    assert f"{len(STRENGTHS)} refined previews in" in res.stdout, res.stdout
    check_differ(panels(out, len(STRENGTHS), size))

    cpu0 = cpu_seconds(d.pid)  # the cheapest full edit of the same strengths (one stage, database size)
    res = run_cli(d.env(), "edit", str(photo), "-a", ATTRIBUTE, "-s", strengths, "--quality", "fast",
                  "--no-autostart", "-o", str(root / "full-{strength}.png"))
    full_cpu = cpu_seconds(d.pid) - cpu0
    assert res.returncode == 0, res.stderr
    assert len(list(root.glob("full-*.png"))) == len(STRENGTHS)
    print(f"\ndaemon CPU: strip {strip_cpu:.1f} s, full edit (fast) {full_cpu:.1f} s")
    assert strip_cpu < 0.5 * full_cpu, (strip_cpu, full_cpu)


@pytest.mark.slow
def test_instant_strips_for_a_batch_one_per_input(served):
    d, root = served
    second = root / "batch" / "hopper2.png"
    second.parent.mkdir(exist_ok=True)
    shutil.copy(root / "grace_hopper.png", second)
    first = root / "batch" / "hopper1.png"
    shutil.copy(root / "grace_hopper.png", first)
    size = panel_size(d, first)
    res = run_cli(d.env(), "edit", str(root / "batch" / "*.png"), "-a", ATTRIBUTE, "--preview-strip", "0,1",
                  "--components", "shape,tone", "--no-autostart")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and all("2 instant previews" in line for line in lines), res.stdout
    for src in (first, second):
        strip = src.parent / f"{src.stem}-{ATTRIBUTE}-strip.png"
        assert strip.is_file()
        check_differ(panels(strip, 2, size))


@pytest.mark.parametrize(("strengths", "says"), [("0,strong", "not a comma-separated list of numbers"),
                                                  (",".join(["0.1"] * 17), "at most 16 strengths")])
def test_bad_strengths_get_one_line(tmp_path, strengths, says):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    env = {**os.environ, "DFI_RUNTIME_DIR": str(tmp_path / "run"), "DFI_STATE_DIR": str(tmp_path / "state"),
           "DFI_CONFIG_DIR": str(tmp_path / "config")}
    res = run_cli(env, "edit", str(photo), "-a", ATTRIBUTE, "--preview-strip", strengths, "--no-autostart",
                  timeout=60)
    assert res.returncode == 2 and says in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
