"""Ray actors as a pool of workers: who has room, who is down (restarting), who is lost for good.

A worker that died is restarted by Ray (``max_restarts``); calls sent while it
restarts fail at once with ``ActorUnavailableError``, so a worker that failed is
given nothing for a moment, and one that keeps failing is dropped.
"""

from __future__ import annotations

import time
from typing import Any

from . import ScaleError

RESTART_WAIT_S = 2.0  # a failed worker gets no work for this long, doubled at each failure in a row
GIVE_UP_AFTER = 5  # failures in a row (about a minute of waits) before a worker is taken as lost for good


class Pool:
    def __init__(self, actors: list[Any], per_worker: int) -> None:
        self.actors, self.per_worker = actors, per_worker
        n = len(actors)
        self.load, self.fails, self.down_until = [0] * n, [0] * n, [0.0] * n
        self.lost = [False] * n

    def free(self, room: bool = True) -> int | None:
        """The least loaded worker that is up (and has room), or None."""
        now = time.monotonic()
        ready = [i for i in range(len(self.actors)) if not self.lost[i] and self.down_until[i] <= now
                 and (not room or self.load[i] < self.per_worker)]
        return min(ready, key=lambda i: self.load[i]) if ready else None

    def wait_for_free(self, timeout: float = 120.0, room: bool = True) -> int:
        """Block until a worker can take a call (for callers with nothing else to wait on); ``room`` False:
        any worker that is up, however many calls it has (a resend that must not wait behind a full window)."""
        end = time.monotonic() + timeout
        while (i := self.free(room)) is None:
            self.check_alive()
            if time.monotonic() > end:
                raise ScaleError("No Ray worker came back within two minutes; see 'ray status'.")
            time.sleep(0.1)
        return i

    def sent(self, i: int) -> None:
        self.load[i] += 1

    def back(self, i: int, ok: bool) -> None:
        """A call to worker ``i`` returned (``ok``) or failed because the worker was lost."""
        self.load[i] -= 1
        if ok:
            self.fails[i] = 0
            return
        self.fails[i] += 1
        self.down_until[i] = time.monotonic() + RESTART_WAIT_S * 2 ** (self.fails[i] - 1)
        self.lost[i] = self.fails[i] >= GIVE_UP_AFTER

    def check_alive(self) -> None:
        if all(self.lost):
            raise ScaleError("Every Ray worker was lost (see 'ray status' and the Ray logs under /tmp/ray); "
                             "the outputs written so far are kept; run the same command again to go on.")
