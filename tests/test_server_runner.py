"""The daemon's runner in-process: settings resolved once per job, checks before queueing, the job-level progress
contract (forward only, shares of the bar, cancel at every event), and one small real job on seeded random weights.

No sockets and no daemon process: what the runner does between a validated request and the result reply.
"""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from dfi_daemon.server.preview import Previews
from dfi_daemon.server.runner import FEATURES_SPAN, INVERSION_SPAN, JobProgress, Runner, forward_only
from dfi_daemon.server.sources import SyntheticSource
from dfi_wire import protocol as P

from dfi_engine.errors import CancelledError
from dfi_engine.progress import Event

SIDE = 32


def image_map(side: int = SIDE, seed: int = 0) -> dict:
    data = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8).tobytes()
    return P.image_map(data, side, side, "RGB8")


def request(msg: dict) -> P.Request:
    """A request as the daemon sees it: packed, unpacked and validated."""
    return P.validate_request(P.unpack(msgpack.packb(msg, use_bin_type=True)))


@pytest.fixture(scope="module")
def runner(net) -> Runner:
    return Runner(net, SyntheticSource(0), P.Limits())


def test_settings_take_the_request_options_first(runner):
    req = request(P.edit_request(image_map(), "facehair", [0.5, 1.0], k=3, iterations=7, align=False,
                                 work_size=64, scaling="beta", color="none", feather=2.0, preview=1.0,
                                 quality="fast", components=["texture"]))
    s = runner.settings(req)
    assert (s.op, s.height, s.width, s.attribute, s.strengths) == ("edit", SIDE, SIDE, "facehair", (0.5, 1.0))
    assert (s.k, s.iterations, s.align, s.work_size, s.scaling, s.color, s.feather, s.preview_s) == \
        (3, 7, False, 64, "beta", "none", 2.0, 1.0)
    assert s.quality == "fast" and s.components == ("texture",) and s.results == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.k = 4  # type: ignore[misc]


def test_settings_fill_what_a_request_leaves_open_from_the_preset_and_the_source(runner):
    from dfi_engine.presets import preset

    s = runner.settings(request(P.edit_request(image_map(), "facehair", [1.0])))
    balanced = preset(runner.net.device, None)
    assert s.quality == P.DEFAULT_QUALITY and s.iterations == balanced.iterations
    assert s.k == SyntheticSource.default_k and s.align is SyntheticSource.can_align
    assert s.scaling == "none", "the synthetic attribute's own scaling"
    assert s.preview_s == 0.0 and s.components is None and s.color is None
    fill = runner.settings(request(P.inpaint_request(image_map(), P.image_map(b"\xff" * SIDE * SIDE, SIDE, SIDE,
                                                                                "L8"))))
    assert fill.op == "inpaint" and fill.scaling == SyntheticSource.inpaint_scaling and fill.strength is None
    assert fill.results == 1 and fill.strengths == ()


def test_check_refuses_what_would_fail_in_the_queue(net, runner):
    def code(r: Runner, msg: dict) -> str:
        with pytest.raises(P.ProtocolError) as e:
            r.check(request(msg))
        return e.value.code

    assert code(Runner(net, None, P.Limits()), P.edit_request(image_map(), "facehair", [1.0])) == "no_database"
    assert code(runner, P.edit_request(image_map(), "facehair", [1.0], align=True)) == "align_unavailable"
    assert code(runner, P.edit_request(image_map(), "smile", [1.0])) == "unknown_attribute"
    runner.check(request(P.edit_request(image_map(), "facehair", [1.0])))  # and a good one passes


def test_forward_only_never_reports_a_smaller_fraction():
    seen: list[Event] = []
    report = forward_only(seen.append)
    for f in (0.1, 0.4, 0.2, 0.5, 0.3):
        report(Event("features", f, 1.0, "x"))
    assert [e.step for e in seen] == [0.1, 0.4, 0.4, 0.5, 0.5]
    assert all(e.total == 1.0 and e.message == "x" for e in seen)


def test_job_progress_puts_features_and_inversion_in_their_share_and_checks_cancel():
    seen: list[Event] = []
    stop = [False]
    jp = JobProgress(seen.append, lambda: stop[0], Previews(0.0, "RGB8"))
    jp(Event("target features", 4, 8))
    jp(Event("source features", 8, 8))
    jp(Event("reconstruct", 5, 10, "coarse (128 px) 5/10", preview=lambda: np.zeros((8, 8, 3), np.uint8)))
    (s, w), (r, rw) = FEATURES_SPAN, INVERSION_SPAN
    assert [e.stage for e in seen] == ["features", "features", "reconstruct"]
    assert seen[0].step == pytest.approx(s + w * 0.25) and seen[1].step == pytest.approx(s + w)
    assert seen[2].step == pytest.approx(r + rw * 0.5) and seen[2].message == "coarse (128 px) 5/10"
    assert seen[0].message == "target features 4/8" and seen[2].preview is None, "no preview asked for"
    assert jp.inverted_share() == 0.0 and jp.marks["total"] == 10
    stop[0] = True
    with pytest.raises(CancelledError):
        jp(Event("reconstruct", 6, 10))


def test_a_small_edit_runs_reports_forward_and_learns_the_pace(runner):
    req = request(P.edit_request(image_map(), "facehair", [0.5, 1.0], k=2, iterations=3))
    s = runner.settings(req)
    assert runner.estimate(s) is None or runner.estimate(s) > 0
    seen: list[Event] = []
    out = runner.run(req, s, seen.append, lambda: False)
    assert len(out["images"]) == 2 and out["strengths"] == [0.5, 1.0]
    assert all((im["width"], im["height"], im["format"]) == (SIDE, SIDE, "RGB8") for im in out["images"])
    assert out["quality"] == {"preset": P.DEFAULT_QUALITY, "iterations": 3, "work_size": None}
    assert any("SYNTHETIC" in n for n in out["notes"]), "smoke-test neighbours are always labelled"
    fractions = [e.fraction for e in seen]
    assert fractions == sorted(fractions) and seen[-1].stage == "done" and fractions[-1] == 1.0
    assert {"neighbours", "features", "reconstruct"} <= {e.stage for e in seen}
    assert runner.estimate(s) is not None and runner.estimate(s) > 0, "a job that ran teaches the pace"


def test_a_cancelled_job_stops_with_cancelled_error(runner):
    req = request(P.edit_request(image_map(), "facehair", [1.0], k=2, iterations=50))
    calls = [0]

    def cancel() -> bool:
        calls[0] += 1
        return calls[0] > 3

    with pytest.raises(CancelledError):
        runner.run(req, runner.settings(req), lambda ev: None, cancel)
    assert calls[0] == 4, "stopped at the first check after the flag went up"

