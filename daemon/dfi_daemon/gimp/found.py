"""The GIMP 3 installations on this machine, and where the gimp-dfi plug-in lives in each.

GIMP keeps one profile per major.minor (``~/.config/GIMP/3.0``, ``…/3.2``) and a new minor
version does not carry plug-in folders over from the old one, so "where is GIMP's plug-in
folder" has one answer per installed version. This module is the one source of truth for
that question, shared by the installer (``dfi gimp install``) and ``dfi doctor``; standard
library only.

Found from: versioned binaries on PATH (``gimp-3.2``, ``gimp-console-3.2``; plain ``gimp``,
``gimp-3``, ``gimp-console`` by their ``--version``), ``flatpak info org.gimp.GIMP``, macOS
app bundles (``Info.plist``), Windows install folders (``Program Files\\GIMP 3*\\bin``), and
existing ``GIMP/3.x`` profile folders. Inside a chroot (``root``) only its ``usr/bin`` and
``/root/.config/GIMP`` count.
"""

from __future__ import annotations

import json
import os
import platform
import plistlib
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

NAME = "gimp-dfi"  # the plug-in's folder and entry point name (GIMP wants plug-ins/NAME/NAME.py)
FLATPAK_ID = "org.gimp.GIMP"
MANIFEST = "install-manifest.json"
CONFIG = "gimp-dfi.json"  # dfi_plugin/dfi_bridge.py CONFIG_NAME
KEYS = "keys"  # dfi_plugin/dfi_bridge.py KEYS_DIR: the CURVE keys the plug-in presents on tcp:// endpoints
PLUGIN_FILES = (  # (file of the dfi_plugin package, destination in the plug-in folder, mode)
    ("gimp-dfi.py", "gimp-dfi.py", 0o755),
    ("dfi_bridge.py", "dfi_bridge.py", 0o644),
    ("dfi_link.py", "dfi_link.py", 0o644),  # the daemon connection, jobs and their progress
    ("dfi_preview.py", "dfi_preview.py", 0o644),  # the live preview window (GTK; interactive runs)
    ("dfi_live.py", "dfi_live.py", 0o644),  # the dialog's live strength slider (GTK; interactive runs)
)
WIRE = "dfi_wire"  # the wire package, copied file for file under its import name
KINDS = ("linux", "flatpak", "macos", "windows")
PROFILE_FOUND = "profile folder"  # how a GIMP known only by its profile folder (maybe removed since) is found
NATIVE = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}
VERSION_DIR = re.compile(r"^3\.\d+$")
VERSIONED_BINARY = re.compile(r"^gimp(?:-console)?-(3\.\d+)(?:\.exe)?$", re.IGNORECASE)
PLAIN_BINARIES = ("gimp-console-3", "gimp-3", "gimp-console", "gimp")
VERSION_TEXT = re.compile(r"\bversion\s+(3\.\d+)", re.IGNORECASE)
Runner = Callable[..., subprocess.CompletedProcess]


class GimpError(Exception):
    """No GIMP where one was asked for, or GIMP's Python could not be run; the message says what to do."""


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


@dataclass
class Host:
    """Where to look: the platform, its environment and home (tests pass fake ones), or a chroot."""

    system: str = field(default_factory=platform.system)  # Linux | Darwin | Windows
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: Path = field(default_factory=Path.home)
    root: Path | None = None  # GIMP runs inside this root; its home there is /root
    run: Runner = subprocess.run

    @property
    def native(self) -> str:
        return NATIVE.get(self.system, "linux")

    def profile_base(self, kind: str) -> Path:
        """The folder that holds GIMP's per-version profiles (``…/GIMP``) for ``kind``."""
        if self.root is not None:
            return self.root / "root" / ".config" / "GIMP"
        if kind == "flatpak":
            return self.home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP"
        if kind == "macos":
            return self.home / "Library" / "Application Support" / "GIMP"
        if kind == "windows":
            return Path(self.env.get("APPDATA") or self.home / "AppData" / "Roaming") / "GIMP"
        return Path(self.env.get("XDG_CONFIG_HOME") or self.home / ".config") / "GIMP"

    def kinds(self) -> tuple[str, ...]:
        """The kinds of GIMP this host can have: its native one, and Flatpak on Linux."""
        if self.root is not None:
            return ("linux",)
        return ("linux", "flatpak") if self.native == "linux" else (self.native,)


