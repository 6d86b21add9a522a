"""The live slider's GIMP-free half (plugin/dfi_plugin/dfi_live.py) as ``dfi gimp install`` installs it.

The slider's range, the strengths field that follows it, the debounce and supersede state (with a fake clock,
and with real threads), and the preview worker against a real daemon process over real ZeroMQ: the first
preview carries the photo, the next only the session id, and a session the daemon does not hold is sent again.
The GTK panel itself runs in a real GIMP in tests/test_gimp_live.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import gimp_smile
from helpers.installed_plugin import installed_module

smile_db = gimp_smile.smile_db  # the shared fixture (tests/helpers/gimp_smile.py)

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """dfi_live imported from a plug-in folder made by the installer (which must install it)."""
    with installed_module(tmp_path_factory.mktemp("gimp") / "3.0", "dfi_live") as module:
        yield module


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_slider_range_comes_from_the_daemons_attribute(live):
    r = live.slider_range({"default_strength": 0.4, "strength_max": 1.0, "scaling": "relative"})
    assert (r.lower, r.upper, r.default) == (-0.8, 1.0, 0.4)
    assert r.step == 0.02 and r.digits == 2  # about 100 steps, a round number
    r = live.slider_range({"default_strength": 1.0, "strength_max": 5.0})
    assert (r.lower, r.upper, r.default, r.step, r.digits) == (-2.0, 5.0, 1.0, 0.1, 1)
    r = live.slider_range({"default_strength": 2.0})  # no strength_max (an older daemon): 3 x the default
    assert (r.lower, r.upper) == (-4.0, 6.0)
    r = live.slider_range({"default_strength": 3.0, "strength_max": 1.0})  # never a range without its default
    assert r.lower <= 0 < r.default <= r.upper
    assert live.slider_range(None).default == 1.0


def test_round_steps_and_strength_text(live):
    assert [live.nice_step(s) for s in (7.0, 1.8, 0.3, 250)] == [0.1, 0.02, 0.005, 5.0]
    assert [live.format_strength(v, 2) for v in (0.4, -0.5, -0.001, 1.25, 2.0)] == ["0.4", "-0.5", "0", "1.25", "2"]
    assert live.format_strength(3.4, 0) == "3"


def test_the_strengths_field_follows_the_slider_until_taken_over(live):
    sync = live.FieldSync("0.4", 0.4, 2)
    assert sync.follow("0.4", 0.62) == "0.62"  # following: "move, OK" renders what the preview showed
    assert sync.add("0.62", 0.62) == "0.62"  # the first add pins the followed value ...
    assert sync.follow("0.62", 0.9) is None  # ... which stays
    assert sync.add("0.62", 0.9) == "0.62, 0.9"  # later adds append
    assert sync.add("0.62, 0.9", 0.9) == "0.62, 0.9"  # no duplicates
    typed = live.FieldSync("", 1.0, 1)  # an empty field follows too
    assert typed.follow("", 1.5) == "1.5"
    assert typed.follow("1.5, 2", 1.7) is None and typed.follow("1.5", 1.8) is None  # the user typed: left alone
    several = live.FieldSync("0.5, 1.5", 0.5, 1)  # last values with two strengths: never overwritten
    assert several.follow("0.5, 1.5", 0.8) is None
    full = ", ".join(str(i) for i in range(16))
    with pytest.raises(live.B.PluginError, match="At most 16"):
        several.add(full, 20.0)
    with pytest.raises(live.B.PluginError, match="not a number"):
        several.add("0.5, lots", 1.0)


def test_preview_options_are_what_changes_the_preview(live):
    assert live.preview_options("auto", "auto") == {}
    assert live.preview_options("off", "shape-tone") == {"align": False, "components": ["shape", "tone"]}
    assert live.preview_options("on", "texture") == {"align": True, "components": ["texture"]}


def test_a_move_is_sent_once_the_slider_rests(live):
    clock = Clock()
    state = live.LiveState(0.15, clock)
    want = live.Want.of
    state.move(want(0.2, "smile", {}))
    assert state.take() is None  # still moving
    clock.now += 0.1
    state.move(want(0.3, "smile", {}))
    clock.now += 0.1
    assert state.take() is None  # 0.1 s since the last move
    clock.now += 0.06
    first = state.take()
    assert (first.seq, first.want.strength, first.with_image) == (1, 0.3, True)  # only the last position
    assert state.take() is None  # sent once
    assert state.current(1) and not state.stale(1)


def test_a_newer_move_supersedes_the_running_preview(live):
    clock = Clock()
    state = live.LiveState(0.15, clock)
    state.move(live.Want.of(0.3, "smile", {}))
    clock.now += 1
    first = state.take()
    state.holds(first.want)  # its first preview came: the daemon holds the photo
    state.move(live.Want.of(0.3, "smile", {}))
    assert not state.stale(first.seq)  # the same position again: keep it running
    state.move(live.Want.of(0.9, "smile", {}))
    assert state.stale(first.seq) and state.current(first.seq)  # ended, but still the newest shown
    clock.now += 1
    second = state.take()
    assert (second.seq, second.want.strength, second.with_image) == (2, 0.9, False)  # session id only
    assert not state.current(first.seq) and state.current(second.seq)  # a late result of the first: not shown
    state.move(live.Want.of(0.9, "smile", {"components": ["shape", "tone"]}))  # other options: photo again
    clock.now += 1
    assert state.take().with_image
    state.holds(None)  # unknown_session: the next one carries the photo
    state.move(live.Want.of(0.5, "smile", {}))
    clock.now += 1
    assert state.take().with_image
    state.close()
    assert state.stale(4) and not state.current(4) and state.wait() is None


def test_waiting_debounces_a_burst_of_moves_in_real_time(live):
    state = live.LiveState(0.15)
    got = []
    t = threading.Thread(target=lambda: got.extend(iter(state.wait, None)))
    t.start()
    t0 = time.monotonic()
    for v in (0.1, 0.2, 0.3, 0.4, 0.5):
        state.move(live.Want.of(v, "smile", {}))
        time.sleep(0.03)
    time.sleep(0.4)
    state.close()
    t.join(2)
    assert not t.is_alive()
    assert [r.want.strength for r in got] == [0.5], got  # one request: the slider's resting place
    assert time.monotonic() - t0 >= 0.15


def until(check, timeout: float = 120.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.mark.slow  # a daemon process with a face database
def test_the_worker_previews_through_a_real_daemon(live, smile_db, tmp_path):
    """First preview with the photo, then the session id only; a session the daemon dropped (idle) is sent
    again with the photo; a move during a preview ends it without an error; stopping closes the connection."""
    import numpy as np
    from dfi_daemon import known_truth as kt
    from helpers.daemon_process import DaemonProcess

    rgba = np.dstack([kt.grace(), np.full(kt.grace().shape[:2], 255, np.uint8)])
    photo = live.B.P.image_map(rgba.tobytes(), rgba.shape[1], rgba.shape[0], "RGBA8")
    sent, shown, failed, ended = [], [], [], {}

    with DaemonProcess(tmp_path, "--session-idle-s", "5", database=str(smile_db), threads=2) as daemon:
        def connect():
            client = live.L.connect(live.B.Settings(endpoint=daemon.endpoint))
            real = client.preview

            def preview(session, attribute, strength, *, image=None, **kw):  # the real call, recorded
                sent.append((strength, image is not None))
                try:
                    return real(session, attribute, strength, image=image, **kw)
                except live.DaemonError as e:
                    ended[strength] = e.code
                    raise

            client.preview = preview
            return client

        state = live.LiveState()
        worker = live.PreviewWorker(state, connect, photo, None, lambda seq, m: shown.append(m), failed.append).start()
        shape_tone = {"components": ["shape", "tone"]}

        def show(strength):
            state.move(live.Want.of(strength, "smile", shape_tone))
            until(lambda: shown and shown[-1]["strength"] == strength and shown[-1]["final"],
                  what=f"a final preview at {strength}")

        show(0.3)
        show(1.0)
        assert sent == [(0.3, True), (1.0, False)]  # the photo once, then the session id only
        assert [m["kind"] for m in shown] == ["instant", "refined"] * 2
        time.sleep(6.5)  # idle past --session-idle-s: the daemon drops the session
        show(0.6)
        assert sent[2:] == [(0.6, False), (0.6, True)], "unknown_session: the photo was not sent again"
        state.move(live.Want.of(-0.6, "smile", shape_tone))
        until(lambda: len(sent) == 5, what="the preview at -0.6 was not sent")
        before = len(shown)
        show(0.5)  # moved on while -0.6 ran: that one ends (cancelled or superseded), quietly
        assert sent[4][0] == -0.6 and sent[-1] == (0.5, False), sent
        done = any(m["strength"] == -0.6 and m["final"] for m in shown[:before])  # (a very fast daemon)
        assert done or ended.get(-0.6) in ("cancelled", "superseded"), ended
        assert not any(m["strength"] == -0.6 for m in shown[before:] if m["final"]), "a stale preview was shown"
        assert failed == [], failed
        with daemon.client() as c:
            assert c.status()["sessions"]["count"] == 1  # one session for all the moves
            worker.stop()
            assert not worker.thread.is_alive() and worker.client.sock.closed
            assert c.status()["queue"]["running"] is None
