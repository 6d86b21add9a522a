#!/usr/bin/env python3
"""Install, upgrade or remove the gimp-dfi plug-in for GIMP 3.

    python install/gimp_plugin.py              # install or upgrade in place
    python install/gimp_plugin.py --uninstall  # remove exactly what was installed

It copies ``plugin/`` and the wire package (``daemon/wire/``, imported as
``dfi_wire`` here and in the repo) unchanged into ``<GIMP 3 profile>/plug-ins/gimp-dfi/``,
records where ``dfi`` and the daemon's endpoint are (``gimp-dfi.json``), makes
pyzmq and msgpack importable by GIMP's Python (the distro's packages for a system
Python, else wheels for GIMP's Python version vendored into the plug-in folder),
then checks the result with GIMP's own Python and prints what it did.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = "gimp-dfi"
FLATPAK_ID = "org.gimp.GIMP"
MANIFEST = "install-manifest.json"
CONFIG = "gimp-dfi.json"
FLATPAK_ENDPOINT = "tcp://127.0.0.1:5557"  # the Flatpak sandbox cannot see the user's runtime dir
# (source in the repo, destination in the plug-in folder, mode)
FILES = (
    ("plugin/gimp-dfi.py", "gimp-dfi.py", 0o755),
    ("plugin/dfi_bridge.py", "dfi_bridge.py", 0o644),
)
WIRE = ("daemon/wire", "dfi_wire")  # the package the plug-in imports, copied file for file
VENDOR_PACKAGES = ("pyzmq", "msgpack")
DISTRO_PACKAGES = {  # package manager -> (install command, package names)
    "apt-get": (["apt-get", "install", "-y"], ["python3-zmq", "python3-msgpack"]),
    "dnf": (["dnf", "install", "-y"], ["python3-zmq", "python3-msgpack"]),
    "pacman": (["pacman", "-S", "--noconfirm"], ["python-pyzmq", "python-msgpack"]),
    "zypper": (["zypper", "--non-interactive", "install"], ["python3-pyzmq", "python3-msgpack"]),
}


class InstallError(Exception):
    """Something the user must fix; the message says what."""


@dataclass
class Target:
    """Where GIMP looks for plug-ins and which Python runs them."""

    kind: str  # linux | flatpak | macos | windows | custom
    profile: Path  # GIMP 3 profile folder as this process sees it (under --root if given)
    python: list[str]  # argv that runs GIMP's Python
    system_python: bool  # the distro's Python (use distro packages) rather than one bundled with GIMP
    root: Path | None = None  # GIMP runs inside this root (chroot / container)
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.profile / "plug-ins" / NAME

    def inside(self, path: Path) -> str:
        """``path`` as GIMP's Python sees it."""
        if self.root is None:
            return str(path)
        return "/" + str(path.resolve().relative_to(self.root.resolve()))


# ---------------------------------------------------------------------------- finding GIMP


def default_profile(kind: str) -> Path:
    """GIMP 3's user folder per platform (GIMP3_DIRECTORY overrides it, as in GIMP)."""
    home = Path.home()
    if os.environ.get("GIMP3_DIRECTORY") and kind != "flatpak":
        return Path(os.environ["GIMP3_DIRECTORY"])
    if kind == "flatpak":
        return home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP" / "3.0"
    if kind == "macos":
        return home / "Library" / "Application Support" / "GIMP" / "3.0"
    if kind == "windows":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP" / "3.0"
    return Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "GIMP" / "3.0"


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


def bundled_python(kind: str) -> list[str] | None:
    if kind == "macos":
        exe = Path("/Applications/GIMP.app/Contents/MacOS/python3")
        return [str(exe)] if exe.exists() else None
    if kind == "windows":
        for base in (os.environ.get("ProgramFiles", r"C:\Program Files"), os.environ.get("LOCALAPPDATA", "")):
            for name in ("GIMP 3", "Programs/GIMP 3"):
                exe = Path(base) / name / "bin" / "python.exe"
                if exe.exists():
                    return [str(exe)]
    return None


