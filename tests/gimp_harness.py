"""A real GIMP 3 for the plug-in tests: a Debian trixie root, headless or under Xvfb.

The root is built once by ``tests/gimp/build_root.sh`` into a cache folder
outside the checkout (``DFI_GIMP_ROOT``, default /var/cache/gimp-dfi/trixie-gimp3)
and reused. GIMP runs in it through ``chroot``; it shares the host's network,
so the plug-in reaches the host's daemon on tcp://127.0.0.1. Each session works
in its own folder inside the root, with its own GIMP profile, and GIMP executes
``tests/gimp/batch.py`` on a JSON plan; the tests assert on what it writes.
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

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "tests" / "gimp"
DEFAULT_ROOT = "/var/cache/gimp-dfi/trixie-gimp3"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
GIMP_TIMEOUT = 240


def build_root() -> tuple[Path | None, str]:
    """(root, "") when a GIMP 3 root is ready, else (None, why it cannot be built here)."""
    root = Path(os.environ.get("DFI_GIMP_ROOT", DEFAULT_ROOT))
    if sys.platform != "linux" or not shutil.which("chroot"):
        return None, "real-GIMP tests need Linux with chroot"
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(HERE / "build_root.sh"), str(root)], capture_output=True, text=True)
    if res.returncode == 3:
        return None, res.stderr.strip().splitlines()[-1]
    if res.returncode != 0:
        raise RuntimeError(f"building the GIMP root failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    print(f"\n[gimp] {res.stdout.strip()} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return root, ""


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

    def layers(self, nth: int = 0) -> list[Layer]:
        out = []
        for entry in self.step("dump", nth)["layers"]:
            w, h = entry["size"]
            dtype = {"u8": np.uint8, "u16": np.uint16, "float": np.float32}[entry.get("dtype", "u8")]
            px = np.fromfile(self.out / entry["pixels"], dtype).reshape(h, w, 4)
            out.append(Layer(entry["name"], entry["position"], tuple(entry["offsets"]), px))
        return out


class Gimp:
    """GIMP 3 inside ``root``, with a private work folder and profile for this test session."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.inner = f"/dfi/{name}-{os.getpid()}"  # the work folder as GIMP sees it
        self.work = root / self.inner.lstrip("/")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.profile = f"{self.inner}/profile"
        shutil.copy(HERE / "batch.py", self.work / "batch.py")
        self.runs = 0

    def install(self, endpoint: str) -> str:
        """Install the plug-in into this session's profile with the project's installer; returns its report."""
        res = subprocess.run([sys.executable, str(REPO / "install" / "gimp_plugin.py"), "--root", str(self.root),
                              "--profile", self.profile, "--endpoint", endpoint, "--no-autostart"],
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
        return ["chroot", str(self.root), "/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8", f"PATH={PATH}",
                f"GIMP3_DIRECTORY={self.profile}", *extra, *argv]

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
            proc = subprocess.Popen(self.cmd("gimp-3.0" if gui else "gimp-console-3.0", *args, env=env),
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

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


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
