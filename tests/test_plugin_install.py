"""The plug-in installer (dfi gimp install, install/gimp_plugin.py) and the GIMP detection it shares with dfi doctor.

Fake machines (``gimp_fakes``): profile folders in a fake home, fake gimp executables on a PATH of
their own, a fake flatpak. GIMP's Python is played by this interpreter (which has pyzmq and msgpack)
or by it with ``-I -S`` (which has neither). The real GIMP installs are in test_gimp_install.py.
"""

from __future__ import annotations

import json
import os
import plistlib
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from dfi_daemon.gimp import found as gimps
from helpers.gimp_fakes import REPO, FakeMachine, plugin_bridge
from helpers.wheel_venv import wheel_venv

BARE_PYTHON = f"{sys.executable} -I -S"  # no site-packages: no zmq, no msgpack


@pytest.fixture
def machine(tmp_path) -> FakeMachine:
    return FakeMachine(tmp_path)


@pytest.fixture
def profile(machine) -> Path:
    return machine.base / "GIMP" / "3.0"


def installed(profile: Path) -> set[str]:
    folder = profile / "plug-ins" / "gimp-dfi"
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- detection


def test_detection_finds_binaries_flatpak_and_profiles(machine):
    machine.binary("gimp-console-3.2", "3.2.6")
    machine.binary("gimp", "3.0.4")  # plain name: the version comes from --version
    machine.binary("gimp-console", "2.10.38")  # GIMP 2 is not ours
    machine.flatpak("3.2.4")
    machine.profile("3.0").mkdir(parents=True)
    machine.profile("2.10").mkdir(parents=True)
    machine.profile("3.0", "flatpak").mkdir(parents=True)
    found = gimps.find(gimps.Host(system="Linux", env=machine.env, home=machine.home))
    assert [(g.kind, g.version) for g in found] == [("linux", "3.0"), ("linux", "3.2"), ("flatpak", "3.0"),
                                                     ("flatpak", "3.2")]
    by = {(g.kind, g.version): g for g in found}
    assert by["linux", "3.0"].found == [f"gimp in {machine.bin}", "profile folder"]
    assert by["linux", "3.2"].profile == machine.profile("3.2")
    assert by["linux", "3.2"].python == ["/usr/bin/python3"] and by["linux", "3.2"].system_python
    assert by["flatpak", "3.2"].found == ["flatpak org.gimp.GIMP"]
    assert by["flatpak", "3.2"].python[:2] == ["flatpak", "run"]
    assert by["flatpak", "3.0"].found == ["profile folder"]


def test_detection_on_macos_and_windows_layouts(tmp_path):
    home = tmp_path / "home"
    app = home / "Applications" / "GIMP.app" / "Contents"
    (app / "MacOS").mkdir(parents=True)
    (app / "Info.plist").write_bytes(plistlib.dumps({"CFBundleShortVersionString": "3.2.4"}))
    (app / "MacOS" / "python3").write_text("")
    found = gimps.find(gimps.Host(system="Darwin", env={"PATH": ""}, home=home))
    assert [(g.kind, g.version, g.python) for g in found] == [("macos", "3.2", [str(app / "MacOS" / "python3")])]
    assert found[0].profile == home / "Library" / "Application Support" / "GIMP" / "3.2"

    bin_dir = tmp_path / "Program Files" / "GIMP 3" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("gimp-3.2.exe", "gimp-console-3.2.exe", "python.exe"):
        (bin_dir / name).write_text("")
    appdata = tmp_path / "Roaming"
    (appdata / "GIMP" / "3.0").mkdir(parents=True)
    env = {"PATH": "", "ProgramFiles": str(tmp_path / "Program Files"), "APPDATA": str(appdata)}
    found = gimps.find(gimps.Host(system="Windows", env=env, home=home))
    assert [(g.kind, g.version) for g in found] == [("windows", "3.0"), ("windows", "3.2")]
    assert found[1].python == [str(bin_dir / "python.exe")] and found[1].profile == appdata / "GIMP" / "3.2"
    assert found[0].python == [], "a profile folder alone does not tell where GIMP's Python is"