@dataclass
class Gimp:
    """One GIMP 3.x as the plug-in sees it: its profile folder and the Python that runs its plug-ins."""

    version: str  # major.minor ("3.2", the profile folder's name); "" when only a profile folder was given
    kind: str  # linux | flatpak | macos | windows
    profile: Path  # as this process sees it (under the root if any)
    python: list[str] = field(default_factory=list)  # argv that runs GIMP's Python; [] when unknown
    system_python: bool = False  # the distro's Python (use distro packages) rather than one bundled with GIMP
    root: Path | None = None
    found: list[str] = field(default_factory=list)  # how it was found, for the report

    @property
    def label(self) -> str:
        name = f"GIMP {self.version}" if self.version else "GIMP"
        return name if self.kind == "linux" else f"{name} ({self.kind})"

    @property
    def folder(self) -> Path:
        return plugin_folder(self.profile)

    @property
    def how(self) -> str:
        """How it was found, on one line: "gimp-3.2, gimp-console-3.2 in /usr/bin; profile folder"."""
        groups: dict[str, list[str]] = {}
        for entry in self.found:
            name, sep, where = entry.partition(" in ")
            groups.setdefault(where if sep else entry, []).extend([name] if sep else [])
        return "; ".join(f"{', '.join(names)} in {where}" if names else where for where, names in groups.items())

    def inside(self, path: Path) -> str:
        """``path`` as GIMP's Python sees it."""
        if self.root is None:
            return str(path)
        return "/" + str(path.resolve().relative_to(self.root.resolve()))


def plugin_folder(profile: Path) -> Path:
    return profile / "plug-ins" / NAME


# ---------------------------------------------------------------------------- finding GIMP


def _version_of(exe: Path, host: Host) -> str | None:
    """major.minor of a GIMP binary: from its name, its symlink target's name, or ``--version``."""
    for name in (exe.name, exe.resolve().name):
        m = VERSIONED_BINARY.match(name)
        if m:
            return m.group(1)
    try:
        res = host.run([str(exe), "--version"], capture_output=True, text=True, timeout=20,
                       env={**host.env, "DISPLAY": ""})
    except (OSError, subprocess.SubprocessError):
        return None
    m = VERSION_TEXT.search(res.stdout + res.stderr)
    return m.group(1) if m else None


def binaries(host: Host) -> list[tuple[str, str]]:
    """(version, how) for every GIMP 3 binary on PATH (or in the root's /usr/bin)."""
    if host.root is not None:
        dirs = [host.root / "usr" / "bin", host.root / "usr" / "local" / "bin"]
    else:
        dirs = [Path(d) for d in host.env.get("PATH", "").split(os.pathsep) if d]
    found: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for d in dirs:
        if not d.is_dir():
            continue
        candidates = sorted(p for p in d.iterdir() if VERSIONED_BINARY.match(p.name))
        if host.root is None:  # a root's absolute symlinks point outside it; its versioned names are enough
            candidates += [d / n for n in PLAIN_BINARIES if (d / n).exists()]
            candidates += [d / f"{n}.exe" for n in PLAIN_BINARIES if (d / f"{n}.exe").exists()]
        for exe in candidates:
            real = exe.resolve()
            if real in seen or not os.access(exe, os.X_OK):
                continue
            seen.add(real)
            version = _version_of(exe, host)
            if version:
                found.append((version, f"{exe.name} in {d}"))
    return found


