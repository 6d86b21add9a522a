"""A new front door (over its budget, or killed) loses no request and no result: real daemon, real sockets."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import zmq
from dfi_wire import protocol as P
from helpers import portraits
from helpers.daemon_process import DaemonProcess
from helpers.process_memory import front_pid

pytestmark = pytest.mark.slow  # a daemon process whose front door is killed again and again


def small_edit(seed: int) -> dict:
    return portraits.small_edit(seed, iterations=12)


def test_jobs_and_pings_survive_their_front_door_being_killed_again_and_again(base):
    with DaemonProcess(base) as d:
        stop, kills = threading.Event(), []
        rng = random.Random(3)

        def killer() -> None:  # each new front door lives 0.3-0.9 s from when it is first seen, then dies
            while not stop.is_set():
                pid = front_pid(d)
                if pid is None or pid in kills:
                    stop.wait(0.05)
                    continue
                if not stop.wait(rng.uniform(0.3, 0.9)):
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            with d.client(30) as c:
                results = [c.run_job(small_edit(i)) for i in range(6)]
                pings = [c.ping()["type"] for _ in range(20)]
        finally:
            stop.set()
            t.join()
        assert len(set(kills)) >= 3, f"the front door was killed only {len(kills)} times"
        assert [r["type"] for r in results] == ["result"] * 6
        assert pings == ["pong"] * 20
        log = d.stderr_path.read_text(errors="replace")
        accepted = log.count(" accepted (")
        assert accepted == 6, f"{accepted} jobs started for 6 requests: a resent request ran twice\n{log[-3000:]}"
        with d.client(10) as c:
            assert c.status()["queue"]["running"] is None


def test_a_lost_result_is_sent_again_and_a_resent_request_is_not_run_twice(base):
    with DaemonProcess(base) as d:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, b"c-fixed-routing-id")
        s.connect(d.endpoint)

        def replies_until(kind: str, timeout: float = 60) -> list[dict]:
            got: list[dict] = []
            end = time.monotonic() + timeout
            while time.monotonic() < end and s.poll(int((end - time.monotonic()) * 1000)):
                got.append(P.unpack(s.recv(), 1 << 31))
                if got[-1]["type"] in (kind, "error"):
                    return got
            raise AssertionError(f"no {kind} reply; got {[g['type'] for g in got]}")

        try:
            request = P.pack({**small_edit(1), "id": 7})
            s.send(request)
            first = replies_until("result")
            job = first[0]["job"]
            assert first[0]["type"] == "accepted" and first[-1]["type"] == "result"
            s.send(request)  # as a client does after a reconnect: the same id
            again = replies_until("result")
            assert [a["type"] for a in again] == ["accepted", "result"] and again[0]["job"] == job
            assert again[-1] == first[-1], "the final reply kept is the one sent"
            s.send(P.pack(P.simple("heartbeat", id=8, jobs=[job])))
            assert replies_until("heartbeat")[-1]["jobs"] == {job: "sent"}
            s.send(P.pack(P.simple("result", id=9, job=job)))
            assert replies_until("result")[-1] == first[-1]
            s.send(P.pack(P.simple("result", id=10, job="job-999")))
            err = replies_until("never")[-1]
            assert err["code"] == "unknown_job" and err["id"] == 10
        finally:
            s.close()
        assert d.stderr_path.read_text().count(" accepted (") == 1
