"""``dfi doctor`` on fake machines (``gimp_fakes``): installed, missing, outdated, unregistered, daemon down.

The daemon is a real one (seeded random weights, synthetic neighbours) on loopback TCP with the
machine's local CURVE keys, so the doctor's hello travels the way the plug-in's would.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers.daemon_process import DaemonProcess
from helpers.gimp_fakes import FakeMachine, plugin_bridge
from helpers.gimp_harness import free_port

pytestmark = pytest.mark.slow  # a daemon process for the module; every check runs the CLI as a process

MENU = [m.proc for m in plugin_bridge().MENU]


@pytest.fixture
def machine(tmp_path) -> FakeMachine:
    m = FakeMachine(tmp_path)
    m.binary("gimp-console-3.0", "3.0.4")
    m.binary("gimp-console-3.2", "3.2.6")
    return m


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module; each test's machine gets a copy of its keys as its local keys."""
    d = DaemonProcess(tmp_path_factory.mktemp("doctor-daemon"), endpoint=f"tcp://127.0.0.1:{free_port()}").start()
    yield d
    d.stop()


def share_keys(machine: FakeMachine, d: DaemonProcess) -> None:
    """The machine's local keys become the daemon's (as if that daemon had been started here)."""
    shutil.copytree(d.config / "local-keys", machine.keys)


def doctor(machine: FakeMachine, *args: str) -> tuple[int, dict]:
    res = machine.doctor("--json", *args)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def checks(report: dict, subject: str, topic: str | None = None) -> list[dict]:
    return [c for c in report["checks"] if c["subject"] == subject and topic in (None, c["topic"])]


def pluginrc(machine: FakeMachine, version: str, procs: list[str]) -> None:
    """GIMP's plug-in cache as GIMP writes it after a start that registered the installed plug-in."""
    plugin = machine.folder(version) / "gimp-dfi.py"
    body = "".join(f'    (proc-def "{p}" 1\n         "blurb")\n' for p in procs)
    (machine.profile(version) / "pluginrc").write_text(
        f'# GIMP pluginrc\n(plug-in-def "${{gimp_dir}}/plug-ins/gimp-dfi/gimp-dfi.py" {int(plugin.stat().st_mtime)}\n'
        f'{body})\n(plug-in-def "${{gimp_plug_in_dir}}/plug-ins/other/other" 1\n    (proc-def "other" 1))\n')


def test_a_gimp_without_the_plugin_is_reported_with_the_command_that_fixes_it(machine, daemon):
    share_keys(machine, daemon)
    machine.install("--gimp-version", "3.0", "--endpoint", daemon.endpoint, "--no-autostart")
    res = machine.doctor()
    assert res.returncode == 1, res.stdout
    line = next(x for x in res.stdout.splitlines() if x.startswith("fix   GIMP 3.2:"))
    assert f"found (gimp-console-3.2 in {machine.bin}), plug-in not installed there: run " in line
    assert res.stdout.rstrip().endswith("dfi doctor: 1 thing to fix")
    # the command doctor names is the fix
    command = shlex.split(line.split(": run ", 1)[1])
    assert command[-2:] == ["--gimp-version", "3.2"]
    subprocess.run([*command, "--gimp-python", sys.executable], check=True, env=machine.env, capture_output=True)
    code, report = doctor(machine)
    assert checks(report, "GIMP 3.2", "installed")[0]["status"] == "ok", report
    assert json.loads((machine.folder("3.2") / "gimp-dfi.json").read_text())["endpoint"] == daemon.endpoint


def test_an_installed_registered_plugin_and_its_running_daemon(machine, daemon):
    share_keys(machine, daemon)
    machine.install("--endpoint", daemon.endpoint, "--no-autostart")
    pluginrc(machine, "3.0", MENU)
    code, report = doctor(machine, "--python-check")
    assert [g["version"] for g in report["gimps"]] == ["3.0", "3.2"] and all(g["installed"] for g in report["gimps"])
    by = {(c["subject"], c["topic"]): c for c in report["checks"]}
    assert by["GIMP 3.0", "installed"]["status"] == "ok" and "the same as" in by["GIMP 3.0", "installed"]["message"]
    assert by["GIMP 3.0", "registered"]["status"] == "ok" and "6 procedures" in by["GIMP 3.0", "registered"]["message"]
    assert by["GIMP 3.2", "registered"]["status"] == "note", "GIMP 3.2 has not started yet: nothing to fix"
    assert "matching the daemon's local keys" in by["GIMP 3.0", "endpoint"]["message"]
    assert by["GIMP 3.2", "python"]["status"] == "ok"
    with daemon.client() as c:
        hello = c.hello()
    running = by[f"daemon {daemon.endpoint}", "daemon"]
    assert running["status"] == "ok", running
    for value in (f"weights {hello['weights']}", f"device {hello['device']}", f"database {hello['database']}"):
        assert value in running["message"]
    assert report["daemons"][0]["pid"] == daemon.pid
    assert code == 0 and report["ok"]
    text = machine.doctor("--python-check")
    assert text.returncode == 0 and text.stdout.rstrip().endswith("dfi doctor: nothing to fix")
    assert len(text.stdout.splitlines()) == len(report["checks"]) + 1, "one line per check"


def test_daemon_down_with_and_without_auto_start(machine):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    machine.install("--gimp-version", "3.0", "--endpoint", endpoint, "--no-autostart")
    code, report = doctor(machine, "--gimp-version", "3.0", "--timeout", "0.5")
    down = checks(report, f"daemon {endpoint}")[0]
    assert (code, down["status"]) == (1, "fix") and "auto-start is off" in down["message"]
    assert down["fix"] == f"start it: dfi daemon start --endpoint {endpoint}"
    machine.install("--gimp-version", "3.0", "--autostart", "--dfi", "/opt/dfi", "--daemon-args", "--device cpu")
    code, report = doctor(machine, "--gimp-version", "3.0", "--timeout", "0.5")
    down = checks(report, f"daemon {endpoint}")[0]
    assert (code, down["status"]) == (0, "note"), report
    assert f"/opt/dfi daemon start --endpoint {endpoint} --device cpu" in down["message"]


