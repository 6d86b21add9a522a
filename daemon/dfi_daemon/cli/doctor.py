"""``dfi doctor``: is the plug-in installed and loading in every GIMP 3 here, and does its daemon answer?

A GIMP upgrade (3.0 → 3.2) starts from a new profile without the plug-in, so the menu vanishes
without an error anywhere; this command is where that becomes visible. For each GIMP found by
``dfi_daemon.gimp.found`` (the installer's own detection) it says, one line per check: whether the
plug-in is installed there and its files are intact and the same as this gimp-dfi's, whether GIMP
registered its procedures (GIMP's ``pluginrc``), optionally whether that GIMP's Python loads it
(``--python-check``), which endpoint it uses and whether its CURVE keys are the daemon's; then,
per endpoint, whether a daemon answers there, with the keys the plug-in would present, and with
which weights, device and database. Each problem comes with what to run. Exit 1 when something
needs fixing. Talks to the daemon through dfi_wire only: no torch, no engine, no server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import paths
from ..gimp import found as gimps
from ..gimp.config import default_dfi
from ..gimp.files import installed_from, plugin_sources
from . import gpu

OK, NOTE, FIX = "ok", "note", "fix"


@dataclass
class Check:
    """One line of the report: ``status`` ok | note (nothing to fix) | fix (exit 1), and what to do."""

    status: str
    subject: str  # "GIMP 3.2", "daemon tcp://…"
    message: str
    fix: str = ""
    topic: str = ""  # installed | registered | endpoint | python | daemon: what a script may look for
    command: list[str] | None = None  # the fix as a command --fix may run (the installer), if it is one

    def line(self) -> str:
        return f"{self.status:<5} {self.subject}: {self.message}" + (f": {self.fix}" if self.fix else "")


def sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def expected_sources() -> tuple[dict[str, str], str]:
    """({file in the plug-in folder: sha256} of this gimp-dfi's plug-in and wire files, where they come from)."""
    out = {dest: hashlib.sha256(data).hexdigest() for dest, data, _ in plugin_sources()}
    return out, installed_from()


def installer_argv(args: argparse.Namespace, versions: list[str], manifests: list[dict]) -> list[str]:
    """The installer as --fix runs it: this dfi's own ``dfi gimp install``, as the earlier install was checked."""
    argv = [sys.executable, "-m", "dfi_daemon.cli", "gimp", "install", *_install_options(args, versions)]
    earlier = next((m["gimp_python"] for m in manifests if m.get("gimp_python")), None)
    return argv + ["--gimp-python", shlex.join(earlier)] if earlier else argv


def installer_command(args: argparse.Namespace, versions: list[str], manifests: list[dict] | None = None) -> str:
    """The command that installs into ``versions``, as this user would type it."""
    dfi = default_dfi() or ["dfi"]  # this environment's dfi, so the command works as printed
    return "run " + shlex.join([*dfi, "gimp", "install", *_install_options(args, versions)])


def _install_options(args: argparse.Namespace, versions: list[str]) -> list[str]:
    argv: list[str] = []
    for flag in ("root", "profile"):
        if getattr(args, flag, None):
            argv += [f"--{flag}", getattr(args, flag)]
    for v in versions:
        if v and not args.profile:
            argv += ["--gimp-version", v]
    return argv


def read_json(path: Path) -> tuple[dict | None, str]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as e:
        return None, f"{path} is unreadable ({e})"
    return (raw, "") if isinstance(raw, dict) else (None, f"{path} is not a JSON object")


def file_checks(g: gimps.Gimp, manifest: dict) -> Check:
    """Intact (as the manifest recorded) and current (the same as this gimp-dfi's plug-in and wire files)?"""
    folder, label = g.folder, g.label
    recorded: dict[str, str] = manifest.get("sha256") or {}
    listed = [f for f in manifest.get("files", []) if f != gimps.MANIFEST]
    missing = [f for f in listed if not (folder / f).is_file()]
    # the code, not the settings (the user may edit them) nor the keys (the endpoint check looks at those)
    changed = [f for f, h in recorded.items() if f not in missing and f != gimps.CONFIG
               and not f.startswith(f"{gimps.KEYS}/") and sha256(folder / f) != h]
    if missing or changed:
        what = (f"{len(missing)} files missing ({', '.join(missing[:3])})" if missing else
                f"{len(changed)} files changed since the install ({', '.join(changed[:3])})")
        return Check(FIX, label, f"the install in {folder} is damaged: {what}", "")
    want, origin = expected_sources()
    have = {f: sha256(folder / f) for f in listed if f in want or f.startswith(f"{gimps.WIRE}/")}
    differ = sorted(f for f in set(want) | set(have) if want.get(f) != have.get(f))
    version = manifest.get("version", "?")
    if differ:
        return Check(FIX, label, f"installed in {folder} (gimp-dfi {version}), but {len(differ)} files differ from "
                     f"this gimp-dfi's ({origin}: {', '.join(differ[:3])}); an older install", "")
    return Check(OK, label, f"installed in {folder}, {len(listed)} files intact and the same as {origin} "
                 f"(gimp-dfi {version})")


def pluginrc_procedures(gimp: gimps.Gimp) -> tuple[str, list[str]]:
    """What GIMP's own plug-in cache (``<profile>/pluginrc``) says about the plug-in.

    ("registered", procedures) when it lists the installed file with its current mtime;
    ("stale", …) when it lists an older copy or predates the install (GIMP has not started since);
    ("missing", []) when GIMP wrote it after the install without the plug-in (it failed to load);
    ("no-pluginrc", []) when GIMP never started with this profile.
    """
    rc, plugin = gimp.profile / "pluginrc", gimp.folder / f"{gimps.NAME}.py"
    try:
        text, rc_mtime = rc.read_text(errors="replace"), rc.stat().st_mtime
    except OSError:
        return "no-pluginrc", []
    entry = re.escape(f"/plug-ins/{gimps.NAME}/{gimps.NAME}.py")
    m = re.search(r'^\(plug-in-def "[^"]*' + entry + r'" (\d+)\n(.*?)(?=^\(plug-in-def |\Z)', text,
                  re.MULTILINE | re.DOTALL)
    try:
        mtime = int(plugin.stat().st_mtime)
    except OSError:
        mtime = None
    if m is None:
        return ("missing" if mtime is not None and rc_mtime > mtime else "stale"), []
    procs = re.findall(r'^\s*\(proc-def "([^"]+)"', m.group(2), re.MULTILINE)
    return ("registered" if mtime == int(m.group(1)) else "stale"), procs


def registration_check(g: gimps.Gimp) -> Check:
    """Did GIMP itself register every procedure the installed plug-in defines?"""
    state, procs = pluginrc_procedures(g)
    try:
        bridge = (g.folder / "dfi_bridge.py").read_text()
    except OSError:
        bridge = ""
    want = re.findall(r'MenuItem\(\s*"([^"]+)"', bridge)
    if state == "registered":
        lost = sorted(set(want) - set(procs))
        if lost:
            return Check(FIX, g.label, f"GIMP registered the plug-in without {', '.join(lost)} (pluginrc)",
                         "start GIMP from a terminal and read the plug-in's messages")
        return Check(OK, g.label, f"GIMP registered {len(procs)} procedures ({', '.join(procs[:2])}, …) "
                     "under Filters → DFI")
    if state == "missing":
        return Check(FIX, g.label, "GIMP started since the install but did not register the plug-in (it failed "
                     "to load)", "run 'dfi doctor --python-check', or start GIMP from a terminal to see why")
    why = "GIMP has not started with this profile yet" if state == "no-pluginrc" else \
        "GIMP has not started since the plug-in was installed or upgraded"
    return Check(NOTE, g.label, f"{why}; (re)start GIMP to get Filters → DFI")


def endpoint_check(g: gimps.Gimp, config: dict) -> Check:
    """The endpoint gimp-dfi.json names, and for tcp:// whether the plug-in's keys are private and the daemon's."""
    from dfi_wire import keys as K

    endpoint = config.get("endpoint", "")
    start = f"auto-start with {shlex.join(config['dfi'])}" if config.get("autostart") and config.get("dfi") else \
        "auto-start off"
    if not endpoint:
        return Check(FIX, g.label, f"{g.folder / gimps.CONFIG} names no daemon endpoint", "")
    if not K.needs_keys(endpoint):
        return Check(OK, g.label, f"uses {endpoint} ({start})")
    have = K.client_keys(g.folder / gimps.KEYS)
    if have is None:
        return Check(FIX, g.label, f"uses {endpoint} ({start}) but has no CURVE keys in {g.folder / gimps.KEYS}", "")
    loose = [p for p in (g.folder / gimps.KEYS, *map(Path, have)) if p.stat().st_mode & 0o077]
    if loose:  # e.g. GIMP 3.2 copying an older profile's plug-ins: folder modes are not kept
        return Check(FIX, g.label, f"uses {endpoint} with CURVE keys that others may read ({', '.join(map(str, loose))}"
                     "; the folder should be 0700, the files 0600)", "")
    local = paths.local_keys_dir() / K.SERVER_PUBLIC
    if local.is_file() and sha256(local) != sha256(Path(have[0])) and _loopback(endpoint):
        return Check(FIX, g.label, f"uses {endpoint} ({start}) with CURVE keys that are not the daemon's current "
                     f"local keys ({paths.local_keys_dir()})", "")
    return Check(OK, g.label, f"uses {endpoint} ({start}) with CURVE keys" +
                 (" matching the daemon's local keys" if local.is_file() else ""))


def _listening(endpoint: str, timeout: float) -> bool:
    """Whether a TCP endpoint accepts connections at all (tells a silent daemon from none)."""
    import socket

    m = re.fullmatch(r"tcp://\[?([^\]]+?)\]?:(\d+)", endpoint)
    if m is None:
        return False
    try:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=min(timeout, 2.0)):
            return True
    except OSError:
        return False


