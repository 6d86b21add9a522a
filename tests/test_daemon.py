"""A real daemon process over real ZeroMQ sockets: CLI end to end, robustness, concurrency, cancel, faults.

One daemon (random:0 weights, synthetic neighbours, 1 thread) serves the whole
module; it is killed at teardown whatever happens. Images are 48-62 px and
jobs run 8 iterations with K=2, so every job takes a second or two.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from dfi_wire import protocol as P
from dfi_wire.client import DaemonError
from helpers.daemon_process import DaemonProcess, running_job
from helpers.portraits import portrait, wire
from PIL import Image

pytestmark = pytest.mark.slow  # one daemon process serves the module; CLI and client processes

FAST = {"iterations": 8, "k": 2}
CLIENT_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def daemon():
    d = DaemonProcess(None, "--max-queue", "3", "--client-timeout", str(CLIENT_TIMEOUT), "--max-message-mb", "4")
    try:
        d.start()
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def cli(d: DaemonProcess, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfi_daemon.cli", *args], env=d.env(), capture_output=True,
                          text=True, timeout=timeout)


def lower_mask(w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 2:h - 4, 6:w - 6] = 255
    return m


def from_wire(m: dict) -> np.ndarray:
    c = {"RGB8": 3, "RGBA8": 4}[m["format"]]
    return np.frombuffer(m["data"], np.uint8).reshape(m["height"], m["width"], c)


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def wait_for(cond, timeout: float, step: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


# --------------------------------------------------------------------------- set-up and security


def test_private_socket_folder_pid_and_log(daemon):
    sock = daemon.runtime / "daemon.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.runtime.stat().st_mode) == 0o700
    pid_file = daemon.runtime / "daemon.sock.pid"
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
    assert int(pid_file.read_text().split()[0]) == daemon.pid
    log = daemon.state / "daemon.log"
    assert stat.S_IMODE(daemon.state.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "ready on ipc://" in log.read_text()


def test_hello_status_attributes(daemon):
    with daemon.client() as c:
        h = c.hello()
        assert h["version"] == P.PROTOCOL_VERSION and "edit" in h["ops"] and "inpaint" in h["ops"]
        assert h["limits"]["max_message_bytes"] == 4 * 1024 * 1024
        assert "RANDOM" in h["weights"] and h["synthetic"] is True
        st = c.status()
        assert st["pid"] == daemon.pid and st["device"] == "cpu" and st["memory"]["rss_bytes"] > 10**7
        assert st["queue"]["max_queue"] == 3 and "SYNTHETIC" in st["database"]
        from dfi_engine.presets import presets_for

        assert set(st["presets"]) == set(P.QUALITIES)
        assert {n: p["iterations"] for n, p in h["presets"].items()} == \
            {n: p.iterations for n, p in presets_for("cpu").items()}, "hello names the engine's presets"
        assert st["presets"]["fast"]["iterations"] >= 150 and "iterations" in st["presets"]["best"]["text"]
        echo = c.echo(wire(portrait(1, 50, 40, True)))  # the transport alone, no engine work
        assert echo["image"] == wire(portrait(1, 50, 40, True))
        attrs = c.attributes()
        assert [a["name"] for a in attrs["attributes"]] == ["facehair"]
        with pytest.raises(DaemonError) as e:
            c.call({"v": 1, "op": "hello", "versions": [7, 8]})
        assert e.value.code == "unsupported_version" and e.value.reply["supported"] == [1]


def test_a_job_is_accepted_with_an_estimate_from_the_measured_pace(daemon):
    """The warm-up measures the device; each job then refines the estimate of the next like it."""
    msg = P.edit_request(wire(portrait(4, 64, 64, False)), "facehair", [1.0], iterations=20, k=2)
    with daemon.client(60) as c:
        assert c.status()["compute"] in ("fp32", "channels-last", "bf16", "channels-last+bf16")
        events: list[dict] = []
        first = c.run_job(msg, events.append)
        assert events[0]["type"] == "accepted" and events[0]["estimate_s"] > 0, events[0]
        events.clear()
        c.run_job(msg, events.append)
    second = events[0]["estimate_s"]
    assert 0.2 * first["seconds"] < second < 5 * first["seconds"], (second, first["seconds"])
    assert first["quality"] == {"preset": "balanced", "iterations": 20, "work_size": None}, first["quality"]


def test_a_quality_preset_sets_the_iterations_the_daemon_runs(daemon):
    """No iterations named: the preset's run (as the daemon's status says), and "best" is priced above "fast"."""
    image = wire(portrait(4, 48, 48, False))
    with daemon.client(120) as c:
        presets = c.status()["presets"]
        assert presets["best"]["iterations"] > presets["fast"]["iterations"]
        fast = c.run_job(P.edit_request(image, "facehair", [1.0], k=2, quality="fast"))
        assert fast["quality"] == {"preset": "fast", "iterations": presets["fast"]["iterations"], "work_size": None}
        estimates = []
        for q in ("fast", "best"):
            accepted = c.call(P.edit_request(image, "facehair", [1.0], k=2, quality=q))
            estimates.append(accepted["estimate_s"])
            c.cancel(accepted["job"])
    assert estimates[1] > estimates[0] > 0, estimates


# --------------------------------------------------------------------------- CLI end to end


def test_cli_edit_end_to_end(daemon, tmp_path):
    src = portrait(3, 48, 48, alpha=True)
    m = lower_mask(48, 48)
    Image.fromarray(src).save(tmp_path / "in.png")
    Image.fromarray(m).save(tmp_path / "mask.png")
    before = digest(tmp_path / "in.png")
    r = cli(daemon, "edit", str(tmp_path / "in.png"), "--attribute", "facehair", "--strength", "0.8,1.6",
            "--mask", str(tmp_path / "mask.png"), "-o", str(tmp_path / "out/{stem}_{strength}.png"),
            "--iterations", "8", "-k", "2", "--no-autostart")
    assert r.returncode == 0, r.stderr
    assert digest(tmp_path / "in.png") == before
    outs = [tmp_path / "out/in_0.8.png", tmp_path / "out/in_1.6.png"]
    for p in outs:
        out = np.asarray(Image.open(p))
        assert out.shape == src.shape and out.dtype == np.uint8
        assert np.array_equal(out[..., 3], src[..., 3]), "alpha passes through untouched"
        assert np.array_equal(out[m == 0], src[m == 0]), "outside the mask bit-identical"
        assert np.abs(out[m > 0, :3].astype(int) - src[m > 0, :3]).mean() > 0.5, "inside the mask edited"
    assert "RANDOM" in r.stderr  # results on random weights are labelled
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left behind"


def test_cli_inpaint_end_to_end_non_square_rgb(daemon, tmp_path):
    src = portrait(4, 56, 48, alpha=False)
    m = lower_mask(56, 48)
    Image.fromarray(src).save(tmp_path / "p.png")
    Image.fromarray(m).save(tmp_path / "m.png")
    before = digest(tmp_path / "p.png")
    r = cli(daemon, "inpaint", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "--iterations", "8",
            "-k", "2", "--no-autostart")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "p-filled.png"))
    assert out.shape == src.shape
    assert np.array_equal(out[m == 0], src[m == 0])
    assert np.abs(out[m > 0].astype(int) - src[m > 0]).mean() > 0.5
    assert digest(tmp_path / "p.png") == before


def test_cli_batch_glob_and_never_overwrites_inputs(daemon, tmp_path):
    for i in range(2):
        Image.fromarray(portrait(10 + i, 48, 48, alpha=False)).save(tmp_path / f"b{i}.png")
    before = {p.name: digest(p) for p in tmp_path.glob("b*.png")}
    r = cli(daemon, "edit", str(tmp_path / "b*.png"), "-a", "facehair", "-o", "{dir}/{stem}.png", "--no-autostart")
    assert r.returncode == 2 and "overwrite an input" in r.stderr
    r = cli(daemon, "edit", str(tmp_path / "b*.png"), "-a", "facehair", "-s", "1", "-o", "{dir}/e_{stem}.png",
            "--iterations", "5", "-k", "2", "--no-autostart")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("e_*.png")) == ["e_b0.png", "e_b1.png"]
    assert {p.name: digest(p) for p in tmp_path.glob("b*.png")} == before


def test_cli_errors_are_clear_and_non_zero(daemon, tmp_path):
    Image.fromarray(portrait(5, 48, 48, alpha=False)).save(tmp_path / "x.png")
    r = cli(daemon, "edit", str(tmp_path / "x.png"), "-a", "unicorn", "--no-autostart")
    assert r.returncode == 2 and "unicorn" in r.stderr and "dfi attributes" in r.stderr
    r = cli(daemon, "edit", str(tmp_path / "x.png"), "-a", "facehair", "--align", "--no-autostart")
    assert r.returncode == 2 and "alignment" in r.stderr.lower()
    r = cli(daemon, "edit", str(tmp_path / "nope.png"), "-a", "facehair", "--no-autostart")
    assert r.returncode == 2 and "No such file" in r.stderr
    Image.fromarray(portrait(5, 40, 40, alpha=False)).save(tmp_path / "m40.png")
    r = cli(daemon, "edit", str(tmp_path / "x.png"), "-a", "facehair", "-m", str(tmp_path / "m40.png"),
            "--no-autostart")
    assert r.returncode == 2 and "exactly the image's size" in r.stderr
    assert not list(tmp_path.glob("x-*"))


# --------------------------------------------------------------------------- robustness


def malformed_messages(rng: random.Random) -> list[list[bytes]]:
    """1,200 bad requests of every kind (each gets exactly one error reply)."""
    good = P.edit_request(wire(portrait(1, 48, 48, False)), "facehair", [1.0], req_id=1, **FAST)
    packed = P.pack(good)
    img = good["image"]
    msgs: list[list[bytes]] = []
    pk = lambda m: [msgpack.packb(m, use_bin_type=True)]  # noqa: E731
    for _ in range(250):  # random bytes
        msgs.append([rng.randbytes(rng.randint(0, 300))])
    for _ in range(200):  # truncated msgpack
        msgs.append([packed[: rng.randrange(1, len(packed) - 1)]])
    wrong_types = [[1, 2], "edit", 3.5, None, {"v": 1, "op": ["edit"]}, {"v": 1, "op": "edit", "image": "x"},
                   {"v": 1, "op": "edit", "image": img, "attribute": 5, "strengths": [1]},
                   {"v": 1, "op": "edit", "image": img, "attribute": "facehair", "strengths": "1"},
                   {"v": 1, "op": "cancel", "job": {"a": 1}}, {"v": 1, "op": "ping", "id": {"x": 1}},
                   {1: 2}, {"v": 1, "op": "edit", "image": {**img, "data": 12}, "attribute": "f", "strengths": [1]}]
    for i in range(150):
        msgs.append(pk(wrong_types[i % len(wrong_types)]))
    for i in range(150):  # negative, huge, mismatched sizes
        w, h = [(-1, 48), (48, -48), (2**31, 2), (10**6, 10**6), (0, 0), (48, 49), (47, 48), (4000, 4000)][i % 8]
        msgs.append(pk({**good, "image": {**img, "width": w, "height": h}}))
    for i in range(150):  # byte count mismatch
        cut = rng.randint(1, 500)
        data = img["data"][:-cut] if i % 2 else img["data"] + bytes(cut)
        msgs.append(pk({**good, "image": {**img, "data": data}}))
    for i in range(100):
        msgs.append(pk({"v": 1, "op": f"op{i}"}))
    for i in range(100):
        msgs.append(pk({**good, "v": [0, 2, 99, -1, "1", 1.0, None][i % 7]}))
    for i in range(50):  # multi-frame messages
        msgs.append([b"", packed] if i % 2 else [packed, packed, b"x"])
    for i in range(50):  # hostile headers: huge declared lengths, deep nesting
        msgs.append([[b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                      b"\x91" * 2000 + b"\x00", b"\xc7\xff\x01"][i % 5] + rng.randbytes(8)])
    return msgs


def test_daemon_survives_malformed_flood(daemon):
    msgs = malformed_messages(random.Random(7))
    assert len(msgs) >= 1000
    rss_before = daemon.rss_kb()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    codes: dict[str, int] = {}
    try:
        for start in range(0, len(msgs), 100):  # batches, reading the replies, so no queue overflows
            batch = msgs[start:start + 100]
            for frames in batch:
                sock.send_multipart(frames)
            for _ in batch:
                assert sock.poll(20_000), f"no reply to a malformed message (batch at {start})"
                reply = msgpack.unpackb(sock.recv())
                assert reply["type"] == "error" and reply["code"] in P.ERRORS and reply["message"], reply
                codes[reply["code"]] = codes.get(reply["code"], 0) + 1
        # a message over the size limit: ZeroMQ drops the connection instead of buffering it
        big = ctx.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(daemon.endpoint)
        big.send(b"\0" * (5 * 1024 * 1024))
        big.close()
    finally:
        sock.close()
        ctx.term()
    assert {"bad_message", "bad_field", "unknown_op", "unsupported_version", "image_too_large"} <= set(codes), codes
    rss_after = daemon.rss_kb()
    assert rss_after - rss_before < 150 * 1024, (rss_before, rss_after)
    with daemon.client() as c:
        assert c.ping()["type"] == "pong"
        src = portrait(2, 48, 48, False)
        res = c.run_job(P.edit_request(wire(src), "facehair", [1.0], **FAST))
        assert from_wire(res["images"][0]).shape == src.shape


# --------------------------------------------------------------------------- concurrency


def test_eight_clients_at_once(daemon):
    n = 8
    barrier = threading.Barrier(n)
    outcomes: dict[int, object] = {}
    inputs = {i: portrait(20 + i, 48 + 2 * i, 48, alpha=i % 2 == 1) for i in range(n)}

    def one(i: int) -> None:
        src = inputs[i]
        msg = P.edit_request(wire(src), "facehair", [0.5 + i / 10], wire_mask(lower_mask(src.shape[1], 48)),
                             req_id=f"client-{i}", **FAST)
        with daemon.client(timeout=120) as c:
            barrier.wait()
            try:
                outcomes[i] = c.run_job(msg)
            except DaemonError as e:
                outcomes[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(outcomes) == n
    done = 0
    for i, out in outcomes.items():
        if isinstance(out, DaemonError):
            assert out.code == "queue_full", out
            assert "queue is full" in out.message
            continue
        done += 1
        assert out["id"] == f"client-{i}" and out["strengths"] == [pytest.approx(0.5 + i / 10)]
        res = from_wire(out["images"][0])
        m = lower_mask(inputs[i].shape[1], 48)
        assert res.shape == inputs[i].shape
        assert np.array_equal(res[m == 0], inputs[i][m == 0]), f"client {i} got someone else's image"
    assert done >= 1
    assert running_job(daemon) is None


def wire_mask(m: np.ndarray) -> dict:
    return P.image_map(m.tobytes(), m.shape[1], m.shape[0], "L8")


# --------------------------------------------------------------------------- cancel and faults


class JobThread(threading.Thread):
    """A client running one job in the background (with heartbeats), recording its events."""

    def __init__(self, d: DaemonProcess, msg: dict) -> None:
        super().__init__(daemon=True)
        self.d, self.msg = d, msg
        self.events: list[dict] = []
        self.result: object = None

    def run(self) -> None:
        with self.d.client(timeout=60) as c:
            try:
                self.result = c.run_job(self.msg, self.events.append)
            except DaemonError as e:
                self.result = e

    @property
    def job(self) -> str | None:
        return next((e["job"] for e in self.events if e.get("type") == "accepted"), None)


def long_job() -> dict:
    return P.edit_request(wire(portrait(9, 48, 48, False)), "facehair", [1.0], iterations=10_000, k=2)


def test_cancel_queued_then_running_job(daemon):
    a = JobThread(daemon, long_job())
    a.start()
    assert wait_for(lambda: a.job and running_job(daemon) == a.job, 60)
    in_reconstruct = lambda: any(e["type"] == "progress" and e["stage"] == "reconstruct" for e in a.events)  # noqa: E731
    assert wait_for(in_reconstruct, 60), "cancel is tested while the optimiser runs"
    b = JobThread(daemon, long_job())
    b.start()
    assert wait_for(lambda: b.job, 30)
    assert next(e for e in b.events if e["type"] == "accepted")["position"] == 1
    with daemon.client() as c:
        assert c.cancel(b.job)["was"] == "queued"
        b.join(10)
        assert isinstance(b.result, DaemonError) and b.result.code == "cancelled"
        t0 = time.monotonic()
        assert c.cancel(a.job)["was"] == "running"
        a.join(30)
        assert isinstance(a.result, DaemonError) and a.result.code == "cancelled"
        assert time.monotonic() - t0 < 15
        with pytest.raises(DaemonError) as e:
            c.cancel("job-999999")
        assert e.value.code == "unknown_job"
    fractions = [e["fraction"] for e in a.events if e["type"] == "progress"]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1, "progress only moves forward"


CLIENT_SCRIPT = """
import sys
from dfi_wire.client import Client
from dfi_wire import protocol as P
data = bytes((i * 7) % 251 for i in range(48 * 48 * 3))
msg = P.edit_request(P.image_map(data, 48, 48, "RGB8"), "facehair", [1.0], iterations=10000, k=2)
with Client(sys.argv[1], timeout=600) as c:
    c.run_job(msg, lambda ev: print(ev["type"], flush=True))
"""


def test_killed_client_job_is_cancelled_and_next_served(daemon):
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, daemon.endpoint], env=daemon.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: running_job(daemon), 60), "the client's job never started"
        job = running_job(daemon)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        assert wait_for(lambda: running_job(daemon) is None, CLIENT_TIMEOUT + 10), "job of a dead client kept running"
        assert time.monotonic() - t0 < CLIENT_TIMEOUT + 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (daemon.state / "daemon.log").read_text()
    assert f"{job}: client silent" in log and f"{job}: cancelled (client_gone)" in log
    with daemon.client() as c:
        src = portrait(6, 48, 48, False)
        res = c.run_job(P.edit_request(wire(src), "facehair", [1.0], **FAST))
        assert from_wire(res["images"][0]).shape == src.shape