def flatpak_version(host: Host) -> str | None:
    """major.minor of the installed Flatpak GIMP, from ``flatpak info``; None without one."""
    exe = shutil.which("flatpak", path=host.env.get("PATH"))
    if host.root is not None or not exe:
        return None
    try:
        res = host.run([exe, "info", FLATPAK_ID], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^\s*Version:\s*(3\.\d+)", res.stdout, re.MULTILINE)
    return m.group(1) if res.returncode == 0 and m else None


def app_bundles(host: Host) -> list[tuple[str, str, list[str]]]:
    """(version, how, its Python) for each macOS ``GIMP*.app`` in /Applications or ~/Applications."""
    found = []
    for apps in (Path("/Applications"), host.home / "Applications"):
        for app in sorted(apps.glob("GIMP*.app")) if apps.is_dir() else []:
            try:
                info = plistlib.loads((app / "Contents" / "Info.plist").read_bytes())
            except (OSError, plistlib.InvalidFileException, ValueError):
                continue
            m = re.match(r"(3\.\d+)", str(info.get("CFBundleShortVersionString") or info.get("CFBundleVersion")))
            if m:
                python = app / "Contents" / "MacOS" / "python3"
                found.append((m.group(1), str(app), [str(python)] if python.exists() else []))
    return found


def windows_installs(host: Host) -> list[tuple[str, str, list[str]]]:
    """(version, how, its Python) for each ``GIMP 3*`` folder under Program Files (or the user's Programs)."""
    bases = [host.env.get(k) for k in ("ProgramFiles", "ProgramW6432", "ProgramFiles(x86)")]
    if host.env.get("LOCALAPPDATA"):
        bases.append(str(Path(host.env["LOCALAPPDATA"]) / "Programs"))
    found, seen = [], set()
    for base in (Path(b) for b in bases if b):
        for folder in sorted(base.glob("GIMP 3*")) if base.is_dir() else []:
            bin_dir = folder / "bin"
            versions = {m.group(1) for p in (bin_dir.iterdir() if bin_dir.is_dir() else [])
                        if (m := VERSIONED_BINARY.match(p.name))}
            python = next(([str(bin_dir / n)] for n in ("python.exe", "python3.exe") if (bin_dir / n).exists()), [])
            for version in sorted(versions - seen, key=version_key):
                seen.add(version)
                found.append((version, str(folder), python))
    return found


def profiles(host: Host, kind: str) -> list[Path]:
    """The existing GIMP 3.x profile folders of ``kind``."""
    base = host.profile_base(kind)
    return sorted((p for p in base.glob("3.*") if p.is_dir() and VERSION_DIR.match(p.name)),
                  key=lambda p: version_key(p.name)) if base.is_dir() else []


def interp_python(root: Path | None) -> str | None:
    """The Python GIMP runs plug-ins with, from a pygimp.interp file if its package ships one.

    Debian's GIMP ships none: plug-ins then run through their ``#!/usr/bin/env python3``
    shebang, which is the system Python for a GIMP started from the desktop.
    """
    base = root or Path("/")
    for pattern in ("usr/lib/gimp/3.0/interpreters/*.interp", "usr/lib/*/gimp/3.0/interpreters/*.interp",
                    "usr/lib64/gimp/3.0/interpreters/*.interp", "usr/local/lib/gimp/3.0/interpreters/*.interp"):
        for interp in sorted(base.glob(pattern)):
            for line in interp.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() in ("python", "python3") and value.strip():
                    return value.strip()
    return None


def default_python(kind: str, root: Path | None) -> tuple[list[str], bool]:
    """(argv of GIMP's Python, whether it is the distro's) where no bundle told us."""
    if kind == "flatpak":
        return ["flatpak", "run", "--command=python3", FLATPAK_ID], False
    if kind in ("macos", "windows"):
        return [], False
    found = interp_python(root) or "/usr/bin/python3"
    return (["chroot", str(root), found] if root else [found]), found.startswith("/usr/bin/")


def find(host: Host) -> list[Gimp]:
    """Every GIMP 3.x found on ``host``, one per (kind, version), sorted by kind and version."""
    found: dict[tuple[str, str], Gimp] = {}

    def add(kind: str, version: str, how: str, python: list[str] | None = None) -> None:
        g = found.get((kind, version))
        if g is None:
            py, system = default_python(kind, host.root)
            g = found[(kind, version)] = Gimp(version, kind, host.profile_base(kind) / version, py, system,
                                              host.root)
        if python and not g.python:
            g.python = python
        g.found.append(how)

    kinds = host.kinds()
    native = kinds[0] if host.root is not None else host.native
    for version, how in binaries(host):
        add(native, version, how)
    if native == "macos":
        for version, how, python in app_bundles(host):
            add("macos", version, how, python)
    if native == "windows":
        for version, how, python in windows_installs(host):
            add("windows", version, how, python)
    if "flatpak" in kinds:
        version = flatpak_version(host)
        if version:
            add("flatpak", version, f"flatpak {FLATPAK_ID}")
    for kind in kinds:
        for profile in profiles(host, kind):
            add(kind, profile.name, PROFILE_FOUND)
    return sorted(found.values(), key=lambda g: (KINDS.index(g.kind), version_key(g.version)))


def select(host: Host, kind: str = "auto", versions: list[str] | None = None, profile: str | None = None,
           python: list[str] | None = None) -> list[Gimp]:
    """The GIMPs to act on: exactly ``profile`` if given (or $GIMP3_DIRECTORY, as GIMP honours it), else those
    found, limited to ``kind`` and ``versions``; a version asked for but not found gets its default profile."""
    native = host.native if kind == "auto" else kind
    given = profile or (host.env.get("GIMP3_DIRECTORY") if native != "flatpak" else None)
    if given:
        path = Path(os.path.abspath(os.path.expanduser(given)))
        if host.root is not None:  # the same path, inside the root
            path = host.root / path.relative_to(path.anchor)
        version = path.name if VERSION_DIR.match(path.name) else (versions[0] if versions and len(versions) == 1
                                                                   else "")
        py, system = default_python(native, host.root)
        picked = [Gimp(version, native, path, py, system, host.root, ["--profile" if profile else "GIMP3_DIRECTORY"])]
        if native in ("macos", "windows"):
            same = [g for g in find(host) if g.kind == native and g.python and g.version in (version, "")]
            picked[0].python = same[-1].python if same else []
    else:
        found = [g for g in find(host) if kind == "auto" or g.kind == kind]
        picked = [g for g in found if not versions or g.version in versions]
        for version in versions or []:
            if not any(g.version == version for g in picked):
                py, system = default_python(native, host.root)
                picked.append(Gimp(version, native, host.profile_base(native) / version, py, system, host.root,
                                   ["--gimp-version (not found on this machine)"]))
    if python:
        for g in picked:
            g.python, g.system_python = list(python), False
    return picked


def installed(host: Host, kind: str = "auto") -> list[tuple[str, Path]]:
    """(kind, profile) of each profile folder that holds an installed plug-in (a manifest), GIMP there or not."""
    kinds = host.kinds() if kind == "auto" else (kind,)
    return [(k, p) for k in kinds for p in profiles(host, k) if (plugin_folder(p) / MANIFEST).is_file()]


def parse_versions(values: list[str] | None) -> list[str]:
    """``--gimp-version`` values (repeatable, comma lists) as a list of major.minor; ValueError on a bad one."""
    out: list[str] = []
    for item in (v.strip() for value in values or [] for v in value.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(3\.\d+)(?:\.\d+)?", item)
        if not m:
            raise ValueError(f"--gimp-version {item!r}: expected a GIMP 3 version such as 3.0 or 3.2")
        if m.group(1) not in out:
            out.append(m.group(1))
    return out


# ---------------------------------------------------------------------------- GIMP's Python


def run_python(gimp: Gimp, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` with GIMP's Python, in a clean environment (no venv leaks in, no bytecode left behind)."""
    if not gimp.python:
        raise GimpError(f"{gimp.label}'s Python is unknown; pass --gimp-python (e.g. the python.exe in GIMP's "
                        "bin folder).")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave nothing in the plug-in folder that the manifest does not list
    try:
        return subprocess.run([*gimp.python, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GimpError(f"Could not run {gimp.label}'s Python ({' '.join(gimp.python)}): {e}") from None


LOAD_CHECK = """
import json, sys, py_compile
sys.path[:0] = {paths!r}
import zmq, msgpack
import dfi_wire.protocol, dfi_wire.client, dfi_bridge, dfi_link
py_compile.compile({plugin!r}, doraise=True, cfile={cfile!r})
s = dfi_bridge.Settings.load()
print(json.dumps({{"zmq": zmq.__file__, "msgpack": msgpack.__file__, "endpoint": s.endpoint,
                  "procedures": [m.proc for m in dfi_bridge.MENU], "python": sys.version.split()[0]}}))
"""


def check_plugin(gimp: Gimp, scratch: Path) -> dict:
    """Load the installed plug-in as GIMP would (shebang, run bit, imports, compile) with GIMP's own Python.

    ``scratch`` is a folder inside the root (if any) for the compile check's output. Returns what the
    plug-in's Python reported (versions, module files, procedures); raises GimpError with the reason.
    """
    folder = gimp.folder
    plugin = folder / f"{NAME}.py"
    if not plugin.is_file():
        raise GimpError(f"{plugin} is missing.")
    if os.name == "posix" and not os.access(plugin, os.X_OK):
        raise GimpError(f"{plugin} is not executable; GIMP would skip it silently.")
    if not plugin.read_bytes().startswith(b"#!/usr/bin/env python3\n"):
        raise GimpError(f"{plugin} lacks the python3 shebang with LF line endings.")
    code = LOAD_CHECK.format(paths=[gimp.inside(folder / "vendor"), gimp.inside(folder)],
                             plugin=gimp.inside(plugin), cfile=gimp.inside(scratch / "check.pyc"))
    res = run_python(gimp, code)
    if res.returncode != 0:
        raise GimpError(f"The plug-in does not import under {gimp.label}'s Python ({' '.join(gimp.python)}):\n"
                        f"{res.stderr.strip()[-1200:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])