def _loopback(endpoint: str) -> bool:
    return re.sub(r":\d+$", "", endpoint.removeprefix("tcp://")) in ("127.0.0.1", "localhost", "[::1]", "::1")


def daemon_check(endpoint: str, users: list[tuple[gimps.Gimp, dict]], timeout: float) -> tuple[Check, dict]:
    """Ask the daemon on ``endpoint`` who it is, presenting the keys the (first) plug-in using it has."""
    from dfi_wire import keys as K
    from dfi_wire import protocol as P
    from dfi_wire.client import Client, DaemonError, DaemonUnavailable

    subject = f"daemon {endpoint}"
    names = ", ".join(g.label for g, _ in users)
    g, config = users[0]
    sock = paths.ipc_path(endpoint)
    try:
        if sock is not None and not sock.exists():
            raise DaemonUnavailable(f"no socket {sock}")
        with Client(endpoint, timeout, curve=K.client_keys(g.folder / gimps.KEYS)) as client:
            hello = client.hello("gimp-dfi-doctor/1", timeout=timeout)
            status = client.call(P.simple("status"), timeout)
    except DaemonUnavailable:
        if _listening(endpoint, timeout):  # a CURVE client with the wrong server key hears nothing at all
            return Check(FIX, subject, f"something listens there but does not answer {names} (a daemon whose "
                         "keys are not the ones the plug-in has, or not a gimp-dfi daemon)",
                         "re-run the installer (it copies the daemon's current local keys)"), {}
        auto = [c for _, c in users if c.get("autostart") and c.get("dfi")]
        if auto:
            cmd = shlex.join([*auto[0]["dfi"], "daemon", "start", "--endpoint", endpoint, *auto[0].get("daemon_args",
                                                                                                        [])])
            return Check(NOTE, subject, f"not running; GIMP starts it when needed ({cmd}), which takes a while the "
                         "first time"), {}
        args = shlex.join(["dfi", "daemon", "start", "--endpoint", endpoint, *config.get("daemon_args", [])])
        return Check(FIX, subject, f"not running, and auto-start is off for {names}", f"start it: {args}"), {}
    except DaemonError as e:
        if e.code == "unauthorized":
            return Check(FIX, subject, f"refused the CURVE keys of {names}",
                         "re-run the installer (it copies the daemon's current local keys), or restart the daemon "
                         "as the user whose keys the plug-in has"), {}
        return Check(FIX, subject, f"answered with an error: {e}", ""), {}
    info = {k: status.get(k, hello.get(k)) for k in ("pid", "server", "weights", "device", "database", "uptime_s")}
    return Check(OK, subject, f"running (pid {info['pid']}, {info['server']}): weights {info['weights']}, device "
                 f"{info['device']}, database {info['database'] or 'none'}"), info


