"""The installer and ``dfi doctor`` against a real GIMP 3.0 (Debian trixie root) and 3.2 (sid root), run from
the wheel installed in a new venv outside the checkout, as a user who installed the package has them.

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
from pathlib import Path

import pytest
from dfi_daemon.gimp.found import PLUGIN_FILES, plugin_folder
from helpers.daemon_process import env_for
from helpers.gimp_fakes import plugin_bridge
from helpers.gimp_harness import Gimp, root_or_skip, versions
from helpers.wheel_venv import REPO, wheel_venv

pytestmark = pytest.mark.slow  # a real GIMP in a Debian root, the wheel in a new venv

PROCS = {m.proc: m.label for m in plugin_bridge().MENU}  # what GIMP must list: the plug-in's own menu table


class DefaultProfileGimp(Gimp):
    """The root's GIMP with its own default profile, as a user's GIMP starts (the harness isolates one)."""

    def cmd(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        return [a for a in super().cmd(*argv, env=env) if not a.startswith("GIMP3_DIRECTORY=")]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd="/")  # not the checkout
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def dfi(tmp_path_factory) -> str:
    """The ``dfi`` of the wheel, in a venv outside the checkout."""
    return str(wheel_venv(tmp_path_factory.mktemp("wheel")))


def registered(dfi: str, env: dict[str, str], root: Path, version: str) -> dict:
    res = run([dfi, "doctor", "--root", str(root), "--gimp-version", version, "--json", "--timeout", "0.5"], env)
    report = json.loads(res.stdout)
    return next(c for c in report["checks"] if c["subject"] == f"GIMP {version}" and c["topic"] == "registered")


@pytest.mark.parametrize("version", versions())
def test_install_into_the_default_profile_of_each_gimp_and_uninstall(version, tmp_path, dfi):
    root = root_or_skip(version)
    profiles = root / "root" / ".config" / "GIMP"
    existed = profiles.exists()
    profile = profiles / version
    folder = plugin_folder(profile)
    env = env_for(tmp_path)  # the daemon's local keys (copied for the root's loopback endpoint) live here
    site = Path(subprocess.run([Path(dfi).with_name("python"), "-c", "import dfi_plugin; print(dfi_plugin.__file__)"],
                               capture_output=True, text=True, check=True).stdout.strip()).parent
    assert not site.is_relative_to(REPO), f"the wheel's plug-in must not come from the checkout: {site}"
    gimp = DefaultProfileGimp(root, "install")
    try:
        res = run([dfi, "gimp", "install", "--root", str(root), "--no-autostart"], env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"GIMP {version}: {folder} (found: gimp-{version}, gimp-console-{version} in {root}/usr/bin)" \
            in res.stdout
        assert "verified with GIMP's Python" in res.stdout and f"done: GIMP {version} installed" in res.stdout
        for name, *_ in PLUGIN_FILES:  # the wheel's package data, byte for byte
            assert (folder / name).read_bytes() == (site / name).read_bytes()
        assert (folder / "keys" / "server.key").read_bytes() == (tmp_path / "config/local-keys/server.key").read_bytes()
        assert registered(dfi, env, root, version)["status"] == "note", "GIMP has not started yet"

        seen = gimp.run([{"op": "procedures", "names": list(PROCS)}])
        print(f"GIMP {version} with its default profile: {seen.seconds:.1f} s")
        procs = seen.step("procedures")["procedures"]
        missing = [name for name, proc in procs.items() if proc is None]
        assert not missing, f"GIMP {version} did not register {missing}:\n{seen.output[-3000:]}"
        for name, label in PROCS.items():
            assert (procs[name]["menu_paths"], procs[name]["label"]) == (["<Image>/Filters/DFI"], label)
        check = registered(dfi, env, root, version)
        assert check["status"] == "ok" and f"registered {len(PROCS)} procedures" in check["message"], check

        res = run([dfi, "gimp", "uninstall", "--root", str(root)], env)
        assert res.returncode == 0 and f"GIMP {version}: removed" in res.stdout, res.stdout + res.stderr
        assert not folder.exists(), sorted(str(p) for p in folder.rglob("*"))
        assert (profile / "plug-ins").is_dir(), "GIMP's own plug-ins folder is not ours to remove"
    finally:
        gimp.cleanup()
        if not existed:  # the profile GIMP made in the cached root
            shutil.rmtree(profiles, ignore_errors=True)
