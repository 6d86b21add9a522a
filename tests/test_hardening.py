"""Defects found by an outside barrage and a newcomer's first hour, each against a real daemon process.

Every test here failed before its fix (the defect number of the hardening issue is in each name).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq
from dfi_wire import protocol as P
from helpers.daemon_process import DaemonProcess, env_for, run_cli, running_job


def server(base: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.server", "--weights", "random:0", "--database",
                           "synthetic", "--threads", "1", *args], env=env_for(base), capture_output=True, text=True,
                          timeout=timeout)


def test_7_an_ipc_endpoint_never_replaces_a_users_file(base):
    notes = base / "notes.txt"
    notes.write_text("my notes\n")
    r = server(base, "--endpoint", f"ipc://{notes}")
    assert r.returncode == 2, r.stderr
    assert "is not a socket" in r.stderr and "Traceback" not in r.stderr
    assert notes.read_text() == "my notes\n" and not (base / "notes.txt.pid").exists()


@pytest.mark.parametrize("flag, value", [("--max-message-mb", "-1"), ("--max-message-mb", "0"),
                                         ("--max-pixels", "-5"), ("--max-queue", "-1"),
                                         ("--client-timeout", "0"), ("--threads", "-2")])
def test_9_numeric_options_are_checked_before_start(base, flag, value):
    t0 = time.monotonic()
    r = server(base, flag, value, "--endpoint", f"ipc://{base / 'd.sock'}")
    assert r.returncode == 2 and flag in r.stderr and "must be" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30, "refused before loading anything heavy"
    assert not (base / "d.sock").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_unavailable_device_is_a_clear_start_error(base):
    r = server(base, "--device", "cuda", "--endpoint", f"ipc://{base / 'd.sock'}")
    assert r.returncode == 1 and "not available" in r.stderr and "--device cpu" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "AssertionError" not in r.stderr
    assert "crashed" not in (base / "state" / "daemon.log").read_text()
    r = run_cli(base, "attributes", "--device", "cuda", "--threads", "1")  # auto-started: the same, in one line
    if not torch.cuda.is_available():
        assert r.returncode == 2 and len([ln for ln in r.stderr.splitlines() if "not available" in ln]) == 1
        assert r.stderr.strip().splitlines()[-1].startswith("dfi: error: The daemon exited during start-up: "), \
            r.stderr


def test_auto_device_says_which_one(base):
    with DaemonProcess(base) as d, d.client() as c:
        assert c.status()["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_file_that_is_no_checkpoint_gets_a_one_line_answer(base):
    r = run_cli(base, "attributes", "--weights", "/etc/passwd", "--threads", "1")
    assert r.returncode == 2 and "not a readable PyTorch checkpoint" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "IndexError" not in r.stderr.split("(")[0]
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("dfi: starting the daemon")]
    assert len(errors) == 1 and errors[0].startswith("dfi: error: The daemon exited during start-up: "), r.stderr


def test_a_closed_pipe_is_not_a_traceback(base):
    with DaemonProcess(base) as d:
        r = subprocess.run(f"{sys.executable} -m dfi_daemon.cli daemon status | head -c 1 > /dev/null",
                           shell=True, env=d.env(), capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def raw_request(endpoint: str, payload: bytes, timeout: float = 10) -> dict:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send(payload)
        assert s.poll(int(timeout * 1000)), "no answer"
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


def test_11_rejections_say_what_is_wrong(base):
    with DaemonProcess(base) as d:
        no_op = raw_request(d.endpoint, msgpack.packb({"v": 1, "id": 1}))
        assert no_op["code"] == "unknown_op" and "no 'op'" in no_op["message"]
        wrong = raw_request(d.endpoint, msgpack.packb({"v": 1, "id": 2, "op": 7}))
        assert "of type int" in wrong["message"] and "NoneType" not in wrong["message"]
        image = P.image_map(bytes(48 * 48 * 3), 48, 48, "RGB8")
        many = raw_request(d.endpoint, msgpack.packb({"v": 1, "id": 3, "op": "edit", "image": image,
                                                      "attribute": "facehair", "strengths": [0.5] * 4097}))
        assert many["code"] == "bad_message" and "at most 16 strengths" in many["message"], many
        assert "(ValueError)" not in many["message"]


def test_11_daemon_unavailable_is_not_a_usage_error(base):
    r = run_cli(base, "attributes", "--no-autostart", timeout=60)
    assert r.returncode == 3 and "dfi daemon start" in r.stderr


LONG_JOB = """
import sys
from dfi_wire.client import Client
from dfi_wire import protocol as P
msg = P.edit_request(P.image_map(bytes(48 * 48 * 3), 48, 48, "RGB8"), "facehair", [1.0], iterations=10000, k=2)
with Client(sys.argv[1], timeout=600) as c:
    reply = c.run_job(msg)
