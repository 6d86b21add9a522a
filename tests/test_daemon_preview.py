"""Live previews (issue 23) through a real daemon process and real ZeroMQ sockets: a session opened once by the
first preview, its instant and refined looks, reuse without the image, ``unknown_session``, supersede, the byte
budget in ``status``, and a vanished client's session dropped.

The database is the demo's (dark glasses painted on jittered astronaut crops, with 68-point landmarks, so the
instant look has shape and tone); the photo is grace_hopper, which is not among its examples. Few iterations.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from dfi_wire import protocol as P
from dfi_wire.client import DaemonError
from helpers.daemon_process import DaemonProcess

pytestmark = pytest.mark.slow  # daemon processes serve these tests

ATTRIBUTE = "dark_glasses"
FAST = {"iterations": 2}  # refine with two inversion steps: the path, not the quality


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from dfi_daemon import samples

    root = tmp_path_factory.mktemp("preview")
    path = samples.build_database(root / "examples", root / "db")
    photo = samples.portrait("grace_hopper")
    yield path, P.image_map(photo.tobytes(), photo.shape[1], photo.shape[0], "RGB8")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def served(db, tmp_path_factory):
    path, image = db
    d = DaemonProcess(tmp_path_factory.mktemp("daemon"), "--no-warm-up", database=str(path))
    try:
        d.start()
        yield d, image
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def sessions(d: DaemonProcess) -> dict:
    with d.client(30) as c:
        return c.status()["sessions"]


def check_look(msg: dict, kind: str, final: bool, photo: dict) -> None:
    """A preview message: its kind and place in the job, an RGB8 picture of its box, small, at the box's aspect."""
    assert (msg["type"], msg["kind"], msg["final"]) == ("preview", kind, final)
    x0, y0, x1, y1 = msg["box"]
    assert 0 <= x0 < x1 <= photo["width"] and 0 <= y0 < y1 <= photo["height"], msg["box"]
    im = msg["image"]
    assert im["format"] == "RGB8" and len(im["data"]) == im["width"] * im["height"] * 3
    assert max(im["width"], im["height"]) <= 160
    assert abs(im["width"] / im["height"] - (x1 - x0) / (y1 - y0)) < 2 / min(im["width"], im["height"]), msg["box"]


def collect(c, *ids) -> dict:
    """Every reply to the requests ``ids`` until each has had its final one (sending heartbeats meanwhile)."""
    replies: dict = {i: [] for i in ids}
    jobs: dict = {}
    end = time.monotonic() + 300
    while not all(r and is_final(r[-1]) for r in replies.values()):
        assert time.monotonic() < end, replies
        c.try_send(P.simple("heartbeat", jobs=list(jobs.values())))
        msg = c.receive(0.5)
        if msg is not None and msg.get("id") in replies:
            replies[msg["id"]].append(msg)
            if msg.get("type") == "accepted":
                jobs[msg["id"]] = msg["job"]
    return replies


def is_final(msg: dict) -> bool:
    return msg["type"] == "error" or (msg["type"] == "preview" and msg["final"])


def test_first_preview_opens_the_session_and_the_next_reuses_it_without_the_image(served):
    d, image = served
    before = sessions(d)["count"]
    looks: list = []
    with d.client(300) as c:
        t0 = time.perf_counter()
        final = c.preview("first", ATTRIBUTE, 0.3, image=image, on_preview=looks.append, **FAST)
        first_s = time.perf_counter() - t0
        assert [m["kind"] for m in looks] == ["instant", "refined"] and final is looks[-1]
        check_look(looks[0], "instant", False, image)
        check_look(looks[1], "refined", True, image)
        assert looks[0]["box"] == looks[1]["box"] and not any(m["session_reused"] for m in looks)
        assert looks[0]["job"] == looks[1]["job"] and looks[0]["strength"] == 0.3
        assert sessions(d)["count"] == before + 1

        again: list = []
        t0 = time.perf_counter()
        final = c.preview("first", ATTRIBUTE, 0.6, on_preview=again.append, **FAST)  # no image: the kept session
        second_s = time.perf_counter() - t0
    assert [m["kind"] for m in again] == ["instant", "refined"] and all(m["session_reused"] for m in again)
    assert final["strength"] == 0.6 and final["box"] == looks[0]["box"]
    check_look(final, "refined", True, image)
    assert sessions(d)["count"] == before + 1, "reused, not opened again"
    print(f"\nfirst preview: instant {looks[0]['seconds']:.2f} s, refined {looks[1]['seconds']:.2f} s, "
          f"round trip {first_s:.2f} s; second (same session, no image): instant {again[0]['seconds']:.2f} s, "
          f"refined {again[1]['seconds']:.2f} s, round trip {second_s:.2f} s")


