"""gimp-dfi as a user installs it: the wheel built from this checkout, in a new venv outside it.

The wheel is built with pip (no build isolation: setuptools comes from the project's venv) and
installed without dependencies into a venv under a temporary folder; the heavy dependencies
(torch, pyzmq, …) come from the project's venv through a ``.pth`` line, which sys.path appends
*after* the new venv's own site-packages, and which installs no import hook, so ``dfi_daemon``,
``dfi_wire`` and ``dfi_plugin`` load from the wheel's files and never from the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wheel_venv(base: Path) -> Path:
    """Build the wheel into ``base``, make ``base/venv`` with it; returns the venv's ``dfi``."""
    wheels = base / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("gimp_dfi-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin" / "dfi"