print("FINAL", reply.get("type"), reply.get("code"), flush=True)
"""


def client_job(d: DaemonProcess, script: str) -> tuple[subprocess.Popen, str]:
    """A client process running ``script`` against ``d``; returns once its job runs."""
    proc = subprocess.Popen([sys.executable, "-c", script, d.endpoint], env=d.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not running_job(d) and time.monotonic() < end:
        time.sleep(0.2)
    job = running_job(d)
    assert job, "the job never started"
    return proc, job


def test_8_a_paused_daemon_keeps_its_live_clients(base):
    """SIGSTOP for longer than the client timeout, then SIGCONT: a client that heartbeated throughout keeps
    its job (before the fix it got client_gone at once)."""
    import signal

    with DaemonProcess(base, "--client-timeout", "3") as d:
        proc, job = client_job(d, LONG_JOB)
        try:
            os.kill(d.pid, signal.SIGSTOP)
            time.sleep(8)
            os.kill(d.pid, signal.SIGCONT)
            time.sleep(5)  # longer than the timeout again, with heartbeats flowing
            assert running_job(d) == job, (base / "state" / "daemon.log").read_text()[-2000:]
            assert "client silent" not in (base / "state" / "daemon.log").read_text()
        finally:
            proc.kill()
            proc.wait(10)


def test_10_an_undecodable_request_gets_its_error_not_a_timeout(base):
    """A request the daemon cannot even decode (a list longer than any message may hold) is answered with a
    nil id; the caller gets that error at once instead of waiting for its timeout."""
    from dfi_wire.client import Client, DaemonError

    with DaemonProcess(base) as d, Client(d.endpoint, timeout=20) as c:
        bad = P.edit_request(P.image_map(bytes(48 * 48 * 3), 48, 48, "RGB8"), "facehair", [0.5] * 4097)
        t0 = time.monotonic()
        with pytest.raises(DaemonError) as e:
            c.call(bad)
        assert e.value.code == "bad_message" and time.monotonic() - t0 < 5


def test_10_a_killed_daemon_is_noticed_within_seconds(base):
    import signal

    with DaemonProcess(base) as d:
        proc, _ = client_job(d, LONG_JOB)
        try:
            os.kill(d.pid, signal.SIGKILL)
            t0 = time.monotonic()
            _, err = proc.communicate(timeout=30)
            assert time.monotonic() - t0 < 8, "noticed within the liveness window"
            assert "stopped answering" in err and "restarts automatically" not in err, err[-500:]
        finally:
            proc.kill()


BIG_JOB = """
import sys
from dfi_wire.client import Client, DaemonError
from dfi_wire import protocol as P
msg = P.edit_request(P.image_map(bytes(400 * 400 * 3), 400, 400, "RGB8"), "facehair", [1.0], iterations=5, k=1000)
with Client(sys.argv[1], timeout=600) as c:
    try:
        reply = c.run_job(msg)
        print("FINAL", reply.get("type"), flush=True)
    except DaemonError as e:
        print("FINAL error", e.code, flush=True)
