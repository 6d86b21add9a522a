"""Daemon life cycle with real processes: auto-start, stop, single instance, crashes, stale files, TCP/CURVE."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError, DaemonUnavailable
from helpers.daemon_process import DaemonProcess, run_cli

pytestmark = pytest.mark.slow  # starts, crashes and stops daemon processes


def dfi(base: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(base, *args, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_autostart_status_logs_stop(base):
    r = dfi(base, "attributes", "--weights", "random:0", "--database", "synthetic", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "facehair" in r.stdout and "starting the daemon" in r.stderr
    sock, pid_file = base / "run/daemon.sock", base / "run/daemon.sock.pid"
    assert sock.exists() and pid_file.exists()
    pid = int(pid_file.read_text().split()[0])
    r = dfi(base, "daemon", "status")
    assert r.returncode == 0 and "RANDOM" in r.stdout and f"pid {pid}" in r.stdout, r.stdout + r.stderr
    assert "quality:    fast = 150 iterations" in r.stdout and "balanced = " in r.stdout, r.stdout
    assert "(the default)" in next(line for line in r.stdout.splitlines() if "balanced = " in line), r.stdout
    r = dfi(base, "attributes", "--no-autostart")  # the running daemon is reused
    assert r.returncode == 0 and "starting" not in r.stderr
    r = dfi(base, "daemon", "logs", "-n", "20")
    assert "ready on ipc://" in r.stdout
    r = dfi(base, "daemon", "stop")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert not sock.exists() and not pid_file.exists()
    assert dfi(base, "daemon", "status").returncode == 3
    assert "no daemon" in dfi(base, "daemon", "stop").stdout


def test_no_autostart_and_failed_start_are_clear_errors(base):
    r = dfi(base, "attributes", "--no-autostart")
    assert r.returncode == 3 and "No dfi daemon is running" in r.stderr and "dfi daemon start" in r.stderr
    r = dfi(base, "attributes", "--weights", str(base / "missing.pth"), "--threads", "1")
    assert r.returncode == 2
    assert "exited during start-up" in r.stderr and "missing.pth" in r.stderr, r.stderr


def test_single_instance_daemon_crash_and_stale_files(base):
    first = DaemonProcess(base, "--client-timeout", "3").start()
    try:
        # a second daemon on the same endpoint is refused at once, naming the first one
        second = DaemonProcess(base)
        second.start(wait=False)
        assert second.proc.wait(30) == 3
        assert "already running" in second.stderr() and str(first.pid) in second.stderr()
        # the daemon dies mid-job: the client reports it within its timeout
        outcome: dict[str, object] = {}

        def client() -> None:
            data = bytes(range(48)) * (48 * 3)
            msg = P.edit_request(P.image_map(data, 48, 48, "RGB8"), "facehair", [1.0], iterations=10_000, k=2)
            with Client(first.endpoint, timeout=4.0) as c:
                try:
                    c.run_job(msg, lambda ev: outcome.setdefault("accepted", ev))
                except DaemonError as e:
                    outcome["error"] = e
                    outcome["t"] = time.monotonic()

        t = threading.Thread(target=client)
        t.start()
        end = time.monotonic() + 60
        while "accepted" not in outcome and time.monotonic() < end:
            time.sleep(0.1)
        assert "accepted" in outcome
        time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        t.join(30)
        err = outcome.get("error")
        assert isinstance(err, DaemonUnavailable) and "stopped answering" in err.message, err
        assert outcome["t"] - killed < 4.0 + 3.0
    finally:
        first.kill()
    # the crash left its socket and pid file behind; a new daemon starts anyway
    assert (base / "run/daemon.sock").exists() and (base / "run/daemon.sock.pid").exists()
    with DaemonProcess(base) as third:
        with third.client(10) as c:
            assert c.ping()["type"] == "pong"
            # SIGTERM mid-job: the client is told, the daemon exits cleanly and removes its files
            data = bytes(range(48)) * (48 * 3)
            c.send(P.edit_request(P.image_map(data, 48, 48, "RGB8"), "facehair", [1.0], iterations=10_000, k=2))
            assert c.receive(30)["type"] == "accepted"
            third.proc.send_signal(signal.SIGTERM)
            replies = []
            while (r := c.receive(20)) is not None and r["type"] != "error":
                replies.append(r)
            assert r is not None and r["code"] == "shutting_down", replies
        assert third.proc.wait(30) == 0
    assert "removing stale socket" in (base / "state/daemon.log").read_text()
    assert not (base / "run/daemon.sock").exists() and not (base / "run/daemon.sock.pid").exists()


def test_demo_smoke_mode_is_labelled(base, tmp_path):
    r = dfi(base, "demo", "--smoke", "-o", str(tmp_path / "demo"), "--size", "48", "--iterations", "5", "-k", "2",
            "--strength", "0.5,1.5", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OFFLINE SMOKE MODE" in r.stdout and "NOT a real edit" in r.stdout
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == ["contact_sheet.png", "demo_facehair_0.5.png", "demo_facehair_1.5.png", "input.png"]
    from PIL import Image

    assert Image.open(tmp_path / "demo/demo_facehair_1.5.png").size == (48, 48)
    assert not list((base / "run").glob("demo-smoke.sock*")), "the smoke daemon is stopped afterwards"


def test_demo_edits_a_real_portrait_with_real_features(base, tmp_path, hed_file):
    """The README's main job on a fresh machine: no VGG-19, no LFW, yet real features on a real photo."""
    pytest.importorskip("dlib")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    r = dfi(base, "demo", "-o", str(out), "--iterations", "30", "--no-fallback", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SMOKE" not in r.stdout and "VGG-16 (HED)" in r.stdout and "painted examples" in r.stdout
    import numpy as np
    from PIL import Image

    photo = np.asarray(Image.open(out / "input.png").convert("RGB")).astype(int)
    glasses = sorted(out.glob("demo_dark_glasses_*.png"))
    fills = sorted(out.glob("demo_fill_*.png"))
    assert len(glasses) == 3 and len(fills) == 2, sorted(p.name for p in out.iterdir())
    for path in glasses + fills:
        im = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert im.shape == photo.shape
        assert np.array_equal(im[:40], photo[:40]) and np.array_equal(im[-40:], photo[-40:]), \
            f"{path.name}: only the face changes"
        assert np.abs(im - photo).max() > 30, f"{path.name}: a visible edit"
    assert Image.open(out / "contact_sheet.png").width > photo.shape[1]
    assert not list((base / "run").glob("demo.sock*")), "the demo daemon is stopped afterwards"


def test_the_demo_runs_again_over_its_own_earlier_output(tmp_path):
    """A newcomer runs 'dfi demo' twice: its painted-examples database is made anew, not refused."""
    pytest.importorskip("skimage")
    from dfi_daemon.samples import build_database

    from dfi_engine.faces.database import Database

    for _ in range(2):
        db = build_database(tmp_path / "examples", tmp_path / "glasses.db")
    assert Database(db).count == 24


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:{port}", "tcp://*:{port}", "tcp://192.0.2.1:{port}"])
def test_non_loopback_tcp_without_keys_is_refused(base, endpoint):
    ep = endpoint.format(port=free_port())
    d = DaemonProcess(base, endpoint=ep)
    d.start(wait=False)
    assert d.proc.wait(30) == 2
    assert "Refusing to listen" in d.stderr() and "CURVE" in d.stderr()


def test_curve_remote_use(base, monkeypatch):
    keys = base / "keys"
    r = dfi(base, "daemon", "keys", "--dir", str(keys))
    assert r.returncode == 0, r.stderr
    port = free_port()
    monkeypatch.setenv("DFI_CURVE_SERVER_KEY", str(keys / "server.key"))
    monkeypatch.setenv("DFI_CURVE_CLIENT_KEY", str(keys / "client.key_secret"))
    with DaemonProcess(base, "--curve-dir", str(keys), endpoint=f"tcp://0.0.0.0:{port}") as d:
        assert d.proc.poll() is None
        with Client(f"tcp://127.0.0.1:{port}", timeout=10) as c:
            assert c.hello()["version"] == P.PROTOCOL_VERSION
        monkeypatch.delenv("DFI_CURVE_CLIENT_KEY")
        with Client(f"tcp://127.0.0.1:{port}", timeout=10) as c:  # no keys: refused at the handshake, said so
            with pytest.raises(DaemonError) as e:
                c.ping()
            assert e.value.code == "unauthorized" and "no keys" in e.value.message
