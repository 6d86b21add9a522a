"""A plug-in module imported from a plug-in folder that ``dfi gimp install`` made (the files GIMP would run,
with dfi_wire beside them), outside GIMP; the imported modules are forgotten again afterwards."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

DFI = str(Path(sys.executable).parent / "dfi")
PLUGIN_MODULES = ("dfi_bridge", "dfi_link", "dfi_preview", "dfi_live")


@contextmanager
def installed_module(profile: Path, name: str) -> Iterator[ModuleType]:
    """``name`` as installed into the GIMP 3.0 ``profile`` (which the installer must install it into)."""
    subprocess.run([DFI, "gimp", "install", "--profile", str(profile), "--target", "linux", "--endpoint",
                    "ipc:///nonexistent/daemon.sock", "--no-verify", "--vendor", "never"], check=True,
                   capture_output=True)
    folder = str(profile / "plug-ins" / "gimp-dfi")
    sys.path.insert(0, folder)
    try:
        module = importlib.import_module(name)
        assert module.__file__.startswith(folder)
        yield module
    finally:
        sys.path.remove(folder)
        for loaded in [m for m in sys.modules if m in PLUGIN_MODULES or m.startswith("dfi_wire")]:
            del sys.modules[loaded]
