"""What a real daemon answers to bad, hostile and repeated requests, over real sockets below the client.

Each refusal names what is wrong and comes at once (never a timeout); a repeated request id is matched by
its content, so a resend is never run twice and another request under the same id never gets its answer.
"""

from __future__ import annotations

import struct
import time

import msgpack
import pytest
from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonError
from helpers.daemon_process import DaemonProcess
from helpers.portraits import small_edit
from helpers.raw_sockets import Conn, raw_request

pytestmark = pytest.mark.slow  # every test starts a daemon process


# Guards: a request without an op, with an op of the wrong type, or with too many strengths is told why.
def test_rejections_say_what_is_wrong(base):
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


# Guards: a request the daemon cannot decode is answered (with a nil id) and the client raises at once.
def test_an_undecodable_request_gets_its_error_not_a_timeout(base):
    """A request the daemon cannot even decode (a list longer than any message may hold) is answered with a
    nil id; the caller gets that error at once instead of waiting for its timeout."""
    with DaemonProcess(base) as d, Client(d.endpoint, timeout=20) as c:
        bad = P.edit_request(P.image_map(bytes(48 * 48 * 3), 48, 48, "RGB8"), "facehair", [0.5] * 4097)
        t0 = time.monotonic()
        with pytest.raises(DaemonError) as e:
            c.call(bad)
        assert e.value.code == "bad_message" and time.monotonic() - t0 < 5


# Guards: millions of tiny msgpack objects are refused before decoding: no memory spike, no stall for others.
def test_an_object_count_bomb_is_refused_before_decoding(base):
    """32 MiB of nested empty maps used to cost +2.2 GB and stall every client for ~6 s."""
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


# Guards: a finished request id reused for another edit gets a new job and its own pixels, not the old answer.
def test_a_reused_request_id_gets_its_own_answer(base):
    """Edit A with id "again", then edit B (another image) with the same id: B was answered with A's job and
    pixels. Now a finished id is free again, and a resend is recognised by its content."""
    with DaemonProcess(base) as d:
        c = Conn(d.endpoint)
        try:
            a, b = {**small_edit(1), "id": "again"}, {**small_edit(2), "id": "again"}
            c.send(a)
            first = c.until("result")
            c.send(b)
            second = c.until("result")
            assert second[0]["type"] == "accepted" and second[0]["job"] != first[0]["job"], second[0]
            assert second[-1]["type"] == "result" and second[-1]["job"] == second[0]["job"]
            assert second[-1]["images"][0]["data"] != first[-1]["images"][0]["data"], "B got A's pixels"
            c.send(b)  # the same request again (as after a reconnect): its own job, not run twice
            again = c.until("result")
            assert [m["type"] for m in again] == ["accepted", "result"] and again[0]["job"] == second[0]["job"]
        finally:
            c.close()
        assert d.stderr_path.read_text().count(" accepted (") == 2


# Guards: another request under a running job's id is refused (id_in_use); the same request resent is matched.
def test_another_request_under_the_id_of_a_running_job_is_refused(base):
    with DaemonProcess(base, "--client-timeout", "60") as d:  # (this raw client sends no heartbeats)
        c = Conn(d.endpoint)
        try:
            long = {**small_edit(1, iterations=10_000), "id": "busy"}
            c.send(long)
            job = c.until("accepted")[-1]["job"]
            c.send({**small_edit(2), "id": "busy"})
            refused = c.until("never")[-1]
            assert refused["code"] == "id_in_use" and refused["id"] == "busy", refused
            assert job in refused["message"] and "new id" in refused["hint"]
            c.send(long)  # the running job's own request, sent again: recognised
            assert [m for m in c.until("accepted") if m["type"] == "accepted"][-1]["job"] == job
            c.send(P.simple("cancel", id="x", job=job))
            assert c.until("cancelling")[-1]["type"] == "cancelling"
        finally:
            c.close()
        assert d.stderr_path.read_text().count(" accepted (") == 1
