"""The plug-in folder's files: atomic writes, the manifest of what was installed, exact removal.

The manifest (``install-manifest.json``) lists every file the installer wrote with its SHA-256,
so an upgrade removes what an older version left, an uninstall removes exactly that and nothing
of the user's, and ``dfi doctor`` can tell an intact install from a damaged or outdated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from plugin_targets import REPO, InstallError, gimps


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
        return list(json.loads((folder / gimps.MANIFEST).read_text())["files"])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InstallError(f"{folder / gimps.MANIFEST} is unreadable ({e}); remove {folder} by hand.") from None


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
    """The project's version, from pyproject.toml (stdlib only: tomllib is 3.11+)."""
    try:
        m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    except OSError:
        return "?"
    return m.group(1) if m else "?"


def payload(config: dict, vendored: list[tuple[str, bytes]], keys: list[tuple[str, bytes]]) -> list[tuple[str, bytes,
                                                                                                          int]]:
    """(path in the plug-in folder, bytes, mode) of everything one install writes."""
    out = [(dest, (REPO / src).read_bytes(), mode) for src, dest, mode in gimps.PLUGIN_FILES]
    src_dir, dest_dir = gimps.WIRE
    out += [(f"{dest_dir}/{src.name}", src.read_bytes(), 0o644) for src in sorted((REPO / src_dir).glob("*.py"))]
    out.append((gimps.CONFIG, (json.dumps(config, indent=2) + "\n").encode(), 0o644))
    out += [(f"vendor/{rel}", data, 0o755 if rel.endswith(".so") else 0o644) for rel, data in vendored]
    out += [(f"{gimps.KEYS}/{rel}", data, 0o600) for rel, data in keys]
    return out


def install_files(folder: Path, files: list[tuple[str, bytes, int]], python: list[str]) -> list[str]:
    """Write ``files`` and the manifest; the key folder is private (0700) before a key lands in it.

    The manifest also records ``python``, the GIMP Python the install was checked with, for
    ``dfi doctor --python-check``."""
    if any(rel.startswith(f"{gimps.KEYS}/") for rel, _, _ in files):
        keys = folder / gimps.KEYS
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys.chmod(0o700)
    for rel, data, mode in files:
        write(folder / rel, data, mode)
    written = [rel for rel, _, _ in files]
    manifest = {"files": [*written, gimps.MANIFEST], "version": package_version(), "installed_from": str(REPO),
                "gimp_python": python, "sha256": {rel: hashlib.sha256(data).hexdigest() for rel, data, _ in files}}
    write(folder / gimps.MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), 0o644)
    return written
