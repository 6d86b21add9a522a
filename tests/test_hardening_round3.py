"""Hardening, round 3 (issue 22): start-up numbers, stale link sockets and reused request ids, each against real
daemon processes and real sockets. Every test here failed before its fix (the defect number is in each name)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from dfi_wire import protocol as P
from helpers.daemon_process import DaemonProcess, env_for, run_cli
from test_daemon import portrait, wire


def server(base: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.server", "--weights", "random:0", "--database",
                           "synthetic", "--threads", "1", "--endpoint", f"ipc://{base / 'd.sock'}", *args],
                          env=env_for(base), capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- 6: non-finite numbers


@pytest.mark.parametrize("flag, value", [("--max-message-mb", "nan"), ("--max-message-mb", "inf"),
                                         ("--max-message-mb", "1e12"), ("--client-timeout", "inf"),
                                         ("--client-timeout", "nan"), ("--client-timeout", "1e9")])
def test_6_non_finite_and_huge_numbers_are_refused_in_one_line(base, flag, value):
    """``--max-message-mb nan|inf`` crashed start-up with a traceback; ``--client-timeout inf`` was accepted."""
    r = server(base, flag, value)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and flag in lines[0] and "must be" in lines[0], r.stderr
    assert not (base / "d.sock").exists()


def test_6_the_cli_refuses_them_too(base):
    r = run_cli(base, "daemon", "start", "--foreground", "--max-message-mb", "inf", "--endpoint",
                f"ipc://{base / 'd.sock'}", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--max-message-mb" in r.stderr, r.stderr
    env = {**env_for(base), "DFI_CLIENT_TIMEOUT": "nan"}
    r = subprocess.run([sys.executable, "-m", "dfi_daemon.server", "--endpoint", f"ipc://{base / 'd.sock'}"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--client-timeout" in r.stderr, r.stderr


# --------------------------------------------------------------------------- 5: stale front-link sockets


def unix_socket_file(path: Path) -> None:
    """A socket file left behind, as a killed process leaves it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_5_a_killed_daemons_link_socket_is_removed_by_the_next_daemon(base):
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


# --------------------------------------------------------------------------- 3: a reused request id


def small_edit(seed: int, **options: object) -> dict:
    return P.edit_request(wire(portrait(seed, 48, 48, False)), "facehair", [1.0], **{"iterations": 8, "k": 2,
                                                                                     **options})


class Conn:
    """One DEALER with a fixed routing id: the same client on one connection."""

    def __init__(self, endpoint: str) -> None:
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.ROUTING_ID, b"c-round3-" + os.urandom(4))
        self.s.connect(endpoint)

    def send(self, msg: dict) -> None:
        self.s.send(P.pack(msg))

    def until(self, *kinds: str, timeout: float = 90) -> list[dict]:
        got: list[dict] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.s.poll(int((end - time.monotonic()) * 1000)):
            got.append(P.unpack(self.s.recv(), 1 << 31))
            if got[-1]["type"] in (*kinds, "error"):
                return got
        raise AssertionError(f"no {kinds} reply; got {[g['type'] for g in got]}")

    def close(self) -> None:
        self.s.close()


def test_3_a_reused_request_id_gets_its_own_answer(base):
    """Edit A with id "again", then edit B (another image) with the same id: B was answered with A's job and
    pixels. Now a finished id is free again, and a resend is recognised by its content."""
    with DaemonProcess(base) as d:
        c = Conn(d.endpoint)
        try:
            a, b = {**small_edit(1), "id": "again"}, {**small_edit(2), "id": "again"}
            c.send(a)
            first = c.until("result")
            c.send(b)
            second = c.until("result")
            assert second[0]["type"] == "accepted" and second[0]["job"] != first[0]["job"], second[0]
            assert second[-1]["type"] == "result" and second[-1]["job"] == second[0]["job"]
            assert second[-1]["images"][0]["data"] != first[-1]["images"][0]["data"], "B got A's pixels"
            c.send(b)  # the same request again (as after a reconnect): its own job, not run twice
            again = c.until("result")
            assert [m["type"] for m in again] == ["accepted", "result"] and again[0]["job"] == second[0]["job"]
        finally:
            c.close()
        assert d.stderr_path.read_text().count(" accepted (") == 2


def test_3_another_request_under_the_id_of_a_running_job_is_refused(base):
    with DaemonProcess(base, "--client-timeout", "60") as d:  # (this raw client sends no heartbeats)
        c = Conn(d.endpoint)
        try:
            long = {**small_edit(1, iterations=10_000), "id": "busy"}
            c.send(long)
            job = c.until("accepted")[-1]["job"]
            c.send({**small_edit(2), "id": "busy"})
            refused = c.until("never")[-1]
            assert refused["code"] == "id_in_use" and refused["id"] == "busy", refused
            assert job in refused["message"] and "new id" in refused["hint"]
            c.send(long)  # the running job's own request, sent again: recognised
            assert [m for m in c.until("accepted") if m["type"] == "accepted"][-1]["job"] == job
            c.send(P.simple("cancel", id="x", job=job))
            assert c.until("cancelling")[-1]["type"] == "cancelling"
        finally:
            c.close()
        assert d.stderr_path.read_text().count(" accepted (") == 1
