"""The daemon's pace (``pace``), in process: what a job is estimated to take from what earlier jobs took.

The expected numbers follow the documented model (seconds per iteration x pixel x strength, preparation
learnt per kind of request, a never-seen kind priced as the neighbours' forward passes at half an
iteration each, the newest observation weighted ``SMOOTHING``), worked out here from the inputs.
"""

from __future__ import annotations

import threading

import pytest
from dfi_daemon.server.pace import FORWARD_SHARE, SMOOTHING, Pace


def test_nothing_is_estimated_before_anything_was_measured():
    p = Pace()
    assert p.estimate("edit", 1e6, 1, 1e5) is None
    p.observe_prep("edit", 3.0)  # a preparation alone does not price the inversion
    assert p.estimate("edit", 1e6, 1, 1e5) is None


def test_the_first_observation_sets_the_rate_per_iteration_pixel_and_strength():
    p = Pace()
    p.observe_iterations(seconds=2.0, pixel_iterations=1000.0, strengths=4)
    assert p.per_unit == pytest.approx(2.0 / (1000 * 4))
    unit = p.per_unit
    # an unseen kind: its neighbours' forward passes, then the inversion
    assert p.estimate("new", 500.0, 2, 300.0) == pytest.approx(300 * unit * FORWARD_SHARE + 500 * 2 * unit)


def test_later_observations_are_smoothed_not_replaced():
    p = Pace()
    p.observe_iterations(1.0, 100.0, 1)
    p.observe_iterations(3.0, 100.0, 1)
    assert p.per_unit == pytest.approx(SMOOTHING * 0.03 + (1 - SMOOTHING) * 0.01)


def test_a_learnt_preparation_replaces_the_forward_pass_price_for_its_kind_only():
    p = Pace()
    p.observe_iterations(1.0, 100.0, 1)
    p.observe_prep(("faces", 48), 4.0)
    p.observe_prep(("faces", 48), 2.0)
    prep = SMOOTHING * 2.0 + (1 - SMOOTHING) * 4.0
    assert p.estimate(("faces", 48), 200.0, 1, 1e9) == pytest.approx(prep + 200 * 0.01)
    assert p.estimate(("faces", 96), 200.0, 1, 100.0) == pytest.approx(100 * 0.01 * FORWARD_SHARE + 200 * 0.01)


def test_empty_or_negative_observations_are_ignored():
    p = Pace()
    for seconds, work in ((0.0, 100.0), (-1.0, 100.0), (1.0, 0.0), (1.0, -5.0)):
        p.observe_iterations(seconds, work, 1)
    assert p.per_unit is None


def test_zero_strengths_count_as_one():
    p = Pace()
    p.observe_iterations(1.0, 100.0, 0)
    assert p.per_unit == pytest.approx(0.01)
    assert p.estimate("k", 100.0, 0, 0.0) == pytest.approx(1.0)


def test_observing_from_the_worker_while_the_main_thread_estimates_is_safe():
    p = Pace()
    p.observe_iterations(1.0, 100.0, 1)
    errors: list[BaseException] = []

    def observe() -> None:
        try:
            for i in range(2000):
                p.observe_iterations(1.0, 100.0, 1)
                p.observe_prep(i % 7, 1.0)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    worker = threading.Thread(target=observe)
    worker.start()
    estimates = [p.estimate(i % 7, 100.0, 1, 100.0) for i in range(2000)]
    worker.join()
    assert not errors and all(e is not None and e > 0 for e in estimates)
    assert p.per_unit == pytest.approx(0.01) and set(p.prep) == set(range(7))
