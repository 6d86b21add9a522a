"""The plug-in folder's files: atomic writes, the manifest of what was installed, exact removal.

The manifest (``install-manifest.json``) lists every file the installer wrote with its SHA-256,
so an upgrade removes what an older version left, an uninstall removes exactly that and nothing
of the user's, and ``dfi doctor`` can tell an intact install from a damaged or outdated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata, resources
from pathlib import Path

import dfi_plugin
import dfi_wire

from . import found
from .targets import InstallError


def write(dest: Path, data: bytes, mode: int) -> None:
    """Atomic write with a fresh mtime (GIMP re-queries a plug-in only when its mtime changes)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / found.MANIFEST).read_text())["files"])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InstallError(f"{folder / found.MANIFEST} is unreadable ({e}); remove {folder} by hand.") from None


def remove_files(folder: Path, names: list[str]) -> int:
    """Remove the listed files, their bytecode and the folders they leave empty; returns how many were removed."""
    removed = 0
    for d in {(folder / rel).parent for rel in names}:
        shutil.rmtree(d / "__pycache__", ignore_errors=True)  # written by GIMP's Python when it imports ours
    for rel in sorted(names, key=lambda s: -s.count("/")):
        path = folder / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
        parent = path.parent
        while parent != folder.parent and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return removed


def package_version() -> str:
    """The installed project's version (the wheel's or the editable install's metadata)."""
    try:
        return metadata.version("gimp-dfi")
    except metadata.PackageNotFoundError:
        return "?"


def installed_from() -> str:
    """Where the installing package lives: a checkout's folder or a venv's site-packages."""
    return str(Path(dfi_plugin.__file__).resolve().parent.parent)


def plugin_sources() -> list[tuple[str, bytes, int]]:
    """(destination, bytes, mode) of the plug-in and the wire package, read from the installed packages
    themselves, so what lands in GIMP is byte for byte the package data of this ``dfi``."""
    plugin = resources.files(dfi_plugin)
    out = [(dest, plugin.joinpath(src).read_bytes(), mode) for src, dest, mode in found.PLUGIN_FILES]
    wire = Path(dfi_wire.__file__).resolve().parent
    out += [(f"{found.WIRE}/{src.name}", src.read_bytes(), 0o644) for src in sorted(wire.glob("*.py"))]
    return out


def payload(config: dict, vendored: list[tuple[str, bytes]], keys: list[tuple[str, bytes]]) -> list[tuple[str, bytes,
                                                                                                          int]]:
    """(path in the plug-in folder, bytes, mode) of everything one install writes."""
    out = plugin_sources()
    out.append((found.CONFIG, (json.dumps(config, indent=2) + "\n").encode(), 0o644))
    out += [(f"vendor/{rel}", data, 0o755 if rel.endswith(".so") else 0o644) for rel, data in vendored]
    out += [(f"{found.KEYS}/{rel}", data, 0o600) for rel, data in keys]
    return out


def install_files(folder: Path, files: list[tuple[str, bytes, int]], python: list[str]) -> list[str]:
    """Write ``files`` and the manifest; the key folder is private (0700) before a key lands in it.

    The manifest also records ``python``, the GIMP Python the install was checked with, for
    ``dfi doctor --python-check``."""
    if any(rel.startswith(f"{found.KEYS}/") for rel, _, _ in files):
        keys = folder / found.KEYS
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys.chmod(0o700)
    for rel, data, mode in files:
        write(folder / rel, data, mode)
    written = [rel for rel, _, _ in files]
    manifest = {"files": [*written, found.MANIFEST], "version": package_version(), "installed_from": installed_from(),
                "gimp_python": python, "sha256": {rel: hashlib.sha256(data).hexdigest() for rel, data, _ in files}}
    write(folder / found.MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
    return written
