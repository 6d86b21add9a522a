"""Scale-out on a real local Ray cluster: ``dfi batch --ray`` and ``dfi db build --ray``.

Every test starts real Ray (``--ray local``: a head on this machine) through the
real CLI in a subprocess, and compares with the single-process path: the local
daemon for edits, the one-process builder for databases. Skipped, with the
reason, where Ray is not installed (``pip install '.[ray]'``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon_process import env_for, run_cli
from PIL import Image

pytestmark = pytest.mark.slow  # a real local Ray cluster and CLI processes

pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")

SMOKE = ["--weights", "random:0", "--database", "synthetic", "-a", "facehair", "-s", "0.5,1"]


def photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = (rng.random((48 + 8 * (i % 3), 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(im).save(folder / f"p{i}.png")
        out.append(folder / f"p{i}.png")
    return out


def outputs_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("p*-facehair-*.png"))}


def batch(base: Path, folder: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli(base, "batch", str(folder / "p*.png"), *SMOKE, *extra, timeout=timeout)


def start_batch(base: Path, folder: Path, *extra: str) -> subprocess.Popen:
    """The batch as a user's terminal starts it: Ctrl+C (SIGINT) acts, even when this test runs under a shell
    that started it in the background (which hands its children SIGINT ignored)."""
    return subprocess.Popen([sys.executable, "-m", "dfi_daemon.cli", "batch", str(folder / "p*.png"), *SMOKE, *extra],
                            env=env_for(base), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_outputs(folder: Path, proc: subprocess.Popen, n: int = 1, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while len(list(folder.glob("p*-facehair-*.png"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no output appeared"
        time.sleep(0.2)


def ray_processes(title: bytes) -> list[int]:
    """Pids of the Ray worker processes whose title starts so (Ray titles them 'ray::Editor', 'ray::Preparer…')."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.joinpath("cmdline").read_bytes().startswith(title):
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Its output once it ends; killed if it does not end in time."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_ray_batch_writes_the_same_files_as_the_local_daemon(base, tmp_path):
    """Default sizing (a whole-node worker, torch's own threads): byte-identical to the daemon's files;
    a second run does nothing; an input is never taken for an output."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    photos(local, 3)
    photos(ray, 3)
    r = batch(base, local, "--iterations", "12")
    assert r.returncode == 0, r.stderr
    r = batch(base, ray, "--iterations", "12", "--ray", "local")
    assert r.returncode == 0, r.stderr
    assert "done: 3 edited (6 file(s)), 0 skipped" in r.stderr and "on 1 Ray worker(s)" in r.stderr, r.stderr
    assert sorted(r.stdout.split()) == sorted(str(ray / n) for n in outputs_of(ray))
    a, b = outputs_of(local), outputs_of(ray)
    assert len(a) == 6 and a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    again = batch(base, ray, "--iterations", "12", "--ray", "local")  # the glob now matches the outputs too
    assert again.returncode == 0 and "all 3 edit(s) already have their outputs" in again.stderr, again.stderr
    assert "leaving out 6 file(s)" in again.stderr


def test_a_killed_worker_is_replaced_and_no_output_is_lost_or_written_twice(base, tmp_path):
    """Two one-CPU workers; one is SIGKILLed mid-run. Ray restarts it, its edits are sent again, every output
    is written exactly once and equals the daemon's at the same thread count."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    photos(local, 6)
    photos(ray, 6)
    r = batch(base, local, "--iterations", "30", "--threads", "1")
    assert r.returncode == 0, r.stderr
    proc = start_batch(base, ray, "--iterations", "30", "--ray", "local", "--cpus-per-worker", "1")
    try:
        wait_for_outputs(ray, proc)
        victims = ray_processes(b"ray::Editor")
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)
    finally:
        out, err = finish(proc, 600)
    assert proc.returncode == 0, err
    assert "resent after a lost worker" in err and "done: 6 edited (12 file(s))" in err, err
    listed = out.split()
    assert len(listed) == 12 and len(set(listed)) == 12, listed  # each output written once
    a, b = outputs_of(local), outputs_of(ray)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes_with_only_the_missing_edits(base, tmp_path):
    folder = tmp_path / "ray"
    photos(folder, 6)
    args = ("--iterations", "30", "--ray", "local", "--cpus-per-worker", "1")
    proc = start_batch(base, folder, *args)
    try:
        wait_for_outputs(folder, proc, 2)
        proc.send_signal(signal.SIGINT)
    finally:
        out, err = finish(proc, 120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again" in err, err
    assert "Traceback" not in err, err
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "a half-written file was left"
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("p*-facehair-*.png")}
    done_tasks = {f"p{i}" for i in range(6) if all((folder / f"p{i}-facehair-{s}.png").exists() for s in ("0.5", "1"))}
    assert 1 <= len(done_tasks) < 6, done_tasks
    r = batch(base, folder, *args)
    assert r.returncode == 0, r.stderr
    assert f"done: {6 - len(done_tasks)} edited" in r.stderr and f"{len(done_tasks)} skipped" in r.stderr, r.stderr
    assert len(outputs_of(folder)) == 12
    for p, mtime in kept.items():
        if p.name.split("-")[0] in done_tasks:
            assert p.stat().st_mtime_ns == mtime, f"{p} was written again"