def detect(args: argparse.Namespace) -> Target:
    root = Path(args.root).resolve() if args.root else None
    kind = args.target
    if kind == "auto":
        system = platform.system()
        if system == "Darwin":
            kind = "macos"
        elif system == "Windows":
            kind = "windows"
        elif root is None and not shutil.which("gimp-3.0") and not interp_python(None) and _has_flatpak_gimp():
            kind = "flatpak"
        else:
            kind = "linux"
    profile = Path(args.profile) if args.profile else default_profile(kind)
    if root is not None:  # the same path, inside the root
        profile = root / Path(os.path.abspath(profile)).relative_to("/")
    notes: list[str] = []
    if args.gimp_python:
        python, system_python = split(args.gimp_python), False
    elif kind == "flatpak":
        python, system_python = ["flatpak", "run", "--command=python3", FLATPAK_ID], False
    elif kind in ("macos", "windows"):
        python, system_python = bundled_python(kind) or [], False
        if not python:
            notes.append(f"GIMP 3's bundled Python was not found; pass --gimp-python to check imports ({kind}).")
    else:
        found = interp_python(root) or "/usr/bin/python3"
        python = ["chroot", str(root), found] if root else [found]
        system_python = found.startswith("/usr/bin/")
    return Target(kind, profile, python, system_python, root, notes)


