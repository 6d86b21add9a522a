"""A real GIMP 3 for the plug-in tests: a Debian root per GIMP version, headless or under Xvfb.

GIMP 3.0 comes from a Debian trixie root, GIMP 3.2 from a sid root. Each is built
once by ``tests/gimp/build_root.sh`` into a cache folder outside the checkout
(``DFI_GIMP_ROOT``, default /var/cache/gimp-dfi/trixie-gimp3, and ``DFI_GIMP32_ROOT``,
default /var/cache/gimp-dfi/sid-gimp3) and reused; ``DFI_GIMP_VERSIONS=3.0`` limits
the tests to some versions. GIMP runs in a root through ``chroot``, with the
binaries of the version it holds (``gimp-console-3.X``, ``gimp-3.X``); it shares
the host's network, so the plug-in reaches the host's daemon on tcp://127.0.0.1.
Each session works in its own folder inside the root, with its own GIMP profile,
and GIMP executes ``tests/gimp/batch.py`` on a JSON plan; the tests assert on
what it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "tests" / "gimp"
# GIMP version -> (Debian suite that packages it, environment variable for its root, default root)
ROOTS = {
    "3.0": ("trixie", "DFI_GIMP_ROOT", "/var/cache/gimp-dfi/trixie-gimp3"),
    "3.2": ("sid", "DFI_GIMP32_ROOT", "/var/cache/gimp-dfi/sid-gimp3"),
}
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GIMP_TIMEOUT = 240


def versions() -> list[str]:
    """The GIMP versions to test: all of ROOTS, or those listed in DFI_GIMP_VERSIONS (e.g. "3.0,3.2")."""
    wanted = os.environ.get("DFI_GIMP_VERSIONS")
    if not wanted:
        return list(ROOTS)
    picked = [v.strip() for v in wanted.split(",") if v.strip()]
    unknown = [v for v in picked if v not in ROOTS]
    if unknown:
        raise ValueError(f"DFI_GIMP_VERSIONS names {unknown}; known: {', '.join(ROOTS)}")
    return picked


def gimp_version(root: Path) -> str | None:
    """The GIMP major.minor a root holds, from its binaries (gimp-console-3.X); the highest if several."""
    found = [p.name.removeprefix("gimp-console-") for p in (root / "usr" / "bin").glob("gimp-console-3.*")]
    found = [v for v in found if v.replace(".", "").isdigit()]
    return max(found, key=lambda v: tuple(map(int, v.split(".")))) if found else None


def build_root(version: str = "3.0") -> tuple[Path | None, str]:
    """(root, "") when a root with GIMP ``version`` is ready, else (None, why it cannot be built here)."""
    suite, env, default = ROOTS[version]
    root = Path(os.environ.get(env, default))
    if sys.platform != "linux" or not shutil.which("chroot"):
        return None, "real-GIMP tests need Linux with chroot"
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(HERE / "build_root.sh"), str(root), suite], capture_output=True, text=True)
    if res.returncode == 3:
        return None, res.stderr.strip().splitlines()[-1]
    if res.returncode != 0:
        raise RuntimeError(f"building the GIMP root failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    print(f"\n[gimp] {res.stdout.strip()} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    found = gimp_version(root)
    if found != version:
        raise RuntimeError(f"{root} ({env}) holds GIMP {found}, not {version}: point {env} at a {suite} root, "
                           f"or update ROOTS in {Path(__file__).name} if {suite} moved on")
    return root, ""


def root_or_skip(version: str) -> Path:
    """The root holding GIMP ``version``; the calling test is skipped, with the reason, where none can be built."""
    import pytest

    root, why = build_root(version)
    if root is None:
        pytest.skip(f"real GIMP {version} tests skipped: {why}")
    return root


DTYPES = {"u8": np.uint8, "u16": np.uint16, "float": np.float32}


@dataclass
class Layer:
    name: str
    position: int
    offsets: tuple[int, int]
    pixels: np.ndarray  # H×W×4 R'G'B'A, uint8 unless the dump asked for another format


@dataclass
class Run:
    """What one GIMP run reported: one entry per plan step, plus its output and timing."""

    steps: list[dict]
    out: Path
    output: str
    seconds: float

    def step(self, op: str, nth: int = 0) -> dict:
        found = [s for s in self.steps if s["op"] == op]
        assert len(found) > nth, f"no {op} step #{nth} in {self.steps}\n{self.output[-3000:]}"
        assert "error" not in found[nth], f"{found[nth]['error']}\n{found[nth].get('traceback')}"
        return found[nth]

    def selection(self, nth: int = 0) -> np.ndarray:
        """The selection mask that a ``selection`` step wrote, H×W in its own format (uint8, uint16 or float32)."""
        entry = self.step("selection", nth)
        w, h = entry["size"]
        return np.fromfile(self.out / entry["pixels"], DTYPES[entry["dtype"]]).reshape(h, w)

    def layers(self, nth: int = 0) -> list[Layer]:
        out = []
        for entry in self.step("dump", nth)["layers"]:
            w, h = entry["size"]
            px = np.fromfile(self.out / entry["pixels"], DTYPES[entry.get("dtype", "u8")]).reshape(h, w, 4)
            out.append(Layer(entry["name"], entry["position"], tuple(entry["offsets"]), px))
        return out


class Gimp:
    """GIMP 3 inside ``root``, with a private work folder and profile for this test session."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.version = gimp_version(root)
        if self.version is None:
            raise RuntimeError(f"{root} holds no gimp-console-3.*")
        self.console, self.gui = f"gimp-console-{self.version}", f"gimp-{self.version}"
        self.inner = f"/dfi/{name}-{os.getpid()}"  # the work folder as GIMP sees it
        self.work = root / self.inner.lstrip("/")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.profile = f"{self.inner}/profile"
        shutil.copy(HERE / "batch.py", self.work / "batch.py")
        self.runs = 0

    def install(self, endpoint: str, keys_dir: Path | None = None, dfi: list[str] | None = None) -> str:
        """Install the plug-in into this session's profile with ``dfi gimp install``; returns its report.

        ``keys_dir``: the test daemon's local CURVE keys (a tcp:// endpoint needs them in the plug-in);
        ``dfi``: the dfi command to install with (default: this environment's).
        """
        keys = ["--keys-dir", str(keys_dir)] if keys_dir is not None else []
        dfi = dfi or [sys.executable, "-m", "dfi_daemon.cli"]
        res = subprocess.run([*dfi, "gimp", "install", "--root", str(self.root),
                              "--profile", self.profile, "--endpoint", endpoint, "--no-autostart", *keys],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    def host(self, inner: str) -> Path:
        return self.root / inner.lstrip("/")

    def put(self, name: str, data: bytes) -> str:
        """Write an input file into the work folder; returns its path inside the root."""
        (self.work / name).write_bytes(data)
        return f"{self.inner}/{name}"

    def cmd(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        # GLYCIN_DISABLE_SANDBOX: GIMP 3.2's GUI loads its icons through glycin, whose bwrap sandbox cannot start
        # in a chroot (GIMP aborts). Only for these throw-away test GIMPs; GIMP 3.0 ignores it.
        return ["chroot", str(self.root), "/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8", f"PATH={PATH}",
                f"GIMP3_DIRECTORY={self.profile}", "GLYCIN_DISABLE_SANDBOX=i-know-the-risks", *extra, *argv]

    def run(self, steps: list[dict], env: dict[str, str] | None = None, gui: bool = False,
            during=None, timeout: float = GIMP_TIMEOUT) -> Run:
        """Run GIMP on a plan; ``during(display, out)`` runs on the host meanwhile."""
        self.runs += 1
        out_inner = f"{self.inner}/run{self.runs}"
        out = self.host(out_inner)
        out.mkdir()
        (out / "plan.json").write_text(json.dumps({"out": out_inner, "steps": steps}))
        env = {**(env or {}), "DFI_PLAN": f"{out_inner}/plan.json"}
        batch = f"exec(open('{self.inner}/batch.py').read())"
        args = ["-i", "-n", "--batch-interpreter", "python-fu-eval", "-b", batch, "--quit"]
        t0 = time.monotonic()
        xvfb = None
        try:
            if gui:
                display = f":{90 + os.getpid() % 100}"
                xvfb = subprocess.Popen(self.cmd("Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                env["DISPLAY"] = display
                args = ["-n", "-s", *args[2:]]
            proc = subprocess.Popen(self.cmd(self.gui if gui else self.console, *args, env=env),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                if during is not None:
                    during(env.get("DISPLAY"), out)
                output, _ = proc.communicate(timeout=timeout)
            except BaseException:
                proc.kill()
                output, _ = proc.communicate()
                raise
        finally:
            if xvfb is not None:
                xvfb.kill()
                xvfb.wait()
        seconds = time.monotonic() - t0
        try:
            steps_seen = json.loads((out / "result.json").read_text())
        except FileNotFoundError:
            raise AssertionError(f"GIMP wrote no result (exit {proc.returncode}):\n{output[-4000:]}") from None
        return Run(steps_seen, out, output, seconds)

    def xdotool(self, display: str, *args: str, check: bool = True) -> str:
        res = subprocess.run(self.cmd("xdotool", *args, env={"DISPLAY": display}), capture_output=True, text=True,
                             timeout=30)
        if check and res.returncode != 0:
            raise AssertionError(f"xdotool {' '.join(args)} failed: {res.stderr}")
        return res.stdout.strip()

    def wait_window(self, display: str, pattern: str, timeout: float = 90) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.xdotool(display, "search", "--name", pattern, check=False)
            if found:
                return found.splitlines()[0]
            time.sleep(0.5)
        raise AssertionError(f"no window named like {pattern!r} appeared within {timeout} s")

    def screenshot(self, display: str, dest: Path, window: str | None = None) -> Path:
        """A PNG of the Xvfb screen, or of one window (an X id from wait_window), written to ``dest``.

        The roots hold no xwd or ImageMagick, but GIMP's own GTK does: Gdk grabs the screen inside the root.
        """
        box = ["0", "0", "0", "0"]
        if window is not None:
            geo = dict(line.split("=", 1) for line in
                       self.xdotool(display, "getwindowgeometry", "--shell", window).splitlines() if "=" in line)
            box = [geo["X"], geo["Y"], geo["WIDTH"], geo["HEIGHT"]]
        inner = f"{self.inner}/screenshot.png"
        code = ("import sys, gi; gi.require_version('Gtk', '3.0'); gi.require_version('Gdk', '3.0'); "
                "from gi.repository import Gdk, Gtk; x, y, w, h = map(int, sys.argv[2:]); "
                "root = Gdk.get_default_root_window(); w, h = w or root.get_width(), h or root.get_height(); "
                "Gdk.pixbuf_get_from_window(root, x, y, w, h).savev(sys.argv[1], 'png', [], [])")
        res = subprocess.run(self.cmd("python3", "-c", code, inner, *box, env={"DISPLAY": display}),
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise AssertionError(f"the screenshot failed: {res.stderr[-2000:]}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.host(inner), dest)
        return dest

    def add_steps(self, code: str) -> None:
        """Plan steps of a test's own: ``code`` defines ``step_*`` functions and adds them to ``STEPS``.

        It goes into this session's copy of tests/gimp/batch.py, just before the plan runs.
        """
        batch = self.work / "batch.py"
        text = batch.read_text()
        marker = "\ntry:\n    for step in PLAN"
        assert text.count(marker) == 1, "tests/gimp/batch.py no longer runs its plan as add_steps expects"
        batch.write_text(text.replace(marker, f"\n{code}\n{marker}"))

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def gimp_for(version: str, name: str) -> Gimp:
    """A GIMP ``version`` session named ``name`` (its own folder and profile in the root), or the test skipped."""
    g = Gimp(root_or_skip(version), name)
    assert g.version == version
    return g


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.25)