def test_instant_only_and_the_same_image_again_reuse_the_session(served):
    d, image = served
    with d.client(300) as c:
        first = c.preview("instant", ATTRIBUTE, 0.2, image=image, refine=False)
        assert first["kind"] == "instant" and first["final"] and not first["session_reused"]
        same = c.preview("instant", ATTRIBUTE, 0.4, image=image, refine=False)  # same digest: kept
        assert same["session_reused"] and same["strength"] == 0.4
        other = c.preview("instant", ATTRIBUTE, 0.4, image=image, refine=False, k=8)  # other options: replaced
        assert not other["session_reused"]


def test_a_preview_without_image_for_a_session_not_held_is_unknown_session(served):
    d, image = served
    with d.client(60) as c:
        with pytest.raises(DaemonError) as e:
            c.preview("never-opened", ATTRIBUTE, 0.5)
        assert e.value.code == "unknown_session" and "image" in e.value.hint
    with d.client(60) as other:  # sessions are per client: another one cannot continue "first"
        with pytest.raises(DaemonError) as e:
            other.preview("first", ATTRIBUTE, 0.5)
        assert e.value.code == "unknown_session"


def test_a_newer_preview_supersedes_one_still_opening_the_session_and_reuses_what_it_opened(served):
    """The slider moved while the session was opening: the first preview ends ``superseded``, the session it was
    opening is finished and kept, and the newer preview (no image) uses it."""
    d, image = served
    with d.client(300) as c:
        first = c.send(P.preview_request("race", ATTRIBUTE, 0.2, image, **FAST))
        while True:  # wait until it is opening the session (on the worker), then move the "slider"
            msg = c.receive(5)
            assert msg is not None
            if msg.get("type") == "progress" and msg.get("stage") not in ("queued", "started"):
                break
        second = c.send(P.preview_request("race", ATTRIBUTE, 0.5, **FAST))
        replies = collect(c, first, second)
    end = replies[first][-1]
    assert end["type"] == "error" and end["code"] == "superseded", end
    assert not any(m["type"] == "preview" for m in replies[first])
    looks = [m for m in replies[second] if m["type"] == "preview"]
    assert [m["kind"] for m in looks] == ["instant", "refined"], replies[second]
    assert all(m["session_reused"] for m in looks), "the session the superseded preview opened was kept"


def test_a_newer_preview_stops_a_running_refine_at_once(served):
    d, image = served
    with d.client(300) as c:
        c.preview("slider", ATTRIBUTE, 0.2, image=image, refine=False)
        slow = c.send(P.preview_request("slider", ATTRIBUTE, 0.3, iterations=5000))
        while (msg := c.receive(30)) is not None and msg.get("type") != "preview":
            pass
        assert msg is not None and msg["kind"] == "instant" and not msg["final"]
        t0 = time.perf_counter()
        quick = c.send(P.preview_request("slider", ATTRIBUTE, 0.4, **FAST))
        replies = collect(c, slow, quick)
        took = time.perf_counter() - t0
    assert replies[slow][-1]["code"] == "superseded"
    assert [m["kind"] for m in replies[quick] if m["type"] == "preview"] == ["instant", "refined"]
    assert took < 120, f"5000 iterations would take far longer than {took:.0f} s: the refine was stopped"


def test_status_shows_the_sessions_within_the_budget(served):
    d, image = served
    with d.client(300) as c:
        c.preview("status", ATTRIBUTE, 0.2, image=image, refine=False)
        st = c.status()["sessions"]
    assert st["budget_bytes"] == 256 * 2**20
    assert st["count"] >= 1 and 0 < st["bytes"] <= st["budget_bytes"]
    shown = subprocess.run([sys.executable, "-m", "dfi_daemon.cli", "daemon", "status"], env=d.env(),
                           capture_output=True, text=True, timeout=120)
    assert "live preview(s)" in shown.stdout and "of 256 MiB" in shown.stdout, shown.stdout + shown.stderr


def test_closing_a_session_frees_it_at_once_and_stops_its_preview(served):
    d, image = served
    with d.client(300) as c:
        c.preview("closing", ATTRIBUTE, 0.2, image=image, refine=False)
        before = sessions(d)["count"]
        c.send(P.preview_request("closing", ATTRIBUTE, 0.4, iterations=5000, req_id="long"))
        while (msg := c.receive(30)) is not None and msg.get("type") != "preview":
            pass
        assert msg is not None and msg["kind"] == "instant"
        assert c.close_session("closing") is True  # the dialog closed
        end = time.monotonic() + 60
        while (msg := c.receive(1)) is None or msg.get("id") != "long" or msg.get("type") == "progress":
            assert time.monotonic() < end, "the closed session's refine still runs"
        assert msg["type"] == "error" and msg["code"] == "cancelled"
        assert sessions(d)["count"] == before - 1
        assert c.close_session("closing") is False  # already gone: nothing to do, no error


