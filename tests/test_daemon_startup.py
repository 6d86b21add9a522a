"""Daemon start-up against real processes: options, endpoints, devices, weights and the running daemon's
settings are checked before anything starts, and every refusal is one line saying what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.daemon_process import DaemonProcess, env_for, run_cli

pytestmark = pytest.mark.slow  # every test starts the daemon or the CLI as a process


def server(base: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m dfi_daemon.server`` with the tests' light settings and its folders in ``base``."""
    return subprocess.run([sys.executable, "-m", "dfi_daemon.server", "--weights", "random:0", "--database",
                           "synthetic", "--threads", "1", *args], env=env_for(base), capture_output=True, text=True,
                          timeout=timeout)


def private_socket(base: Path) -> tuple[str, str]:
    return "--endpoint", f"ipc://{base / 'd.sock'}"


# Guards: an ipc:// endpoint naming a user's file is refused, the file and its neighbours untouched.
def test_an_ipc_endpoint_never_replaces_a_users_file(base):
    notes = base / "notes.txt"
    notes.write_text("my notes\n")
    r = server(base, "--endpoint", f"ipc://{notes}")
    assert r.returncode == 2, r.stderr
    assert "is not a socket" in r.stderr and "Traceback" not in r.stderr
    assert notes.read_text() == "my notes\n" and not (base / "notes.txt.pid").exists()


# Guards: negative or zero sizes, counts and timeouts are refused before any weights load.
@pytest.mark.parametrize("flag, value", [("--max-message-mb", "-1"), ("--max-message-mb", "0"),
                                         ("--max-pixels", "-5"), ("--max-queue", "-1"),
                                         ("--client-timeout", "0"), ("--threads", "-2")])
def test_numeric_options_are_checked_before_start(base, flag, value):
    t0 = time.monotonic()
    r = server(base, flag, value, *private_socket(base))
    assert r.returncode == 2 and flag in r.stderr and "must be" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30, "refused before loading anything heavy"
    assert not (base / "d.sock").exists()


# Guards: nan, inf and absurd numbers are refused in one line (nan/inf once crashed with a traceback).
@pytest.mark.parametrize("flag, value", [("--max-message-mb", "nan"), ("--max-message-mb", "inf"),
                                         ("--max-message-mb", "1e12"), ("--client-timeout", "inf"),
                                         ("--client-timeout", "nan"), ("--client-timeout", "1e9")])
def test_non_finite_and_huge_numbers_are_refused_in_one_line(base, flag, value):
    """``--max-message-mb nan|inf`` crashed start-up with a traceback; ``--client-timeout inf`` was accepted."""
    r = server(base, flag, value, *private_socket(base))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and flag in lines[0] and "must be" in lines[0], r.stderr
    assert not (base / "d.sock").exists()


# Guards: the CLI's `daemon start` and the DFI_CLIENT_TIMEOUT variable refuse non-finite numbers too.
def test_the_cli_and_the_environment_refuse_non_finite_numbers_too(base):
    r = run_cli(base, "daemon", "start", "--foreground", "--max-message-mb", "inf", *private_socket(base),
                timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--max-message-mb" in r.stderr, r.stderr
    env = {**env_for(base), "DFI_CLIENT_TIMEOUT": "nan"}
    r = subprocess.run([sys.executable, "-m", "dfi_daemon.server", *private_socket(base)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--client-timeout" in r.stderr, r.stderr


# Guards: asking for a device this machine lacks is a one-line start error, from the server and the CLI.
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_unavailable_device_is_a_clear_start_error(base):
    r = server(base, "--device", "cuda", *private_socket(base))
    assert r.returncode == 1 and "not available" in r.stderr and "--device cpu" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "AssertionError" not in r.stderr
    assert "crashed" not in (base / "state" / "daemon.log").read_text()
    r = run_cli(base, "attributes", "--device", "cuda", "--threads", "1")  # auto-started: the same, in one line
    if not torch.cuda.is_available():
        assert r.returncode == 2 and len([ln for ln in r.stderr.splitlines() if "not available" in ln]) == 1
        assert r.stderr.strip().splitlines()[-1].startswith("dfi: error: The daemon exited during start-up: "), \
            r.stderr


# Guards: the default device choice is reported in status.
def test_auto_device_says_which_one(base):
    with DaemonProcess(base) as d, d.client() as c:
        assert c.status()["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


# Guards: a weights file that is no checkpoint ends an auto-start with one line, no traceback.
def test_a_file_that_is_no_checkpoint_gets_a_one_line_answer(base):
    r = run_cli(base, "attributes", "--weights", "/etc/passwd", "--threads", "1")
    assert r.returncode == 2 and "not a readable PyTorch checkpoint" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "IndexError" not in r.stderr.split("(")[0]
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("dfi: starting the daemon")]
    assert len(errors) == 1 and errors[0].startswith("dfi: error: The daemon exited during start-up: "), r.stderr


# Guards: a running daemon with other settings is restarted (auto-started) or reported (started on purpose).
def test_a_running_daemon_with_other_settings_is_never_silently_used(base):
    quick = ("--threads", "1", "--no-warm-up")
    r = run_cli(base, "attributes", "--weights", "random:0", "--database", "synthetic", *quick)
    assert r.returncode == 0, r.stderr
    # auto-started by a command: a command asking for other settings restarts it, and says so
    r = run_cli(base, "attributes", "--weights", "random:1", "--database", "synthetic", *quick)
    assert r.returncode == 0 and "restarting it with --weights random:1" in r.stderr, r.stderr
    r = run_cli(base, "daemon", "stop")
    # started on purpose: reported, with what to do
    r = run_cli(base, "daemon", "start", "--weights", "random:0", "--database", "synthetic", *quick)
    assert r.returncode == 0, r.stderr
    r = run_cli(base, "attributes", "--weights", "random:1")
    assert r.returncode == 2 and "runs with --weights random:0" in r.stderr and "dfi daemon stop" in r.stderr
    r = run_cli(base, "daemon", "start", "--weights", "random:1", "--database", "synthetic")
    assert r.returncode == 3 and "--weights random:0" in r.stderr and "dfi daemon stop" in r.stderr
    r = run_cli(base, "attributes")  # no settings given: the running daemon serves
    assert r.returncode == 0 and "facehair" in r.stdout


def unix_socket_file(path: Path) -> None:
    """A socket file left behind, as a killed process leaves it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


# Guards: a SIGKILLed daemon's front-PID.sock is removed by the next daemon; live and foreign files stay.
def test_a_killed_daemons_link_socket_is_removed_by_the_next_daemon(base):
    """Each SIGKILLed daemon left its front-PID.sock in the runtime folder, for ever."""
    run = base / "run"
    other = DaemonProcess(base, endpoint=f"ipc://{run / 'other.sock'}").start()  # alive: its link stays
    try:
        d = DaemonProcess(base).start()
        stale = run / f"front-{d.pid}.sock"
        assert stale.exists()
        d.kill()
        run.joinpath("front-not-a-pid.sock").write_text("")  # not ours by name: left alone
        reused = run / f"front-{os.getpid()}.sock"  # a live process that is no daemon (a reused pid)
        unix_socket_file(reused)
        with DaemonProcess(base):  # (its stop kills every daemon of the folder: check the other one first)
            left = sorted(p.name for p in run.glob("front-*.sock"))
            with other.client(10) as c:
                assert c.ping()["type"] == "pong", "the live daemon's link still works"
        assert stale.name not in left and reused.name not in left, left
        assert f"front-{other.pid}.sock" in left and "front-not-a-pid.sock" in left, left
    finally:
        other.stop()