def test_ray_problems_are_one_line_messages(base, tmp_path):
    folder = tmp_path / "in"
    photos(folder, 1)
    r = batch(base, folder, "--ray", "127.0.0.1:1")
    assert r.returncode == 2 and "Cannot reach the Ray cluster at 127.0.0.1:1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = batch(base, folder, "--ray", "local", "--gpus-per-worker", "1")
    assert r.returncode == 2 and "has no GPUs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = batch(base, folder, "--ray", "local", "--cpus-per-worker", "64")  # Ray itself would wait for ever
    assert r.returncode == 2 and "has 64 CPU(s) for one worker" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = batch(base, folder, "--ray", "local", "--cpus-per-worker", "1", "--workers", "5")  # so would it here
    assert r.returncode == 2 and "room for 2 worker(s)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli(base, "batch", str(folder / "p0.png"), "--weights", "/etc/passwd", "--database", "synthetic",
                "-a", "facehair", "--ray", "local")
    assert r.returncode == 2 and "could not load the engine" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_database_built_on_ray_equals_the_one_process_build(tmp_path):
    """Real dlib on real photos (faces, no face, a duplicate, a broken file), detected on 2 Ray workers."""
    pytest.importorskip("dlib")
    pytest.importorskip("skimage.data")
    from helpers.faces_fixtures import build_photos

    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    src = build_photos(tmp_path / "photos", faces=3)
    one = build(tmp_path / "one", dbm.plan_from_folder(src), 64, progress=False, workers=1)
    r = run_cli(tmp_path, "db", "build", str(tmp_path / "ray"), "--images", str(src), "--resolution", "64",
                "--ray", "local", "--workers", "2", "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "on 2 Ray worker(s)" in r.stderr and "2 workers" in r.stdout, (r.stdout, r.stderr)
    a, b = dbm.Database(tmp_path / "one"), dbm.Database(tmp_path / "ray")
    assert one.added == 3 and a.count == b.count == 3 and a.paths() == b.paths()
    assert all(np.array_equal(x, y) for x, y in zip(a.images(range(3)), b.images(range(3))))
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert "upside_down.png: no face found" in r.stdout and "broken.jpg" in r.stdout and "duplicate" in r.stdout


@pytest.fixture
def head():
    """A Ray head started the way docs/scale.md says ('ray start --head'), on loopback; stopped afterwards."""
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray keeps Unix sockets in it
    ray_cli = str(Path(sys.executable).with_name("ray"))
    up = subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                         "--temp-dir", str(temp)], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", str(temp)])


def test_real_photos_on_a_ray_head_match_the_single_process_cli(base, tmp_path, hed_file, head):
    """Real portraits, real features (vgg16-hed), a real face database, aligned edits: a cluster started with
    'ray start --head' and reached by its address gives the same files as 'dfi edit'."""
    pytest.importorskip("dlib")
    from dfi_daemon import samples
    from dfi_daemon.samples import ATTRIBUTE, build_database

    db = build_database(tmp_path / "examples", tmp_path / "glasses.db")
    local, ray = tmp_path / "local", tmp_path / "ray"
    for d in (local, ray):
        d.mkdir()
        for name in ("grace_hopper", "astronaut"):
            Image.fromarray(samples.portrait(name)).save(d / f"{name}.png")
    common = ["-a", ATTRIBUTE, "-s", "0.3,0.45", "--weights", str(hed_file), "--database", str(db),
              "--iterations", "10"]
    r = run_cli(base, "edit", str(local / "*.png"), *common, timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_cli(base, "batch", str(ray / "*.png"), *common, "--ray", head, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "done: 2 edited (4 file(s))" in r.stderr and "VGG-16 (HED)" in r.stderr, r.stderr
    names = sorted(p.name for p in local.glob(f"*-{ATTRIBUTE}-*.png"))
    assert len(names) == 4 and names == sorted(p.name for p in ray.glob(f"*-{ATTRIBUTE}-*.png"))
    for n in names:
        a, b = np.asarray(Image.open(local / n)), np.asarray(Image.open(ray / n))
        assert np.array_equal(a, b), (n, int(np.abs(a.astype(int) - b).max()))
        photo = np.asarray(Image.open(local / (n.split(f"-{ATTRIBUTE}")[0] + ".png")))
        assert (np.abs(a.astype(int) - photo).max(axis=2) > 20).sum() > 100, f"{n}: the edit changed nothing"


def test_a_worker_killed_during_a_ray_database_build_loses_no_face(tmp_path):
    """One 'ray::Preparer' process is SIGKILLed while it detects; its images are sent again and the database
    equals the one-process build."""
    pytest.importorskip("dlib")
    skdata = pytest.importorskip("skimage.data")
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    src = tmp_path / "photos"
    src.mkdir()
    astro = skdata.astronaut()
    for i in range(40):  # faces at many offsets and sizes: enough work to be caught in the middle
        y, x, s = i % 5 * 6, 90 + i % 8 * 5, 200 + i * 3
        Image.fromarray(np.ascontiguousarray(astro[y:y + s, x:x + s])).save(src / f"f{i:02d}.png")
    one = build(tmp_path / "one", dbm.plan_from_folder(src), 64, progress=False, workers=1)
    proc = subprocess.Popen([sys.executable, "-m", "dfi_daemon.cli", "db", "build", str(tmp_path / "ray"), "--images",
                             str(src), "--resolution", "64", "--ray", "local", "--workers", "2", "-q"],
                            env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, end = False, time.monotonic() + 120
    while not killed and proc.poll() is None and time.monotonic() < end:
        for pid in ray_processes(b"ray::Preparer.prepare")[:1]:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    out, err = finish(proc, 600)
    assert killed and proc.returncode == 0, (killed, err)
    a, b = dbm.Database(tmp_path / "one"), dbm.Database(tmp_path / "ray")
    assert a.count == b.count == one.added > 30 and a.paths() == b.paths(), out
    assert all(np.array_equal(x, y) for x, y in zip(a.images(range(a.count)), b.images(range(b.count))))