def test_a_client_that_vanishes_mid_preview_loses_its_session(served):
    d, image = served
    c = d.client(300)
    try:
        c.preview("vanishing", ATTRIBUTE, 0.2, image=image, refine=False)
        before = sessions(d)["count"]
        c.send(P.preview_request("vanishing", ATTRIBUTE, 0.4, iterations=5000))
        while (msg := c.receive(30)) is not None and msg.get("type") != "preview":
            pass
        assert msg is not None and msg["kind"] == "instant"
    finally:
        c.close()  # no heartbeats from now on: the daemon takes the client for gone after its client timeout
    end = time.monotonic() + 60
    while sessions(d)["count"] >= before:
        assert time.monotonic() < end, "the vanished client's session is still kept"
        time.sleep(0.5)
    assert sessions(d)["count"] == before - 1
    with d.client(30) as other:  # and its refine stops at its next iteration
        while other.status()["queue"]["running"] is not None:
            assert time.monotonic() < end, "the vanished client's refine still runs"
            time.sleep(0.2)


def test_least_recently_used_sessions_go_beyond_the_budget(db, tmp_path):
    """Half a MiB holds no session of a 512x600 photo: each new one pushes the older out, the newest stays."""
    path, image = db
    d = DaemonProcess(tmp_path / "daemon", "--no-warm-up", "--session-mb", "0.5", database=str(path))
    try:
        d.start()
        with d.client(300) as c:
            c.preview("a", ATTRIBUTE, 0.2, image=image, refine=False)
            c.preview("b", ATTRIBUTE, 0.2, image=image, refine=False)
            st = c.status()["sessions"]
            assert st["count"] == 1 and st["budget_bytes"] == 2**19 and st["bytes"] > 0
            with pytest.raises(DaemonError) as e:
                c.preview("a", ATTRIBUTE, 0.3, refine=False)
            assert e.value.code == "unknown_session"
            assert c.preview("b", ATTRIBUTE, 0.3, refine=False)["session_reused"]
    finally:
        d.stop()


def test_twenty_sessions_opened_and_abandoned_stay_within_the_budget(db, tmp_path):
    """20 dialogs, each opening a session (with a refined look) and vanishing without closing it: the
    daemon keeps at most its budget of them, and its memory grows by no more than the budget + a margin."""
    from helpers.process_memory import rss_mb

    path, image = db
    d = DaemonProcess(tmp_path / "daemon", "--no-warm-up", "--session-mb", "24", database=str(path))
    try:
        d.start()
        with d.client(300) as c:  # one session first: the model's and the prototypes' one-off memory
            c.preview("warm", ATTRIBUTE, 0.2, image=image, iterations=1)
            c.close_session("warm")
        base = rss_mb(d.pid)
        counts = []
        for i in range(20):
            c = d.client(300)
            try:
                c.preview(f"dialog-{i}", ATTRIBUTE, 0.1 * (i % 5), image=image, iterations=1)
            finally:
                c.close()  # abandoned: no close_session
            counts.append(sessions(d))
        after = rss_mb(d.pid)
    finally:
        d.stop()
    last = counts[-1]
    print(f"\nsessions after each dialog: {[s['count'] for s in counts]}; {last['bytes'] / 2**20:.1f} MiB kept "
          f"of {last['budget_bytes'] / 2**20:.0f}; daemon RSS {base:.0f} -> {after:.0f} MiB")
    assert all(s["bytes"] <= s["budget_bytes"] for s in counts) and last["count"] < 20
    assert after - base <= 24 + 64, f"RSS grew {after - base:.0f} MiB with a 24 MiB session budget"


def test_the_synthetic_source_says_live_previews_need_a_face_database(tmp_path):
    d = DaemonProcess(tmp_path / "daemon", "--no-warm-up")
    try:
        d.start()
        photo = np.full((48, 48, 3), 128, np.uint8)
        with d.client(60) as c:
            with pytest.raises(DaemonError) as e:
                c.preview("s", "facehair", 0.5, image=P.image_map(photo.tobytes(), 48, 48, "RGB8"))
    finally:
        d.stop()
    assert e.value.code == "bad_input" and "face database" in e.value.message and "\n" not in str(e.value)


def test_bad_session_options_are_refused_at_start(tmp_path):
    from helpers.daemon_process import run_cli

    for flag, value in (("--session-mb", "0"), ("--session-mb", "nan"), ("--session-idle-s", "-1"),
                        ("--session-idle-s", "inf")):
        out = run_cli(tmp_path, "daemon", "start", "--database", "none", "--weights", "random:0", flag, value,
                      timeout=60)
        assert out.returncode == 2 and flag in out.stderr and "Traceback" not in out.stderr, (flag, value, out)
