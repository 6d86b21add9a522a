"""The installer and ``dfi doctor`` against a real GIMP 3.0 (Debian trixie root) and 3.2 (sid root).

What the issue was about: GIMP 3.2 reads ``~/.config/GIMP/3.2`` and ignores ``3.0``. So the plug-in
is installed with ``--root ROOT`` and no ``--profile`` (the installer finds the version from the
root's ``gimp-console-3.X`` and picks that GIMP's own default profile, ``/root/.config/GIMP/3.X``),
GIMP is started as a user would start it (no GIMP3_DIRECTORY), and GIMP itself must list the
procedures; doctor must see GIMP's registration; the uninstall must leave nothing behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_process import env_for
from dfi_daemon.gimps import plugin_folder
from gimp_fakes import plugin_bridge
from gimp_harness import Gimp, build_root, versions

REPO = Path(__file__).resolve().parent.parent
PROCS = {m.proc: m.label for m in plugin_bridge().MENU}  # what GIMP must list: the plug-in's own menu table


class DefaultProfileGimp(Gimp):
    """The root's GIMP with its own default profile, as a user's GIMP starts (the harness isolates one)."""

    def cmd(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        return [a for a in super().cmd(*argv, env=env) if not a.startswith("GIMP3_DIRECTORY=")]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res


def registered(env: dict[str, str], root: Path, version: str) -> dict:
    res = run([sys.executable, "-m", "dfi_daemon.cli", "doctor", "--root", str(root), "--gimp-version", version,
               "--json", "--timeout", "0.5"], env)
    report = json.loads(res.stdout)
    return next(c for c in report["checks"] if c["subject"] == f"GIMP {version}" and c["topic"] == "registered")


@pytest.mark.parametrize("version", versions())
def test_install_into_the_default_profile_of_each_gimp_and_uninstall(version, tmp_path):
    root, why = build_root(version)
    if root is None:
        pytest.skip(f"real GIMP {version} tests skipped: {why}")
    profiles = root / "root" / ".config" / "GIMP"
    existed = profiles.exists()
    profile = profiles / version
    folder = plugin_folder(profile)
    env = env_for(tmp_path)  # the daemon's local keys (copied for the root's loopback endpoint) live here
    installer = [sys.executable, str(REPO / "install" / "gimp_plugin.py"), "--root", str(root)]
    gimp = DefaultProfileGimp(root, "install")
    try:
        res = run([*installer, "--no-autostart"], env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"GIMP {version}: {folder} (found: gimp-{version}, gimp-console-{version} in {root}/usr/bin)" \
            in res.stdout
        assert "verified with GIMP's Python" in res.stdout and f"done: GIMP {version} installed" in res.stdout
        assert (folder / "keys" / "server.key").read_bytes() == (tmp_path / "config/local-keys/server.key").read_bytes()
        assert registered(env, root, version)["status"] == "note", "GIMP has not started yet"

        seen = gimp.run([{"op": "procedures", "names": list(PROCS)}])
        print(f"GIMP {version} with its default profile: {seen.seconds:.1f} s")
        procs = seen.step("procedures")["procedures"]
        missing = [name for name, proc in procs.items() if proc is None]
        assert not missing, f"GIMP {version} did not register {missing}:\n{seen.output[-3000:]}"
        for name, label in PROCS.items():
            assert (procs[name]["menu_paths"], procs[name]["label"]) == (["<Image>/Filters/DFI"], label)
        check = registered(env, root, version)
        assert check["status"] == "ok" and f"registered {len(PROCS)} procedures" in check["message"], check

        res = run([*installer, "--uninstall"], env)
        assert res.returncode == 0 and f"GIMP {version}: removed" in res.stdout, res.stdout + res.stderr
        assert not folder.exists(), sorted(str(p) for p in folder.rglob("*"))
        assert (profile / "plug-ins").is_dir(), "GIMP's own plug-ins folder is not ours to remove"
    finally:
        gimp.cleanup()
        if not existed:  # the profile GIMP made in the cached root
            shutil.rmtree(profiles, ignore_errors=True)
