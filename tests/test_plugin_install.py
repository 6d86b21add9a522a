"""install/gimp_plugin.py: install, verify, upgrade in place, vendor, uninstall exactly.

GIMP's Python is played by this interpreter (which has pyzmq and msgpack) or by
it with ``-I -S`` (which has neither). The real GIMP install is in test_gimp_real.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BARE_PYTHON = f"{sys.executable} -I -S"  # no site-packages: no zmq, no msgpack


def install(profile: Path, *extra: str, python: str = sys.executable, check: bool = True):
    res = subprocess.run([sys.executable, str(REPO / "install" / "gimp_plugin.py"), "--profile", str(profile),
                          "--target", "linux", "--gimp-python", python, *extra],
                         capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def uninstall(profile: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(REPO / "install" / "gimp_plugin.py"), "--profile", str(profile),
                          "--target", "linux", "--uninstall"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


def installed(profile: Path) -> set[str]:
    folder = profile / "plug-ins" / "gimp-dfi"
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def profile(tmp_path):
    return tmp_path / "GIMP" / "3.0"


def test_install_writes_an_executable_plugin_and_checks_it(profile):
    res = install(profile, "--endpoint", "ipc:///tmp/x/daemon.sock", "--dfi", "/opt/dfi/bin/dfi",
                  "--daemon-args", "--device cuda")
    folder = profile / "plug-ins" / "gimp-dfi"
    plugin = folder / "gimp-dfi.py"
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o755
    wire = sorted(p.name for p in (REPO / "daemon" / "wire").glob("*.py"))
    assert wire == sorted(p.name for p in (folder / "dfi_wire").iterdir()), "the wire package, file for file"
    for name in wire:
        assert (folder / "dfi_wire" / name).read_bytes() == (REPO / "daemon" / "wire" / name).read_bytes()
    config = json.loads((folder / "gimp-dfi.json").read_text())
    assert config["endpoint"] == "ipc:///tmp/x/daemon.sock"
    assert config["dfi"] == ["/opt/dfi/bin/dfi"] and config["autostart"] is True
    assert config["daemon_args"] == ["--device", "cuda"]
    manifest = json.loads((folder / "install-manifest.json").read_text())["files"]
    assert set(manifest) == installed(profile), "the manifest must list exactly what is there"
    assert "verified with GIMP's Python" in res.stdout and "6 procedures" in res.stdout
    assert not list(folder.rglob("__pycache__")), "verification left bytecode behind"


def test_reinstall_upgrades_in_place_and_uninstall_removes_only_its_files(profile):
    install(profile, "--endpoint", "tcp://127.0.0.1:5557", "--no-autostart", "--dfi", "/x/dfi",
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

    res = install(profile, "--endpoint", "tcp://127.0.0.1:5558", "--no-autostart")
    assert "upgraded" in res.stdout and "removed 1 stale" in res.stdout
    assert not (folder / "old_module.py").exists()
    assert plugin.stat().st_mtime > 1, "GIMP re-queries a plug-in only when its mtime changes"
    config = json.loads((folder / "gimp-dfi.json").read_text())
    assert config["endpoint"] == "tcp://127.0.0.1:5558"
    # what the upgrade did not mention stays as installed before
    assert (config["autostart"], config["dfi"], config["daemon_args"]) == (False, ["/x/dfi"], ["--device", "cpu"])
    assert installed(profile) == first | {"my-notes.txt"}

    (folder / "__pycache__").mkdir()  # GIMP's Python writes bytecode when it imports the plug-in
    (folder / "__pycache__" / "dfi_bridge.cpython-313.pyc").write_bytes(b"x")
    res = uninstall(profile)
    assert "kept 1 files it did not install: my-notes.txt" in res.stdout
    assert installed(profile) == {"my-notes.txt"}
    assert not (folder / "dfi_wire").exists()

    (folder / "my-notes.txt").unlink()
    assert "nothing to remove" in uninstall(profile).stdout


def test_a_root_gets_a_loopback_endpoint_and_no_host_dfi(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    install(tmp_path / "unused", "--root", str(root), "--profile", "/home/u/.config/GIMP/3.0", "--no-verify",
            "--vendor", "never")
    config = json.loads((root / "home/u/.config/GIMP/3.0/plug-ins/gimp-dfi/gimp-dfi.json").read_text())
    assert config["endpoint"].startswith("tcp://127.0.0.1:")
    assert (config["dfi"], config["autostart"]) == ([], False)


def test_a_python_without_pyzmq_fails_verification_with_the_reason(profile):
    res = install(profile, "--endpoint", "tcp://127.0.0.1:5557", "--vendor", "never", python=BARE_PYTHON,
                  check=False)
    assert res.returncode == 1
    assert "does not import under GIMP's Python" in res.stderr
    assert "No module named 'zmq'" in res.stderr
    assert not (profile / "plug-ins" / "gimp-dfi").exists(), "a plug-in that cannot load was left installed"


def fake_wheel(folder: Path, dist: str, package: str) -> None:
    """A minimal wheel: the package plus its dist-info (which must not be vendored)."""
    with zipfile.ZipFile(folder / f"{dist}-9.9-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as z:
        z.writestr(f"{package}/__init__.py", "__version__ = '9.9-vendored'\nDEALER = 5\n")
        z.writestr(f"{dist}-9.9.dist-info/METADATA", f"Name: {dist}\n")


def test_vendored_wheels_are_unpacked_and_found_first(profile, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "pyzmq", "zmq")
    fake_wheel(wheels, "msgpack", "msgpack")
    res = install(profile, "--endpoint", "tcp://127.0.0.1:5557", "--wheels", str(wheels), python=BARE_PYTHON)
    assert "zmq, msgpack missing in GIMP's Python" in res.stdout
    folder = profile / "plug-ins" / "gimp-dfi"
    assert (folder / "vendor" / "zmq" / "__init__.py").exists()
    assert not list((folder / "vendor").glob("*.dist-info"))
    assert f"zmq from {folder / 'vendor' / 'zmq' / '__init__.py'}" in res.stdout
    uninstall(profile)
    assert not (folder / "vendor").exists()


def test_missing_wheel_is_reported(profile, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "msgpack", "msgpack")
    res = install(profile, "--endpoint", "tcp://127.0.0.1:5557", "--wheels", str(wheels), python=BARE_PYTHON,
                  check=False)
    assert res.returncode == 1 and "No pyzmq wheel" in res.stderr
    assert not (profile / "plug-ins" / "gimp-dfi" / "gimp-dfi.py").exists(), "installed despite the failure"
