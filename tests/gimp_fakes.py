"""A fake machine with GIMP 3 installations, for the installer's and ``dfi doctor``'s tests.

A home folder with GIMP profile folders, fake ``gimp-*`` executables on a PATH of their own that
print a version as GIMP does, a fake ``flatpak`` that knows org.gimp.GIMP, and the dfi folders
(config with the local CURVE keys, runtime, state) inside the same base, as ``daemon_process``
lays them out, so a ``DaemonProcess(base)`` shares its keys with the installer and doctor run here.
GIMP's Python is played by this interpreter (which has pyzmq and msgpack).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from daemon_process import env_for

REPO = Path(__file__).resolve().parent.parent
INSTALLER = REPO / "install" / "gimp_plugin.py"


def plugin_bridge() -> ModuleType:
    """plugin/dfi_bridge.py under a private name: as ``dfi_bridge`` it would shadow the installed copy that
    test_plugin_bridge.py imports from a plug-in folder."""
    name = "dfi_bridge_of_the_checkout"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "plugin" / "dfi_bridge.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)  # registered: its dataclasses look it up
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


class FakeMachine:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.bin = base / "bin"
        self.home.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in env_for(self.base).items() if k not in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY")}
        return {**env, "HOME": str(self.home), "PATH": str(self.bin)}

    @property
    def keys(self) -> Path:
        """The daemon's local key folder on this machine."""
        return self.base / "config" / "local-keys"

    def script(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path

    def binary(self, name: str, version: str) -> Path:
        """A GIMP executable that answers ``--version`` as GIMP does."""
        return self.script(name, f'echo "GNU Image Manipulation Program version {version}"')

    def flatpak(self, version: str) -> Path:
        return self.script("flatpak", 'if [ "$1 $2" = "info org.gimp.GIMP" ]; then\n'
                           f'  printf "GIMP\\n\\n          ID: org.gimp.GIMP\\n     Version: {version}\\n"; exit 0\n'
                           "fi\nexit 1")

    def profile(self, version: str, kind: str = "linux") -> Path:
        if kind == "flatpak":
            return self.home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / version
        return self.home / ".config" / "GIMP" / version

    def folder(self, version: str, kind: str = "linux") -> Path:
        return self.profile(version, kind) / "plug-ins" / "gimp-dfi"

    def files(self, version: str, kind: str = "linux") -> set[str]:
        folder = self.folder(version, kind)
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()

    def install(self, *args: str, check: bool = True, python: str | None = sys.executable,
                runner: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
        """The installer, run by ``runner``, with ``python`` as GIMP's Python (None: the GIMP's own)."""
        argv = [*runner, str(INSTALLER), *(["--gimp-python", python] if python else []), *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=self.env)
        if check:
            assert res.returncode == 0, res.stdout + res.stderr
        return res

    def doctor(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "doctor", *args], capture_output=True,
                              text=True, timeout=120, env=self.env)