def test_detection_inside_a_root(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "gimp-console-3.2").write_text("#!/bin/sh\n")
    (root / "usr" / "bin" / "gimp-console-3.2").chmod(0o755)
    found = gimps.find(gimps.Host(system="Linux", env={"PATH": ""}, home=tmp_path, root=root))
    assert [(g.kind, g.version, g.profile) for g in found] == [("linux", "3.2", root / "root/.config/GIMP/3.2")]
    assert found[0].python == ["chroot", str(root), "/usr/bin/python3"]


def test_select_a_profile_means_exactly_that_one(machine):
    machine.binary("gimp-console-3.2", "3.2.6")
    host = gimps.Host(system="Linux", env=machine.env, home=machine.home)
    assert [g.version for g in gimps.select(host)] == ["3.2"]
    assert [(g.version, g.profile) for g in gimps.select(host, profile=str(machine.base / "p"))] == \
        [("", machine.base / "p")]
    host.env = {**machine.env, "GIMP3_DIRECTORY": str(machine.base / "GIMP" / "3.0")}
    assert [(g.version, g.found) for g in gimps.select(host)] == [("3.0", ["GIMP3_DIRECTORY"])]
    assert gimps.parse_versions(["3.0,3.2", "3.2.6", " 3.4"]) == ["3.0", "3.2", "3.4"]
    with pytest.raises(ValueError, match="2.10"):
        gimps.parse_versions(["2.10"])


def test_the_plugin_reads_the_names_the_installer_writes():
    dfi_bridge = plugin_bridge()
    assert dfi_bridge.KEYS_DIR.name == gimps.KEYS and dfi_bridge.CONFIG_NAME == gimps.CONFIG


# ---------------------------------------------------------------------------- every GIMP found


def test_installs_into_every_gimp_found_and_uninstalls_from_all(machine):
    machine.binary("gimp-console-3.2", "3.2.6")
    machine.profile("3.0").mkdir(parents=True)  # GIMP 3.0 used before: its profile is there
    machine.flatpak("3.2.4")
    res = machine.install()
    for line in ("GIMP 3.0: ", "GIMP 3.2: ", "GIMP 3.2 (flatpak): ", "found: gimp-console-3.2 in",
                 "done: GIMP 3.0 installed, GIMP 3.2 installed, GIMP 3.2 (flatpak) installed."):
        assert line in res.stdout, res.stdout
    assert res.stdout.count("verified with GIMP's Python") == 3
    for version, kind in (("3.0", "linux"), ("3.2", "linux"), ("3.2", "flatpak")):
        config = json.loads((machine.folder(version, kind) / "gimp-dfi.json").read_text())
        manifest = json.loads((machine.folder(version, kind) / "install-manifest.json").read_text())
        assert set(manifest["files"]) == machine.files(version, kind)
        assert stat.S_IMODE((machine.folder(version, kind) / "gimp-dfi.py").stat().st_mode) == 0o755
        if kind == "flatpak":  # the sandbox reaches the host's daemon over loopback TCP, with the local keys
            assert config["endpoint"] == "tcp://127.0.0.1:5557" and config["dfi"][:2] == ["flatpak-spawn", "--host"]
            assert {"keys/server.key", "keys/client.key_secret"} <= set(manifest["files"])
        else:  # the private Unix socket: no keys
            assert config["endpoint"].startswith("ipc://") and not (machine.folder(version) / "keys").exists()
    (machine.folder("3.2") / "my-notes.txt").write_text("mine\n")
    (machine.bin / "gimp-console-3.2").unlink()  # GIMP 3.2 removed since: its profile still holds the plug-in
    res = machine.install("--uninstall")
    assert res.stdout.count("removed ") == 3, res.stdout
    assert "kept 1 files it did not install: my-notes.txt" in res.stdout
    assert machine.files("3.0") == machine.files("3.2", "flatpak") == set()
    assert machine.files("3.2") == {"my-notes.txt"}
    assert "nothing to remove" in machine.install("--uninstall").stdout