def diagnose(args: argparse.Namespace) -> tuple[list[Check], dict[str, list[dict]]]:
    """Every check, and what was found: {"gimps": [...], "daemons": [...]} (for --json); the daemons only
    unless ``args.gimp_only`` (``dfi gimp status``)."""
    host = gimps.Host(root=Path(args.root).resolve() if args.root else None)
    try:
        versions = gimps.parse_versions(args.gimp_version)
    except ValueError as e:
        return [Check(FIX, "dfi doctor", str(e))], {}
    found = gimps.select(host, "auto", versions, args.profile)
    checks: list[Check] = []
    seen: dict[str, list[dict]] = {"gimps": [], "daemons": []}
    users: dict[str, list[tuple[gimps.Gimp, dict]]] = {}
    manifests = [m for g in found if (m := read_json(g.folder / gimps.MANIFEST)[0])]
    if not found:
        checks.append(Check(FIX, "GIMP", f"no GIMP 3 found (no gimp-3.x on PATH, no Flatpak, no GIMP/3.x profile "
                            f"in {host.profile_base(host.native)})",
                            "install GIMP 3, then " + installer_command(args, [], manifests), "installed"))
    for g in found:
        manifest, bad = read_json(g.folder / gimps.MANIFEST)
        config = read_json(g.folder / gimps.CONFIG)[0] or {}
        seen["gimps"].append({"version": g.version, "kind": g.kind, "profile": str(g.profile), "found": g.found,
                              "installed": manifest is not None, "endpoint": config.get("endpoint")})
        if manifest is None:
            is_gimp = any(h != gimps.PROFILE_FOUND for h in g.found)
            checks.append(Check(FIX if is_gimp or bad else NOTE, g.label,
                                bad or f"found ({g.how}), plug-in not installed there",
                                installer_command(args, [g.version], manifests), "installed",
                                installer_argv(args, [g.version], manifests)))
            continue
        rerun = installer_command(args, [g.version], manifests)
        for topic, check in (("installed", file_checks(g, manifest)), ("registered", registration_check(g)),
                             ("endpoint", endpoint_check(g, config)),
                             *([("python", python_check(g, manifest))] if args.python_check else [])):
            check.topic = topic
            if check.status == FIX and (not check.fix or check.fix == rerun):
                check.fix, check.command = rerun, installer_argv(args, [g.version], manifests)
            checks.append(check)
        if config.get("endpoint"):
            users.setdefault(config["endpoint"], []).append((g, config))
    for endpoint, who in ({} if getattr(args, "gimp_only", False) else users).items():
        check, info = daemon_check(endpoint, who, args.timeout)
        check.topic = "daemon"
        checks.append(check)
        seen["daemons"].append({"endpoint": endpoint, "running": bool(info), **info})
    if not getattr(args, "gimp_only", False):
        checks.append(gpu_check())
    return checks, seen


