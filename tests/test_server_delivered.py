"""The daemon's memory of requests and final replies (``delivered``), in process: matching, reuse and bounds.

A lost reply is sent again from here and a resent request is recognised here, so each rule is checked
directly, in milliseconds; the process tests (test_reconnect) check the same through a real front door.
"""

from __future__ import annotations

import time

from dfi_daemon.server.delivered import Delivered, digest


def test_a_digest_tells_frames_apart_and_the_same_frame_gives_the_same_digest():
    a, b = b"\x81\xa2op\xa4edit", b"\x81\xa2op\xa4ping"
    assert digest(a) == digest(bytes(a)) and digest(a) != digest(b)
    assert len(digest(a)) == 16


def test_a_request_is_found_by_client_and_id_only():
    d = Delivered()
    d.accepted(b"c1", 7, "job-1", digest(b"x"))
    assert d.job_for(b"c1", 7) == ("job-1", digest(b"x"))
    assert d.job_for(b"c2", 7) is None and d.job_for(b"c1", 8) is None


def test_a_request_without_an_id_is_never_matched():
    d = Delivered()
    d.accepted(b"c1", None, "job-1", digest(b"x"))
    assert d.job_for(b"c1", None) is None and d.requests == {}


def test_a_reused_id_points_at_the_newer_job_and_forgetting_the_older_one_keeps_it():
    d = Delivered()
    d.accepted(b"c1", "again", "job-1", digest(b"a"))
    d.accepted(b"c1", "again", "job-2", digest(b"b"))
    assert d.job_for(b"c1", "again") == ("job-2", digest(b"b"))
    d.forget_request(b"c1", "again", "job-1")
    assert d.job_for(b"c1", "again") == ("job-2", digest(b"b"))
    d.forget_request(b"c1", "again", "job-2")
    assert d.job_for(b"c1", "again") is None
    d.forget_request(b"c1", "never-seen", "job-3")  # nothing to forget: no error


def test_a_final_reply_is_kept_and_given_back():
    d = Delivered()
    d.finished("job-1", b"c1", 1, b"result-1")
    sent = d.get("job-1")
    assert sent is not None and (sent.job, sent.client, sent.req_id, sent.payload) == ("job-1", b"c1", 1, b"result-1")
    assert d.get("job-2") is None and d.bytes == len(b"result-1")


def test_the_count_bound_drops_the_oldest_replies_and_their_requests():
    d = Delivered(keep_count=3)
    for i in range(5):
        d.accepted(b"c", i, f"job-{i}", digest(bytes([i])))
        d.finished(f"job-{i}", b"c", i, b"r" * 10)
    assert list(d.sent) == ["job-2", "job-3", "job-4"]
    assert d.job_for(b"c", 0) is None and d.job_for(b"c", 1) is None
    assert d.job_for(b"c", 4) == ("job-4", digest(bytes([4])))
    assert d.bytes == 30


def test_the_byte_bound_drops_the_oldest_but_the_newest_reply_always_stays():
    d = Delivered(keep_bytes=100)
    d.finished("job-1", b"c", 1, bytes(60))
    d.finished("job-2", b"c", 2, bytes(30))
    assert list(d.sent) == ["job-1", "job-2"] and d.bytes == 90
    d.finished("job-3", b"c", 3, bytes(50))  # 140 > 100: the oldest goes
    assert list(d.sent) == ["job-2", "job-3"] and d.bytes == 80
    d.finished("job-4", b"c", 4, bytes(500))  # alone over the bound: kept, so its client can still have it
    assert list(d.sent) == ["job-4"] and d.bytes == 500


def test_replies_older_than_the_keep_time_are_forgotten_with_their_requests():
    d = Delivered(keep_s=0.05)
    d.accepted(b"c", 1, "job-1", digest(b"a"))
    d.finished("job-1", b"c", 1, b"old")
    time.sleep(0.08)
    d.accepted(b"c", 2, "job-2", digest(b"b"))
    d.finished("job-2", b"c", 2, b"new")
    assert d.get("job-1") is None and d.get("job-2") is not None
    assert d.job_for(b"c", 1) is None and d.job_for(b"c", 2) is not None
    assert d.bytes == len(b"new")
    time.sleep(0.08)
    assert d.get("job-2") is None and d.sent == {} and d.bytes == 0


def test_expiry_keeps_an_entry_that_a_reused_id_made_for_a_live_job():
    d = Delivered(keep_count=1)
    d.accepted(b"c", "id", "job-1", digest(b"a"))
    d.finished("job-1", b"c", "id", b"r1")
    d.accepted(b"c", "id", "job-2", digest(b"b"))  # the id reused by a job still running
    d.finished("job-3", b"c", "other", b"r3")  # pushes job-1's reply out
    assert d.get("job-1") is None
    assert d.job_for(b"c", "id") == ("job-2", digest(b"b"))