def test_gimp_version_picks_versions_and_a_new_gimp_gets_the_earlier_settings(machine):
    machine.binary("gimp-console-3.0", "3.0.4")
    machine.binary("gimp-console-3.2", "3.2.6")
    res = machine.install("--gimp-version", "3.0", "--endpoint", "ipc:///tmp/x.sock", "--daemon-args", "--device cuda",
                          "--dfi", "/opt/dfi")
    assert "GIMP 3.2" not in res.stdout and not machine.folder("3.2").exists()
    first = json.loads((machine.folder("3.0") / "gimp-dfi.json").read_text())
    # GIMP upgraded: re-running with no options installs for the new version, with the same settings
    res = machine.install()
    assert "GIMP 3.0 upgraded" in res.stdout and "GIMP 3.2 installed" in res.stdout
    assert "(new for this GIMP)" in res.stdout and "settings taken over from the install for GIMP 3.0" in res.stdout
    second = json.loads((machine.folder("3.2") / "gimp-dfi.json").read_text())
    assert (second["endpoint"], second["daemon_args"], second["dfi"]) == ("ipc:///tmp/x.sock", ["--device", "cuda"],
                                                                          ["/opt/dfi"]) == \
        (first["endpoint"], first["daemon_args"], first["dfi"])
    # a version not found gets its default profile; a comma list picks several
    machine.install("--gimp-version", "3.4,3.0", "--vendor", "never")
    assert machine.folder("3.4").is_dir()
    machine.install("--uninstall", "--gimp-version", "3.0")
    assert not machine.files("3.0") and machine.files("3.2") and machine.files("3.4")


def test_no_gimp_found_says_what_to_pass(machine):
    res = machine.install(check=False)
    assert res.returncode == 1 and "No GIMP 3 found on this machine" in res.stderr
    assert "--gimp-version 3.0" in res.stderr
    assert machine.install("--gimp-version", "3.0").returncode == 0
    assert machine.files("3.0")