def test_keys_that_are_not_the_daemons_are_reported(machine, daemon):
    machine.install("--gimp-version", "3.0", "--endpoint", daemon.endpoint)  # this machine's own, other keys
    code, report = doctor(machine, "--gimp-version", "3.0", "--timeout", "1")
    silent = checks(report, f"daemon {daemon.endpoint}")[0]  # another server key: the daemon hears nothing
    assert (code, silent["status"]) == (1, "fix") and "something listens there but does not answer" in \
        silent["message"], report
    keys = machine.folder("3.0") / "keys"  # the daemon's server key, but a client key it does not know
    (keys / "server.key").write_bytes((daemon.config / "local-keys" / "server.key").read_bytes())
    code, report = doctor(machine, "--gimp-version", "3.0")
    refused = checks(report, f"daemon {daemon.endpoint}")[0]
    assert (code, refused["status"]) == (1, "fix") and "refused the CURVE keys of GIMP 3.0" in refused["message"]
    keys.chmod(0o755)  # as GIMP 3.2 leaves it when it copies an older profile's plug-ins over
    code, report = doctor(machine, "--gimp-version", "3.0", "--timeout", "1")
    assert "CURVE keys that others may read" in checks(report, "GIMP 3.0", "endpoint")[0]["message"]
    (keys / "client.key_secret").unlink()
    code, report = doctor(machine, "--gimp-version", "3.0")
    assert "has no CURVE keys" in checks(report, "GIMP 3.0", "endpoint")[0]["message"]
    assert "--gimp-version 3.0" in checks(report, "GIMP 3.0", "endpoint")[0]["fix"]


def test_damaged_and_outdated_installs(machine):
    machine.install("--gimp-version", "3.0,3.2", "--endpoint", "ipc:///nonexistent/daemon.sock")
    (machine.folder("3.0") / "dfi_bridge.py").write_text("# edited\n")
    folder = machine.folder("3.2")  # an older gimp-dfi: another protocol.py, recorded as such
    (folder / "dfi_wire" / "protocol.py").write_text("PROTOCOL_VERSION = 0\n")
    manifest = json.loads((folder / "install-manifest.json").read_text())
    manifest["sha256"]["dfi_wire/protocol.py"] = __import__("hashlib").sha256(b"PROTOCOL_VERSION = 0\n").hexdigest()
    (folder / "install-manifest.json").write_text(json.dumps(manifest))
    code, report = doctor(machine)
    damaged, old = checks(report, "GIMP 3.0", "installed")[0], checks(report, "GIMP 3.2", "installed")[0]
    assert code == 1 and damaged["status"] == old["status"] == "fix"
    assert "changed since the install (dfi_bridge.py)" in damaged["message"]
    assert "1 files differ from this gimp-dfi's" in old["message"] and "dfi_wire/protocol.py" in old["message"]
    assert "daemon ipc:///nonexistent/daemon.sock" in [c["subject"] for c in report["checks"]]


def test_gimp_started_but_did_not_register_the_plugin(machine):
    machine.install("--gimp-version", "3.0", "--endpoint", "ipc:///nonexistent/daemon.sock")
    rc = machine.profile("3.0") / "pluginrc"
    rc.write_text('(plug-in-def "${gimp_plug_in_dir}/plug-ins/other/other" 1\n    (proc-def "other" 1))\n')
    plugin = machine.folder("3.0") / "gimp-dfi.py"
    os.utime(rc, (plugin.stat().st_mtime + 10,) * 2)
    code, report = doctor(machine, "--gimp-version", "3.0")
    check = checks(report, "GIMP 3.0", "registered")[0]
    assert (code, check["status"]) == (1, "fix") and "did not register the plug-in" in check["message"]
    os.utime(rc, (plugin.stat().st_mtime - 10,) * 2)  # written before the install: GIMP has not started since
    assert checks(doctor(machine, "--gimp-version", "3.0")[1], "GIMP 3.0", "registered")[0]["status"] == "note"


def test_no_gimp_at_all_and_doctor_stays_light(tmp_path):
    machine = FakeMachine(tmp_path)
    code = ("import sys; from dfi_daemon.cli import main; rc = main(['doctor']); "
            "bad = [m for m in ('torch', 'numpy', 'dfi_engine', 'dfi_daemon.server.daemon') if m in sys.modules]; "
            "assert not bad, bad; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=machine.env, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "fix   GIMP: no GIMP 3 found" in res.stdout and "install GIMP 3, then run" in res.stdout


def test_fix_installs_into_the_gimp_that_lacks_the_plugin(machine, daemon):
    """A GIMP upgrade (3.2 next to 3.0) is found and fixed by 'dfi doctor --fix', then checked again."""
    share_keys(machine, daemon)
    machine.install("--gimp-version", "3.0", "--endpoint", daemon.endpoint, "--no-autostart")
    res = machine.doctor("--fix")
    assert "dfi doctor: fixing: " in res.stdout and "--gimp-version 3.2" in res.stdout, res.stdout
    assert res.returncode == 0 and res.stdout.rstrip().endswith("dfi doctor: nothing to fix"), res.stdout
    code, report = doctor(machine)
    assert checks(report, "GIMP 3.2", "installed")[0]["status"] == "ok", report
    assert json.loads((machine.folder("3.2") / "gimp-dfi.json").read_text())["endpoint"] == daemon.endpoint