def gpu_check() -> Check:
    """A GPU that this environment's torch cannot use is a fix with the exact install command."""
    kind = gpu.gpu_present()
    fine, message, fix = gpu.check(kind, gpu.torch_sees() if kind else None)
    return Check(OK if fine else FIX, "torch", message, f"run {fix}" if fix else "", "gpu")


def python_check(g: gimps.Gimp, manifest: dict) -> Check:
    """Load the plug-in with the Python the installer checked it with (--gimp-python), else GIMP's own."""
    import tempfile

    if manifest.get("gimp_python"):
        g.python = list(manifest["gimp_python"])
    try:
        with tempfile.TemporaryDirectory(dir=g.folder.parent) as tmp:
            res = gimps.check_plugin(g, Path(tmp))
    except gimps.GimpError as e:
        return Check(FIX, g.label, str(e).replace("\n", " | "), "fix the above, then re-run the installer")
    return Check(OK, g.label, f"GIMP's Python {res['python']} loads the plug-in ({len(res['procedures'])} "
                 f"procedures; zmq from {res['zmq']})")


def _fix(checks: list[Check]) -> bool:
    """Run the installer commands the checks name, once each; True if any ran."""
    import subprocess

    commands = list(dict.fromkeys(tuple(c.command) for c in checks if c.status == FIX and c.command))
    for argv in commands:
        print(f"dfi doctor: fixing: {shlex.join(argv)}", flush=True)
        r = subprocess.run(argv)
        if r.returncode:
            print(f"dfi doctor: that command failed (exit {r.returncode}); see its messages above", flush=True)
    return bool(commands)


def report(args: argparse.Namespace) -> int:
    """Print the checks (or JSON), after running the fixes with --fix; exit 1 while something needs fixing."""
    checks, seen = diagnose(args)
    problems = [c for c in checks if c.status == FIX]
    if problems and args.fix and _fix(problems):
        checks, seen = diagnose(args)  # what is left after the fixes
        problems = [c for c in checks if c.status == FIX]
    if args.json:
        print(json.dumps({"ok": not problems, "checks": [asdict(c) for c in checks], **seen}, indent=2))
    else:
        for c in checks:
            print(c.line())
        print(f"dfi doctor: {len(problems)} thing{'s' if len(problems) != 1 else ''} to fix" if problems else
              "dfi doctor: nothing to fix")
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the GIMP plug-in in every GIMP 3 and the daemon it uses (exit 1 if "
                       "something needs fixing)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--python-check", action="store_true",
                   help="also load the installed plug-in with each GIMP's own Python (slower)")
    p.add_argument("--gimp-version", action="append", metavar="X.Y", help="only these GIMP versions")
    p.add_argument("--profile", help="only this GIMP profile folder (GIMP3_DIRECTORY also means that one)")
    p.add_argument("--root", help="the GIMPs inside this root (chroot), as the installer's --root")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a daemon's answer")
    p.add_argument("--fix", action="store_true",
                   help="run the installer for every GIMP that lacks the plug-in or has a stale copy (e.g. after "
                        "upgrading GIMP), then check again")
    p.set_defaults(func=report)