def test_tcp_endpoints_get_the_daemons_local_keys_privately(machine, profile):
    machine.install("--profile", str(profile), "--endpoint", "tcp://127.0.0.1:5557")
    keys = profile / "plug-ins" / "gimp-dfi" / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert sorted(p.name for p in keys.iterdir()) == ["client.key_secret", "server.key"]
    for name in ("server.key", "client.key_secret"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
        assert (keys / name).read_bytes() == (machine.keys / name).read_bytes(), "not the daemon's own keys"
    assert not (keys / "server.key_secret").exists(), "the server's secret never leaves its folder"
    machine.install("--profile", str(profile), "--uninstall")
    assert not keys.exists()


def test_the_checkout_wrapper_under_a_bare_python_says_what_to_run(machine, profile):
    """install/gimp_plugin.py with a Python that lacks the project: one line that says what to run, no traceback,
    nothing written."""
    res = machine.install("--profile", str(profile), runner=(sys.executable, "-I", "-S"), check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr and not installed(profile)
    assert "bash install/bootstrap.sh" in res.stderr and "dfi gimp install" in res.stderr


@pytest.mark.slow  # builds the wheel into a new venv
def test_the_wheel_in_a_new_venv_installs_the_plugin_without_the_checkout(machine, profile, tmp_path):
    """README's "install as a package": the wheel's own dfi, run outside the checkout, installs its own package
    data (not the checkout's files) and removes it again."""
    dfi = wheel_venv(tmp_path)
    run = lambda *a: subprocess.run([str(dfi), "gimp", *a], capture_output=True, text=True, timeout=300,  # noqa: E731
                                    env=machine.env, cwd=tmp_path)
    res = run("install", "--profile", str(profile), "--gimp-python", sys.executable, "--endpoint", "ipc:///x/d.sock")
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((profile / "plug-ins" / "gimp-dfi" / "install-manifest.json").read_text())
    assert Path(manifest["installed_from"]).is_relative_to(tmp_path / "venv"), manifest["installed_from"]
    assert run("uninstall", "--profile", str(profile)).returncode == 0 and not installed(profile)


def test_dfi_gimp_install_status_and_uninstall(machine, profile):
    """The installed package's own command: the same files as the checkout's wrapper, a status line, an exact
    removal."""
    dfi = [sys.executable, "-m", "dfi_daemon.cli", "gimp"]
    run = lambda *a: subprocess.run([*dfi, *a], capture_output=True, text=True, timeout=300, env=machine.env)  # noqa: E731
    res = run("install", "--profile", str(profile), "--gimp-python", sys.executable, "--endpoint", "ipc:///x/d.sock")
    assert res.returncode == 0, res.stderr
    folder = profile / "plug-ins" / "gimp-dfi"
    import dfi_plugin

    for name, *_ in gimps.PLUGIN_FILES:  # byte for byte the package data
        assert (folder / name).read_bytes() == (Path(dfi_plugin.__file__).parent / name).read_bytes()
    status = run("status", "--profile", str(profile))
    assert "files intact and the same as" in status.stdout and "daemon" not in status.stdout, status.stdout
    assert run("uninstall", "--profile", str(profile)).returncode == 0 and not installed(profile)
    assert run("status", "--profile", str(profile)).returncode == 1


def test_keys_from_a_folder_and_a_clear_error_without_them(machine, profile):
    res = machine.install("--profile", str(profile), "--endpoint", "tcp://127.0.0.1:5557", "--keys-dir",
                          str(machine.base / "none"), check=False)
    assert res.returncode == 1 and "lacks server.key and client.key_secret" in res.stderr
    assert "dfi daemon keys --dir" in res.stderr and not installed(profile)


# ---------------------------------------------------------------------------- one profile, as before


def test_install_writes_an_executable_plugin_and_checks_it(machine, profile):
    res = machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/x/daemon.sock", "--dfi",
                          "/opt/dfi/bin/dfi", "--daemon-args", "--device cuda")
    folder = profile / "plug-ins" / "gimp-dfi"
    wire = sorted(p.name for p in (REPO / "daemon" / "dfi_wire").glob("*.py"))
    assert wire == sorted(p.name for p in (folder / "dfi_wire").iterdir()), "the wire package, file for file"
    for name in wire:
        assert (folder / "dfi_wire" / name).read_bytes() == (REPO / "daemon" / "dfi_wire" / name).read_bytes()
    config = json.loads((folder / "gimp-dfi.json").read_text())
    assert config["endpoint"] == "ipc:///tmp/x/daemon.sock"
    assert config["dfi"] == ["/opt/dfi/bin/dfi"] and config["autostart"] is True
    assert config["daemon_args"] == ["--device", "cuda"]
    manifest = json.loads((folder / "install-manifest.json").read_text())
    assert set(manifest["files"]) == installed(profile), "the manifest must list exactly what is there"
    assert set(manifest["sha256"]) == installed(profile) - {"install-manifest.json"}
    assert "verified with GIMP's Python" in res.stdout and "6 procedures" in res.stdout
    assert not list(folder.rglob("__pycache__")), "verification left bytecode behind"


def test_reinstall_upgrades_in_place_and_uninstall_removes_only_its_files(machine, profile):
    machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/y.sock", "--no-autostart", "--dfi", "/x/dfi",
                    "--daemon-args", "--device cpu")
    folder = profile / "plug-ins" / "gimp-dfi"
    first = installed(profile)
    # an older version's file (listed in its manifest) and a file of the user's own
    (folder / "old_module.py").write_text("# from an older version\n")
    manifest = folder / "install-manifest.json"
    manifest.write_text(json.dumps({"files": [*json.loads(manifest.read_text())["files"], "old_module.py"]}))
    (folder / "my-notes.txt").write_text("mine\n")
    plugin = folder / "gimp-dfi.py"
    os.utime(plugin, (1, 1))

    res = machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/z.sock", "--no-autostart")
    assert "upgraded" in res.stdout and "removed 1 stale" in res.stdout
    assert not (folder / "old_module.py").exists()
    assert plugin.stat().st_mtime > 1, "GIMP re-queries a plug-in only when its mtime changes"
    config = json.loads((folder / "gimp-dfi.json").read_text())
    assert config["endpoint"] == "ipc:///tmp/z.sock"
    # what the upgrade did not mention stays as installed before
    assert (config["autostart"], config["dfi"], config["daemon_args"]) == (False, ["/x/dfi"], ["--device", "cpu"])
    assert installed(profile) == first | {"my-notes.txt"}

    (folder / "__pycache__").mkdir()  # GIMP's Python writes bytecode when it imports the plug-in
    (folder / "__pycache__" / "dfi_bridge.cpython-313.pyc").write_bytes(b"x")
    res = machine.install("--profile", str(profile), "--uninstall")
    assert "kept 1 files it did not install: my-notes.txt" in res.stdout
    assert installed(profile) == {"my-notes.txt"}
    assert not (folder / "dfi_wire").exists()


