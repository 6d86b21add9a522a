"""pyzmq and msgpack for GIMP's own Python: the distro's packages, or wheels vendored into the plug-in.

A system Python (Debian/Ubuntu/Fedora/Arch GIMP packages) is best served by the distro's packages,
installed when we run as root and otherwise suggested. A Python bundled with GIMP (Flatpak, macOS,
Windows) gets wheels for its own version and platform, unpacked into ``vendor/``; each GIMP version
may have its own Python (GIMP 3.0: 3.13, 3.2: 3.14), so this runs once per GIMP.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import found
from .targets import InstallError

VENDOR_PACKAGES = ("pyzmq", "msgpack")
DISTRO_PACKAGES = {  # package manager -> (install command, package names)
    "apt-get": (["apt-get", "install", "-y"], ["python3-zmq", "python3-msgpack"]),
    "dnf": (["dnf", "install", "-y"], ["python3-zmq", "python3-msgpack"]),
    "pacman": (["pacman", "-S", "--noconfirm"], ["python-pyzmq", "python-msgpack"]),
    "zypper": (["zypper", "--non-interactive", "install"], ["python3-pyzmq", "python3-msgpack"]),
}
IMPORT_CHECK = """
import json, sys
ok = {}
for m in ("zmq", "msgpack"):
    try:
        mod = __import__(m)
        version = getattr(mod, "__version__", None) or ".".join(map(str, getattr(mod, "version", ())))
        ok[m] = (version or "?") + " from " + mod.__file__
    except Exception as e:
        ok[m] = None
print(json.dumps({"version": list(sys.version_info[:2]), "modules": ok}))
"""
_downloaded: dict[tuple, list[tuple[str, bytes]]] = {}  # two GIMPs with the same Python share one download


def run_python(target: found.Gimp, code: str) -> subprocess.CompletedProcess:
    try:
        return found.run_python(target, code)
    except found.GimpError as e:
        raise InstallError(str(e)) from None


def probe(target: found.Gimp) -> dict:
    res = run_python(target, IMPORT_CHECK)
    if res.returncode != 0:
        raise InstallError(f"GIMP's Python ({shlex.join(target.python)}) failed:\n{res.stderr.strip()[-800:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def distro_install(target: found.Gimp, log: list[str]) -> bool:
    """Install the distro's python3-zmq / python3-msgpack when we may (root, known package manager)."""
    for tool, (cmd, pkgs) in DISTRO_PACKAGES.items():
        if shutil.which(tool) if target.root is None else (target.root / "usr/bin" / tool).exists():
            argv = [*cmd, *pkgs]
            if target.root is not None:
                argv = ["chroot", str(target.root), *argv]
            if os.name != "posix" or os.geteuid() != 0:
                log.append(f"GIMP uses the system Python: the distro's packages are best: sudo {shlex.join(argv)}")
                return False
            res = subprocess.run(argv, capture_output=True, text=True,
                                 env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            log.append(f"{'installed' if res.returncode == 0 else 'FAILED to install'} {' '.join(pkgs)} with {tool}")
            return res.returncode == 0
    return False


def wheel_platforms(target: found.Gimp) -> list[str]:
    res = run_python(target, "import sysconfig, platform; print(sysconfig.get_platform(), platform.machine())")
    plat, machine = (res.stdout.split() + ["", ""])[:2]
    if plat.startswith("linux"):
        return [f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"manylinux2014_{machine}"]
    if plat.startswith("macosx"):
        return ["macosx_11_0_universal2", f"macosx_11_0_{machine}", f"macosx_10_9_{machine}"]
    if plat.startswith("win"):
        return [{"win-amd64": "win_amd64", "win-arm64": "win_arm64"}.get(plat, "win32")]
    raise InstallError(f"Cannot pick wheels for GIMP's Python on platform {plat!r}; install pyzmq and msgpack "
                       "for it by hand.")


def unpack(src: Path, log: list[str]) -> list[tuple[str, bytes]]:
    """The package folders of the newest pyzmq and msgpack wheel in ``src`` (no dist-info, no data)."""
    files: list[tuple[str, bytes]] = []
    for pkg in VENDOR_PACKAGES:  # one wheel per package, so nothing is unpacked over another version
        wheels = sorted(src.glob(f"{pkg}-*.whl"))
        if not wheels:
            raise InstallError(f"No {pkg} wheel in {src}.")
        with zipfile.ZipFile(wheels[-1]) as z:
            for info in z.infolist():
                top = info.filename.split("/")[0]
                if info.is_dir() or top.endswith((".dist-info", ".data")):
                    continue
                files.append((info.filename, z.read(info)))
        log.append(f"vendored {wheels[-1].name}")
    return files


def vendor_wheels(target: found.Gimp, version: list[int], wheel_dir: str | None,
                  log: list[str]) -> list[tuple[str, bytes]]:
    """pyzmq and msgpack wheels for GIMP's Python version, unpacked (their package folders only)."""
    if wheel_dir:
        return unpack(Path(wheel_dir), log)
    py = f"{version[0]}.{version[1]}"
    platforms = wheel_platforms(target)
    key = (py, *platforms)
    if key not in _downloaded:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                   "--python-version", py, "--implementation", "cp", "-d", tmp]
            for plat in platforms:
                cmd += ["--platform", plat]
            res = subprocess.run([*cmd, *VENDOR_PACKAGES], capture_output=True, text=True)
            if res.returncode != 0:
                raise InstallError(f"Downloading pyzmq and msgpack wheels for Python {py} failed:\n"
                                   f"{res.stderr.strip()[-800:]}\nCheck the network, or pass --wheels DIR "
                                   "with the two wheels.")
            _downloaded[key] = unpack(Path(tmp), log)
    return _downloaded[key]


def dependencies(target: found.Gimp, args: argparse.Namespace, log: list[str]) -> list[tuple[str, bytes]]:
    """What to vendor for ``target`` (nothing when GIMP's Python has both, or can get them from the distro)."""
    if args.vendor == "never" or not target.python:
        return []
    probed = probe(target)
    missing = [m for m, v in probed["modules"].items() if v is None]
    if missing and target.system_python and args.vendor == "auto" and distro_install(target, log):
        missing = [m for m, v in probe(target)["modules"].items() if v is None]
    if args.vendor == "always" or missing:
        why = "as asked" if args.vendor == "always" else f"{', '.join(missing)} missing in GIMP's Python"
        log.append(f"vendoring pyzmq and msgpack for Python {probed['version'][0]}.{probed['version'][1]} ({why})")
        return vendor_wheels(target, probed["version"], args.wheels, log)
    log.append("GIMP's Python already has " + "; ".join(f"{m} {v}" for m, v in probed["modules"].items()))
    return []
