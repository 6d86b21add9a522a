"""The daemon's job queue and client watch, in process: order, bounds, cancel, close and silent clients.

No daemon and no sockets (``jobs`` has none): each test runs in milliseconds, so a change to the queue's
rules shows here before any process test runs.
"""

from __future__ import annotations

import threading
import time

import pytest
from dfi_daemon.server.jobs import ClientWatch, Job, JobQueue, QueueFull


def job(q: JobQueue, client: bytes = b"c1", req_id: object = None) -> Job:
    return Job(q.new_id(), client, req_id, {"op": "edit"})


def test_new_ids_are_unique_and_numbered_in_order():
    q = JobQueue(4)
    assert [q.new_id() for _ in range(3)] == ["job-1", "job-2", "job-3"]


def test_jobs_are_taken_first_in_first_out_and_marked_running():
    q = JobQueue(8)
    jobs = [job(q) for _ in range(4)]
    for j in jobs:
        q.submit(j)
    taken = []
    for _ in jobs:
        j = q.take(0)
        assert j is not None and j.state == "running" and q.snapshot()[0] is j
        taken.append(j)
        q.finish(j, "done")
    assert taken == jobs and [j.state for j in jobs] == ["done"] * 4
    assert q.snapshot() == (None, [])


def test_submit_says_how_many_jobs_are_ahead_counting_the_running_one():
    q = JobQueue(8)
    assert q.submit(job(q)) == 0  # starts now
    assert q.submit(job(q)) == 1
    running = q.take(0)
    assert running is not None
    assert q.submit(job(q)) == 2  # one waiting, one running
    assert [ahead for _, ahead in q.positions()] == [1, 2]
    q.finish(running, "done")
    assert [ahead for _, ahead in q.positions()] == [0, 1]


def test_the_queue_is_bounded_and_the_running_job_does_not_count():
    q = JobQueue(2)
    q.submit(job(q))
    q.submit(job(q))
    with pytest.raises(QueueFull, match="2 jobs waiting"):
        q.submit(job(q))
    assert q.take(0) is not None  # one leaves the waiting line: room for one more
    q.submit(job(q))
    with pytest.raises(QueueFull):
        q.submit(job(q))
    assert len(q.snapshot()[1]) == 2


def test_cancelling_a_waiting_job_removes_it_at_once():
    q = JobQueue(8)
    first, second, third = job(q), job(q), job(q)
    for j in (first, second, third):
        q.submit(j)
    assert q.cancel(second.id) is second
    assert second.state == "cancelled" and second.cancelled and second.cancel_reason == "cancelled"
    assert q.find(second.id) is None
    assert [q.take(0), q.take(0), q.take(0)] == [first, third, None]


def test_cancelling_the_running_job_flags_it_and_leaves_it_to_the_worker():
    q = JobQueue(8)
    q.submit(job(q))
    running = q.take(0)
    assert running is not None
    assert q.cancel(running.id, "client_gone") is running
    assert running.state == "running" and running.cancel_event.is_set(), "it stops at its next iteration"
    assert q.snapshot()[0] is running and running.cancel_reason == "client_gone"
    q.finish(running, "cancelled")
    assert q.snapshot() == (None, []) and running.state == "cancelled"


def test_the_first_cancel_reason_stays():
    q = JobQueue(8)
    j = job(q)
    q.submit(j)
    q.take(0)
    q.cancel(j.id, "cancelled")
    q.cancel(j.id, "shutting_down")
    assert j.cancel_reason == "cancelled"


def test_cancel_and_find_of_an_unknown_or_finished_job_return_none():
    q = JobQueue(8)
    j = job(q)
    q.submit(j)
    q.finish(q.take(0), "done")
    assert q.cancel(j.id) is None and q.find(j.id) is None and q.cancel("job-99") is None
    assert not j.cancelled


def test_finishing_a_job_that_is_not_the_running_one_keeps_the_running_one():
    q = JobQueue(8)
    a, b = job(q), job(q)
    q.submit(a)
    q.submit(b)
    running = q.take(0)
    q.cancel(b.id)
    q.finish(b, "cancelled")  # (the worker never saw it; a stray finish must not clear the slot)
    assert q.snapshot()[0] is running is a


def test_take_waits_for_its_timeout_when_nothing_is_queued():
    q = JobQueue(8)
    t0 = time.monotonic()
    assert q.take(0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 1


def test_take_wakes_as_soon_as_a_job_is_submitted():
    q = JobQueue(8)
    j = job(q)
    got: list[Job | None] = []
    worker = threading.Thread(target=lambda: got.append(q.take(10)))
    worker.start()
    time.sleep(0.02)
    t0 = time.monotonic()
    q.submit(j)
    worker.join(5)
    assert got == [j] and time.monotonic() - t0 < 1


def test_close_cancels_everything_refuses_new_jobs_and_releases_the_worker():
    q = JobQueue(8)
    running, w1, w2 = job(q), job(q), job(q)
    for j in (running, w1, w2):
        q.submit(j)
    assert q.take(0) is running
    waiter = JobQueue(8)
    got: list[Job | None] = []
    worker = threading.Thread(target=lambda: got.append(waiter.take(10)))
    worker.start()
    time.sleep(0.02)
    waiter.close()
    worker.join(5)
    assert got == [None], "a worker blocked in take is released by close"
    assert q.close() == [w1, w2]
    assert [(j.state, j.cancel_reason) for j in (w1, w2)] == [("cancelled", "shutting_down")] * 2
    assert running.cancelled and running.cancel_reason == "shutting_down" and running.state == "running"
    with pytest.raises(QueueFull):
        q.submit(job(q))
    assert q.take(1) is None and q.snapshot()[1] == []


def test_a_silent_clients_jobs_expire_and_a_heartbeat_keeps_them():
    w = ClientWatch(0.05)
    q = JobQueue(8)
    quiet, chatty = job(q, b"quiet"), job(q, b"chatty")
    w.touch(b"quiet")
    w.touch(b"chatty")
    assert w.expired_jobs([quiet, chatty]) == []
    time.sleep(0.08)
    w.touch(b"chatty")
    assert w.expired_jobs([quiet, chatty]) == [quiet]
    quiet.cancel("client_gone")
    assert w.expired_jobs([quiet, chatty]) == [], "a cancelled job is not expired twice"


def test_a_client_never_heard_from_counts_as_silent():
    w = ClientWatch(60)
    assert w.silent(b"stranger") > 60


def test_restart_forgives_the_daemons_own_pause():
    w = ClientWatch(0.05)
    q = JobQueue(8)
    j = job(q, b"c")
    w.touch(b"c")
    time.sleep(0.08)  # as if the daemon had been stopped: the gap says nothing about the client
    assert w.expired_jobs([j]) == [j]
    w.restart()
    assert w.expired_jobs([j]) == [] and w.silent(b"c") < 0.05


def test_forget_except_drops_only_silent_clients_without_jobs():
    w = ClientWatch(0.05)
    for c in (b"old-with-job", b"old", b"fresh"):
        w.touch(c)
    time.sleep(0.08)
    w.touch(b"fresh")
    w.forget_except({b"old-with-job"})
    assert set(w._seen) == {b"old-with-job", b"fresh"}
