"""Is there a GPU that this environment's torch cannot use? (a check of ``dfi doctor``)

The hardware is seen without torch (device files, ``nvidia-smi``, the platform); only when a GPU is
there is torch asked, in a child process (it takes seconds to import), what it can use. The fix is
the exact command that installs a torch build for that GPU into this environment.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"  # install/bootstrap.sh's version
ROCM_INDEX = "https://download.pytorch.org/whl/rocm6.4"  # PyTorch's own indexes: ROCm builds, and CUDA for Windows
CUDA_WINDOWS_INDEX = "https://download.pytorch.org/whl/cu128"  # (PyPI's Windows wheels are CPU only)
PROBE = ("import json, torch; mps = getattr(torch.backends, 'mps', None); "
         "print(json.dumps({'version': torch.__version__, 'cuda': torch.cuda.is_available(), "
         "'hip': torch.version.hip, 'mps': bool(mps and mps.is_available())}))")


def gpu_present(root: Path = Path("/")) -> str | None:
    """'nvidia', 'amd', 'apple' or None, from what the system shows (no torch)."""
    if platform.system() == "Darwin":
        return "apple" if platform.machine() == "arm64" else None
    if (root / "proc/driver/nvidia/version").exists() or (root / "dev/nvidia0").exists() or shutil.which("nvidia-smi"):
        return "nvidia"
    if (root / "dev/kfd").exists() and any(p.read_text().strip() == "0x1002" for p in
                                           (root / "sys/class/drm").glob("card*/device/vendor") if p.is_file()):
        return "amd"
    return None


def torch_sees(python: str = sys.executable) -> dict | None:
    """What this environment's torch can use: {'version', 'cuda', 'hip', 'mps'}; None if torch does not load."""
    try:
        res = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def install_command(gpu: str, python: str = sys.executable) -> str:
    """The exact command that puts a torch for ``gpu`` into this environment."""
    pip = f"{python} -m pip install --force-reinstall {TORCH}"
    if gpu == "amd":
        return f"{pip} --index-url {ROCM_INDEX}"
    if gpu == "nvidia" and platform.system() == "Windows":
        return f"{pip} --index-url {CUDA_WINDOWS_INDEX}"
    return pip  # PyPI's Linux and macOS wheels are the CUDA and MPS builds


def check(gpu: str | None, seen: dict | None) -> tuple[bool, str, str]:
    """(fine, what was found, the fix) for a GPU kind and what torch reported."""
    if gpu is None:
        return True, "no GPU found: the CPU build of torch is the right one", ""
    name = {"nvidia": "an NVIDIA GPU", "amd": "an AMD GPU", "apple": "Apple silicon"}[gpu]
    if seen is None:
        return False, f"{name} is present but torch does not load here", install_command(gpu)
    usable = {"nvidia": seen["cuda"] and not seen["hip"], "amd": seen["cuda"] and bool(seen["hip"]),
              "apple": seen["mps"]}[gpu]
    if usable:
        return True, f"{name} is present and torch {seen['version']} can use it", ""
    return False, (f"{name} is present but torch {seen['version']} cannot use it (edits run on the CPU, "
                   "10-100x slower)"), install_command(gpu)