"""


def neighbour_step_job(d: DaemonProcess) -> tuple[subprocess.Popen, str]:
    proc, job = client_job(d, BIG_JOB)
    time.sleep(2)  # well inside the neighbour step (2,000 faces to render and extract)
    return proc, job


def test_2_the_neighbour_step_is_cancelled_within_seconds(base):
    """k=1000 synthetic neighbours at 400x400: they used to be rendered all at once with no cancel check
    (tens of seconds, 2,000 faces in memory). Now they stream, with a cancel check per face and per batch."""
    with DaemonProcess(base) as d:
        proc, job = neighbour_step_job(d)
        try:
            t0 = time.monotonic()
            with d.client() as c:
                c.cancel(job)
            out, _ = proc.communicate(timeout=60)
            assert "FINAL error cancelled" in out, out
            assert time.monotonic() - t0 < 4, f"cancel took {time.monotonic() - t0:.1f} s"
        finally:
            proc.kill()


def test_1_a_stop_during_a_long_neighbour_step_is_clean(base):
    """A stop used to wait 30 s, then abort the process (SIGABRT) without telling the client."""
    import signal

    d = DaemonProcess(base).start()
    try:
        proc, _ = neighbour_step_job(d)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.stderr()
        assert time.monotonic() - t0 < 8, "stopped within seconds"
        out, _ = proc.communicate(timeout=30)
        assert "FINAL error shutting_down" in out, out
        assert "terminate called" not in d.stderr()
    finally:
        d.stop()


def test_3_an_object_count_bomb_is_refused_before_decoding(base):
    """32 MiB of nested empty maps used to cost +2.2 GB and stall every client for ~6 s."""
    import struct

    inner = b"\xdc" + struct.pack(">H", 4090) + b"\x80" * 4090
    outer = b"\xdc" + struct.pack(">H", 4096) + inner * 4096
    bomb = b"\x92" + outer + outer
    with DaemonProcess(base, "--max-message-mb", "40") as d, d.client(10) as other:
        before = d.rss_kb()
        t0 = time.monotonic()
        reply = raw_request(d.endpoint, bomb, timeout=30)
        assert reply["code"] == "bad_message" and "msgpack objects" in reply["message"], reply
        t1 = time.monotonic()
        other.ping()
        assert time.monotonic() - t1 < 1.0 and t1 - t0 < 5.0
        assert (d.rss_kb() - before) / 1024 < 300, "the frame itself, not a Python object per byte"


def test_newcomer_a_running_daemon_with_other_settings_is_never_silently_used(base):
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


@pytest.fixture
def smoke(base):
    """A running smoke daemon and the CLI pointed at it."""
    with DaemonProcess(base) as d:
        yield d


def edit_cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "edit", *args, "--attribute", "facehair",
                           "--iterations", "2", "-k", "2", "--no-autostart"], env=d.env(), capture_output=True,
                          text=True, timeout=120)


def make_png(path: Path, size: int = 48) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), (120, 90, 60)).save(path)
    return path


def test_newcomer_broken_and_huge_files_get_one_line(smoke, base):
    from PIL import Image

    good = make_png(base / "good.png", 64)
    (base / "trunc.png").write_bytes(good.read_bytes()[:-60])
    Image.new("1", (30000, 30000)).save(base / "huge.png")  # 1-bit: a small file, 900 MP
    for name in ("trunc.png", "huge.png"):
        r = edit_cli(smoke, str(base / name), "-o", str(base / "out-{stem}.png"))
        assert r.returncode == 2 and "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "truncated or damaged" in edit_cli(smoke, str(base / "trunc.png")).stderr
    assert not list(base.glob("out-*")), "nothing written"


def test_newcomer_unwritable_outputs_are_refused_before_the_work(smoke, base):
    src = make_png(base / "p.png")
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    targets = ["/proc/out.png", "/sys/out.png", f"{base}/x.unknown"]
    if os.getuid() != 0:  # root writes into a 0555 folder anyway
        targets.append(f"{ro}/x.png")
    for target in targets:
        t0 = time.monotonic()
        r = edit_cli(smoke, str(src), "-o", target)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "writable" in r.stderr or "format" in r.stderr or "not a folder" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 20
    with smoke.client() as c:
        assert c.status()["queue"]["running"] is None


def test_newcomer_batch_reruns_leave_out_own_results_and_summarise(smoke, base):
    for n in ("a", "b"):
        make_png(base / f"{n}.png")
    pattern = str(base / "*.png")
    r = edit_cli(smoke, pattern, "--strength", "0.5")
    assert r.returncode == 0 and "done: 2 edited" in r.stderr, r.stderr
    r = edit_cli(smoke, pattern, "--strength", "0.5")  # the glob now also matches a-facehair-0.5.png
    assert r.returncode == 0 and "leaving out 2 file(s)" in r.stderr and "will be replaced" in r.stderr, r.stderr
    r = edit_cli(smoke, pattern, "--strength", "0.5", "--skip-existing")
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert sorted(p.name for p in base.glob("*.png")) == ["a-facehair-0.5.png", "a.png", "b-facehair-0.5.png",
                                                          "b.png"]