def test_a_root_gets_its_own_default_profile_a_loopback_endpoint_and_no_host_dfi(machine):
    root = machine.base / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "gimp-console-3.2").write_text("#!/bin/sh\n")
    (root / "usr" / "bin" / "gimp-console-3.2").chmod(0o755)
    res = machine.install("--root", str(root), "--no-verify", "--vendor", "never", python=None)
    folder = root / "root/.config/GIMP/3.2/plug-ins/gimp-dfi"
    assert f"GIMP 3.2: {folder}" in res.stdout
    config = json.loads((folder / "gimp-dfi.json").read_text())
    assert config["endpoint"].startswith("tcp://127.0.0.1:")
    assert (config["dfi"], config["autostart"]) == ([], False)
    assert (folder / "keys" / "server.key").read_bytes() == (machine.keys / "server.key").read_bytes()
    # --profile inside the root still means exactly that profile
    machine.install("--root", str(root), "--profile", "/home/u/.config/GIMP/3.0", "--no-verify", "--vendor", "never")
    assert (root / "home/u/.config/GIMP/3.0/plug-ins/gimp-dfi/gimp-dfi.json").exists()


def test_a_python_without_pyzmq_fails_verification_with_the_reason(machine, profile):
    res = machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/x.sock", "--vendor", "never",
                          python=BARE_PYTHON, check=False)
    assert res.returncode == 1
    assert "does not import under GIMP 3.0's Python" in res.stderr
    assert "No module named 'zmq'" in res.stderr
    assert not (profile / "plug-ins" / "gimp-dfi").exists(), "a plug-in that cannot load was left installed"


def fake_wheel(folder: Path, dist: str, package: str) -> None:
    """A minimal wheel: the package plus its dist-info (which must not be vendored)."""
    with zipfile.ZipFile(folder / f"{dist}-9.9-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as z:
        # any constant the wire package reads at import time (zmq.DEALER, zmq.EVENT_CONNECTED, ...) is an int
        z.writestr(f"{package}/__init__.py", "__version__ = '9.9-vendored'\ndef __getattr__(name):\n    return 1\n")
        z.writestr(f"{dist}-9.9.dist-info/METADATA", f"Name: {dist}\n")


def test_vendored_wheels_are_unpacked_and_found_first(machine, profile):
    wheels = machine.base / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "pyzmq", "zmq")
    fake_wheel(wheels, "msgpack", "msgpack")
    res = machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/x.sock", "--wheels", str(wheels),
                          python=BARE_PYTHON)
    assert "zmq, msgpack missing in GIMP's Python" in res.stdout
    folder = profile / "plug-ins" / "gimp-dfi"
    assert (folder / "vendor" / "zmq" / "__init__.py").exists()
    assert not list((folder / "vendor").glob("*.dist-info"))
    assert f"zmq from {folder / 'vendor' / 'zmq' / '__init__.py'}" in res.stdout
    machine.install("--profile", str(profile), "--uninstall")
    assert not (folder / "vendor").exists()


def test_missing_wheel_is_reported(machine, profile):
    wheels = machine.base / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "msgpack", "msgpack")
    res = machine.install("--profile", str(profile), "--endpoint", "ipc:///tmp/x.sock", "--wheels", str(wheels),
                          python=BARE_PYTHON, check=False)
    assert res.returncode == 1 and "No pyzmq wheel" in res.stderr
    assert not (profile / "plug-ins" / "gimp-dfi" / "gimp-dfi.py").exists(), "installed despite the failure"
