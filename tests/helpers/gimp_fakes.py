"""A fake machine with GIMP 3 installations, for the installer's and ``dfi doctor``'s tests.

A home folder with GIMP profile folders, fake ``gimp-*`` executables on a PATH of their own that
print a version as GIMP does, a fake ``flatpak`` that knows org.gimp.GIMP, and the dfi folders
(config with the local CURVE keys, runtime, state) inside the same base, as ``daemon_process``
lays them out, so a ``DaemonProcess(base)`` shares its keys with the installer and doctor run here.
GIMP's Python is played by this interpreter (which has pyzmq and msgpack).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from dfi_daemon.gimp.files import plugin_sources

from helpers.daemon_process import env_for

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "install" / "gimp_plugin.py"


_BRIDGE: list[ModuleType] = []


def plugin_bridge() -> ModuleType:
    """The plug-in's ``dfi_bridge`` as ``dfi gimp install`` lays it out (flat, beside dfi_wire), imported from a
    copy of the package data under the one name it has in GIMP; taken out of ``sys.modules`` again so that it
    shadows no installed copy a later test imports (test_plugin_bridge.py)."""
    if not _BRIDGE:
        import dfi_wire.client  # noqa: F401  (the package's own wire, not the copy's)

        folder = Path(tempfile.mkdtemp(prefix="dfi-plugin-"))
        for dest, data, _ in plugin_sources():
            (folder / dest).parent.mkdir(parents=True, exist_ok=True)
            (folder / dest).write_bytes(data)
        sys.path.insert(0, str(folder))
        try:
            _BRIDGE.append(importlib.import_module("dfi_bridge"))
        finally:
            sys.path.remove(str(folder))
            sys.modules.pop("dfi_bridge", None)
    return _BRIDGE[0]


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