def _has_flatpak_gimp() -> bool:
    if not shutil.which("flatpak"):
        return False
    return subprocess.run(["flatpak", "info", FLATPAK_ID], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------- what to record


def default_dfi() -> list[str]:
    """The dfi executable of this environment (the venv the installer runs in), else the one on PATH."""
    here = Path(sys.executable).parent / ("dfi.exe" if os.name == "nt" else "dfi")
    if here.exists():
        return [str(here)]
    found = shutil.which("dfi")
    return [found] if found else []


def default_endpoint(kind: str) -> str:
    if kind == "flatpak":
        return FLATPAK_ENDPOINT
    try:
        from dfi_daemon import paths  # present when run with the project's venv

        return paths.default_endpoint()
    except ImportError:
        return ""


def split(command: str) -> list[str]:
    """A command line as argv; an existing path is one argument (Windows paths have spaces and backslashes)."""
    if Path(command).exists():
        return [command]
    return shlex.split(command, posix=os.name != "nt")


def settings(args: argparse.Namespace, target: Target) -> dict:
    """What gimp-dfi.json records: options given now, else those of the previous install, else defaults."""
    try:
        old = json.loads((target.folder / CONFIG).read_text())
    except (OSError, ValueError):
        old = {}
    if args.dfi is not None:
        dfi = split(args.dfi)
        if target.kind == "flatpak":
            dfi = ["flatpak-spawn", "--host", *dfi]
    elif "dfi" in old:
        dfi = old["dfi"]
    elif target.root is not None:
        dfi = []  # this environment's dfi cannot run inside the root
    else:
        dfi = default_dfi()
        if target.kind == "flatpak" and dfi:
            dfi = ["flatpak-spawn", "--host", *dfi]
    if dfi and dfi[0] == "flatpak-spawn":
        target.notes.append("Flatpak GIMP can start the daemon only with permission to run host commands: "
                            f"flatpak override --user --talk-name=org.freedesktop.Flatpak {FLATPAK_ID} "
                            f"(or start it yourself: dfi daemon start --endpoint {FLATPAK_ENDPOINT}).")
    endpoint = args.endpoint or old.get("endpoint")
    if not endpoint:
        # a root or sandbox cannot see the user's runtime folder: loopback TCP reaches the host's daemon
        endpoint = FLATPAK_ENDPOINT if target.root is not None else default_endpoint(target.kind)
    if not endpoint:
        raise InstallError("Could not work out the daemon's endpoint: run this installer with the project's "
                           "Python (.venv/bin/python install/gimp_plugin.py) or pass --endpoint.")
    autostart = args.autostart if args.autostart is not None else old.get("autostart_requested", True)
    if autostart and not dfi:
        target.notes.append("No 'dfi' to start the daemon with: automatic start is off until you pass --dfi "
                            f"(start it yourself: dfi daemon start --endpoint {endpoint}).")
    daemon_args = split(args.daemon_args) if args.daemon_args is not None else old.get("daemon_args", [])
    return {"endpoint": endpoint, "dfi": dfi, "daemon_args": daemon_args, "autostart": bool(autostart and dfi),
            "autostart_requested": autostart, "installed_from": str(REPO)}


# ---------------------------------------------------------------------------- files


def _write(dest: Path, data: bytes, mode: int) -> None:
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
        return list(json.loads((folder / MANIFEST).read_text())["files"])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InstallError(f"{folder / MANIFEST} is unreadable ({e}); remove {folder} by hand.") from None


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


def install_files(target: Target, config: dict, vendored: list[tuple[str, bytes]]) -> list[str]:
    folder = target.folder
    written: list[str] = []
    for src, dest, mode in FILES:
        _write(folder / dest, (REPO / src).read_bytes(), mode)
        written.append(dest)
    src_dir, dest_dir = WIRE
    for src in sorted((REPO / src_dir).glob("*.py")):
        dest = f"{dest_dir}/{src.name}"
        _write(folder / dest, src.read_bytes(), 0o644)
        written.append(dest)
    _write(folder / CONFIG, (json.dumps(config, indent=2) + "\n").encode(), 0o644)
    written.append(CONFIG)
    for rel, data in vendored:
        _write(folder / "vendor" / rel, data, 0o755 if rel.endswith(".so") else 0o644)
        written.append(f"vendor/{rel}")
    return written


# ---------------------------------------------------------------------------- GIMP's Python


def run_python(target: Target, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    if not target.python:
        raise InstallError("GIMP's Python is unknown; pass --gimp-python (e.g. the python.exe in GIMP's bin folder).")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave nothing in the plug-in folder that the manifest does not list
    try:
        return subprocess.run([*target.python, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"Could not run GIMP's Python ({shlex.join(target.python)}): {e}") from None


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


def probe(target: Target, extra_path: list[str] = ()) -> dict:
    code = f"import sys; sys.path[:0] = {list(extra_path)!r}\n" + IMPORT_CHECK
    res = run_python(target, code)
    if res.returncode != 0:
        raise InstallError(f"GIMP's Python ({shlex.join(target.python)}) failed:\n{res.stderr.strip()[-800:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def distro_install(target: Target, log: list[str]) -> bool:
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


def wheel_platforms(target: Target) -> list[str]:
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


def vendor_wheels(target: Target, version: list[int], wheel_dir: str | None, log: list[str]) -> list[tuple[str, bytes]]:
    """pyzmq and msgpack wheels for GIMP's Python version, unpacked (their package folders only)."""
    with tempfile.TemporaryDirectory() as tmp:
        if wheel_dir:
            src = Path(wheel_dir)
        else:
            src = Path(tmp)
            py = f"{version[0]}.{version[1]}"
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                   "--python-version", py, "--implementation", "cp", "-d", tmp]
            for plat in wheel_platforms(target):
                cmd += ["--platform", plat]
            res = subprocess.run([*cmd, *VENDOR_PACKAGES], capture_output=True, text=True)
            if res.returncode != 0:
                raise InstallError(f"Downloading pyzmq and msgpack wheels for Python {py} failed:\n"
                                   f"{res.stderr.strip()[-800:]}\nCheck the network, or pass --wheels DIR "
                                   "with the two wheels.")
        files: list[tuple[str, bytes]] = []
        wheels = []
        for pkg in VENDOR_PACKAGES:  # one wheel per package, so nothing is unpacked over another version
            found = sorted(src.glob(f"{pkg}-*.whl"))
            if not found:
                raise InstallError(f"No {pkg} wheel in {src}.")
            wheels.append(found[-1])
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    top = info.filename.split("/")[0]
                    if info.is_dir() or top.endswith((".dist-info", ".data")):
                        continue
                    files.append((info.filename, z.read(info)))
            log.append(f"vendored {whl.name}")
        return files


# ---------------------------------------------------------------------------- verify


VERIFY = """
import json, sys, py_compile
sys.path[:0] = {paths!r}
import zmq, msgpack
import dfi_wire.protocol, dfi_wire.client, dfi_bridge
py_compile.compile({plugin!r}, doraise=True, cfile={cfile!r})
s = dfi_bridge.Settings.load()
print(json.dumps({{"zmq": zmq.__file__, "msgpack": msgpack.__file__, "endpoint": s.endpoint,
                  "procedures": [m.proc for m in dfi_bridge.MENU], "python": sys.version.split()[0]}}))
"""


def verify(target: Target) -> dict:
    folder = target.folder
    plugin = folder / "gimp-dfi.py"
    if os.name == "posix" and not os.access(plugin, os.X_OK):
        raise InstallError(f"{plugin} is not executable; GIMP would skip it silently.")
    if not plugin.read_bytes().startswith(b"#!/usr/bin/env python3\n"):
        raise InstallError(f"{plugin} lacks the python3 shebang with LF line endings.")
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        code = VERIFY.format(paths=[target.inside(folder / "vendor"), target.inside(folder)],
                             plugin=target.inside(plugin), cfile=target.inside(Path(tmp) / "check.pyc"))
        res = run_python(target, code)
    if res.returncode != 0:
        raise InstallError(f"The plug-in does not import under GIMP's Python ({shlex.join(target.python)}):\n"
                           f"{res.stderr.strip()[-1200:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main


def install(args: argparse.Namespace) -> int:
    target = detect(args)
    folder = target.folder
    log: list[str] = [f"GIMP: {target.kind}, plug-in folder {folder}"]
    old = read_manifest(folder)
    config = settings(args, target)

    vendored: list[tuple[str, bytes]] = []
    if args.vendor != "never" and target.python:
        found = probe(target)
        missing = [m for m, v in found["modules"].items() if v is None]
        if missing and target.system_python and args.vendor == "auto" and distro_install(target, log):
            missing = [m for m, v in probe(target)["modules"].items() if v is None]
        if args.vendor == "always" or missing:
            why = "as asked" if args.vendor == "always" else f"{', '.join(missing)} missing in GIMP's Python"
            log.append(f"vendoring pyzmq and msgpack for Python {found['version'][0]}.{found['version'][1]} ({why})")
            vendored = vendor_wheels(target, found["version"], args.wheels, log)
        else:
            log.append("GIMP's Python already has " + "; ".join(f"{m} {v}" for m, v in found["modules"].items()))

    written = install_files(target, config, vendored)
    stale = [f for f in old if f not in written and f != MANIFEST]
    remove_files(folder, stale)
    _write(folder / MANIFEST, (json.dumps({"files": [*written, MANIFEST]}, indent=2) + "\n").encode(), 0o644)
    log.append(f"{'upgraded' if old else 'installed'} {len(written)} files"
               + (f", removed {len(stale)} stale" if stale else ""))
    log.append(f"daemon endpoint {config['endpoint']}; auto-start "
               + (f"with {shlex.join(config['dfi'])}" if config["autostart"] else "off"))
    if target.python and not args.no_verify:
        try:
            checked = verify(target)
        except InstallError as e:  # a plug-in that cannot load would only print tracebacks in GIMP
            remove_files(folder, [*written, MANIFEST])
            raise InstallError(f"{e}\nThe plug-in was removed again; fix the above and re-run.") from None
        log.append(f"verified with GIMP's Python {checked['python']}: plug-in executable, imports OK "
                   f"(zmq from {checked['zmq']}), {len(checked['procedures'])} procedures")
    for line in log + target.notes:
        print(f"gimp-dfi: {line}")
    print("gimp-dfi: restart GIMP, then look under Filters → DFI.")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    folder = detect(args).folder
    names = read_manifest(folder)
    if not names:
        print(f"gimp-dfi: nothing to remove ({folder} has no {MANIFEST})")
        return 0
    removed = remove_files(folder, names)
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
    print(f"gimp-dfi: removed {removed} files from {folder}")
    if left:
        print(f"gimp-dfi: kept {len(left)} files it did not install: {', '.join(left[:5])}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gimp_plugin.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uninstall", action="store_true", help="remove exactly the files a previous install wrote")
    p.add_argument("--target", choices=("auto", "linux", "flatpak", "macos", "windows"), default="auto",
                   help="which GIMP to install for (auto: detect)")
    p.add_argument("--profile", help="GIMP 3 profile folder (default: the platform's; GIMP3_DIRECTORY)")
    p.add_argument("--root", help="GIMP runs inside this root (chroot/container): paths and its Python are in there")
    p.add_argument("--gimp-python", help="command that runs GIMP's Python (default: from GIMP's pygimp.interp)")
    p.add_argument("--endpoint", help="daemon endpoint to record (default: the daemon's default)")
    p.add_argument("--dfi", help="command that runs the dfi CLI, for auto-start (default: this venv's dfi)")
    p.add_argument("--daemon-args", help="extra options for the auto-started daemon, e.g. "
                   "'--device cuda --database PATH'")
    p.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=None,
                   help="start the daemon from GIMP when it is not running (default: on, or as installed before)")
    p.add_argument("--vendor", choices=("auto", "always", "never"), default="auto",
                   help="vendor pyzmq/msgpack wheels into the plug-in folder (auto: only when GIMP's Python lacks "
                        "them and the distro's packages cannot be installed)")
    p.add_argument("--wheels", help="folder with the pyzmq and msgpack wheels to vendor (default: pip download)")
    p.add_argument("--no-verify", action="store_true", help="skip the check with GIMP's Python")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return uninstall(args) if args.uninstall else install(args)
    except InstallError as e:
        print(f"gimp-dfi: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
