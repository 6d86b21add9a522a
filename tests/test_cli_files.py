"""The CLI against a newcomer's files and shell: broken, huge and unwritable files, reruns over a folder,
a closed pipe, no daemon. Real CLI processes and a real daemon; every problem is one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.daemon_process import DaemonProcess, run_cli

pytestmark = pytest.mark.slow  # every test runs the CLI as a process, most against a daemon


@pytest.fixture
def smoke(base):
    """A running smoke daemon and the CLI pointed at it."""
    with DaemonProcess(base) as d:
        yield d


def edit_cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "edit", *args, "--attribute", "facehair",
                           "--iterations", "2", "-k", "2", "--no-autostart"], env=d.env(), capture_output=True,
                          text=True, timeout=120)


def make_png(path: Path, size: int = 48) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), (120, 90, 60)).save(path)
    return path


# Guards: a truncated PNG and a 900-megapixel one each get one line and exit 2; nothing is written.
def test_broken_and_huge_files_get_one_line(smoke, base):
    from PIL import Image

    good = make_png(base / "good.png", 64)
    (base / "trunc.png").write_bytes(good.read_bytes()[:-60])
    Image.new("1", (30000, 30000)).save(base / "huge.png")  # 1-bit: a small file, 900 MP
    for name in ("trunc.png", "huge.png"):
        r = edit_cli(smoke, str(base / name), "-o", str(base / "out-{stem}.png"))
        assert r.returncode == 2 and "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "truncated or damaged" in edit_cli(smoke, str(base / "trunc.png")).stderr
    assert not list(base.glob("out-*")), "nothing written"


# Guards: an output that cannot be written (/proc, /sys, unknown format, read-only folder) is refused before the job.
def test_unwritable_outputs_are_refused_before_the_work(smoke, base):
    src = make_png(base / "p.png")
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    targets = ["/proc/out.png", "/sys/out.png", f"{base}/x.unknown"]
    if os.getuid() != 0:  # root writes into a 0555 folder anyway
        targets.append(f"{ro}/x.png")
    for target in targets:
        t0 = time.monotonic()
        r = edit_cli(smoke, str(src), "-o", target)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "writable" in r.stderr or "format" in r.stderr or "not a folder" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 20
    with smoke.client() as c:
        assert c.status()["queue"]["running"] is None


# Guards: rerunning a glob leaves out the CLI's own earlier outputs, says so, and --skip-existing skips done files.
def test_batch_reruns_leave_out_own_results_and_summarise(smoke, base):
    for n in ("a", "b"):
        make_png(base / f"{n}.png")
    pattern = str(base / "*.png")
    r = edit_cli(smoke, pattern, "--strength", "0.5")
    assert r.returncode == 0 and "done: 2 edited" in r.stderr, r.stderr
    r = edit_cli(smoke, pattern, "--strength", "0.5")  # the glob now also matches a-facehair-0.5.png
    assert r.returncode == 0 and "leaving out 2 file(s)" in r.stderr and "will be replaced" in r.stderr, r.stderr
    r = edit_cli(smoke, pattern, "--strength", "0.5", "--skip-existing")
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert sorted(p.name for p in base.glob("*.png")) == ["a-facehair-0.5.png", "a.png", "b-facehair-0.5.png",
                                                          "b.png"]


# Guards: output piped into a reader that closes early (`| head -c 1`) ends quietly, no BrokenPipe traceback.
def test_a_closed_pipe_is_not_a_traceback(base):
    with DaemonProcess(base) as d:
        r = subprocess.run(f"{sys.executable} -m dfi_daemon.cli daemon status | head -c 1 > /dev/null",
                           shell=True, env=d.env(), capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


# Guards: no daemon with --no-autostart exits 3 (unavailable), not 2 (usage), naming `dfi daemon start`.
def test_daemon_unavailable_is_not_a_usage_error(base):
    r = run_cli(base, "attributes", "--no-autostart", timeout=60)
    assert r.returncode == 3 and "dfi daemon start" in r.stderr
