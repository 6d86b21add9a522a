"""Live-preview sessions the daemon keeps between a slider's requests, within a byte budget and an idle time.

A session (the engine's ``EditSession``: the photo aligned, neighbours chosen, prototypes and the attribute
vector computed) costs seconds to open and milliseconds to use, so the daemon keeps it per (client
identity, session id) while the user moves the slider. It is memory the user does not see, so it is bounded:
least recently used sessions go first once their bytes pass the budget, a session unused for the idle time
goes, and all of a client's go when the daemon takes that client for gone.

Thread-safe: the worker thread opens and uses sessions, the main loop drops them and reads the totals.
No engine import: an entry is anything with ``nbytes`` (tests use small fakes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dfi_wire import protocol as P

from .jobs import Job, Settings

Key = tuple[bytes, str]  # (the client's ROUTER identity, the client's session id)


@dataclass
class Entry:
    """One kept session and what it was opened from (to tell a reuse from a replacement)."""

    session: Any  # the engine's EditSession (anything with an ``nbytes``)
    setup: bytes  # digest of image, mask, attribute and session options: equal -> the same session
    recipe: dict[str, Any] = field(default_factory=dict)  # attribute, align, k, components as resolved
    nbytes: int = 0
    used: float = 0.0  # time.monotonic() of the last use


def measure(session: Any) -> int:
    """A session's bytes as it reports them (0 if it cannot say: it is still counted as a session)."""
    try:
        return max(0, int(session.nbytes))
    except Exception:  # a size is bookkeeping: never fail a preview over it
        return 0


class Sessions:
    """Sessions by (client, id), oldest use first; ``budget_bytes`` and ``idle_s`` bound what stays."""

    def __init__(self, budget_bytes: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_bytes = int(budget_bytes)
        self.idle_s = float(idle_s)
        self._clock = clock
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Entry | None:
        """The session kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.used = self._clock()
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Key, entry: Entry, unless: Callable[[], bool] | None = None) -> list[Key]:
        """Keep ``entry`` under ``key`` (replacing what was there), then drop the least recently used others
        while the total is over the budget; returns the keys dropped. The newest entry always stays, even alone
        over the budget: the user is looking at it. ``unless`` is checked under the lock: a job whose client
        was taken for gone while it opened the session must not bring it back after the drop."""
        with self._lock:
            if unless is not None and unless():
                return []
            entry.nbytes, entry.used = measure(entry.session), self._clock()
            self._entries[key] = entry
            self._entries.move_to_end(key)
            return self._evict()

    def refresh(self, key: Key, entry: Entry) -> list[Key]:
        """Measure ``entry`` again after a use (refined looks it keeps may have grown it), if it is still kept
        under ``key``; the budget then applies again. Returns the keys dropped."""
        with self._lock:
            if self._entries.get(key) is not entry:
                return []
            entry.nbytes = measure(entry.session)
            return self._evict()

    def _evict(self) -> list[Key]:
        dropped = []
        while len(self._entries) > 1 and sum(e.nbytes for e in self._entries.values()) > self.budget_bytes:
            key, _ = self._entries.popitem(last=False)
            dropped.append(key)
        return dropped

    def drop(self, key: Key) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def drop_client(self, client: bytes) -> int:
        """Forget every session of ``client`` (it is gone); returns how many."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == client]
            for k in keys:
                del self._entries[k]
            return len(keys)

    def expire(self) -> list[Key]:
        """Drop sessions unused for ``idle_s``; returns their keys."""
        with self._lock:
            now = self._clock()
            keys = [k for k, e in self._entries.items() if now - e.used > self.idle_s]
            for k in keys:
                del self._entries[k]
            return keys

    def kept(self, client: bytes, req: P.Preview) -> Entry:
        """The kept session a preview without an image continues; ``unknown_session`` if there is none that
        fits (another attribute, or other session options named)."""
        entry = self.get((client, req.session))
        if entry is None or not recipe_matches(entry.recipe, req):
            raise unknown_session(req.session)
        return entry

    def stats(self) -> dict[str, int]:
        """What ``status`` shows: how many sessions, their bytes, the budget."""
        with self._lock:
            return {"count": len(self._entries), "bytes": sum(e.nbytes for e in self._entries.values()),
                    "budget_bytes": self.budget_bytes}


# ---------------------------------------------------------------------- what a preview's session is
def setup_digest(req: P.Preview, align: bool, k: int) -> bytes:
    """What a preview's session is opened from, as a digest: a later preview with an image reuses the session
    when this is equal (the same photo, selection, attribute and session options), and replaces it otherwise."""
    h = hashlib.blake2b(digest_size=16)
    for im in (req.image, req.mask):
        h.update(b"-" if im is None else f"{im.width}x{im.height}:{im.format}:".encode())
        h.update(b"" if im is None else im.data)
    h.update(repr((req.attribute, align, k, req.options.components)).encode())
    return h.digest()


def recipe_of(s: Settings) -> dict[str, Any]:
    """A session's attribute and resolved session options, to check later previews without an image against."""
    return {"attribute": s.attribute, "align": s.align, "k": s.k, "components": s.components}


def recipe_matches(recipe: dict[str, Any], req: P.Preview) -> bool:
    """Whether a preview without an image can use a session: the same attribute, and the session options it
    names (those it leaves out are the session's)."""
    given = req.options.given()
    return req.attribute == recipe["attribute"] and all(
        recipe[name] == (tuple(given[name]) if name == "components" else given[name])
        for name in P.SESSION_OPTIONS if name in given)


def unknown_session(session: str) -> P.ProtocolError:
    return P.ProtocolError("unknown_session", f"The daemon holds no live-preview session {session[:64]!r} for this "
                           "client with that attribute and those options (never opened, or dropped by its budget or "
                           "idle time).", "Send the preview again with its image (and mask).")


# ---------------------------------------------------------------------- supersede (the main loop's side)
def older_previews(jobs: Iterable[Job], client: bytes, session: str) -> list[Job]:
    """The client's queued or running previews of ``session``, oldest first: a newer one supersedes them."""
    return [j for j in jobs if j.state in ("queued", "running") and j.settings is not None
            and j.settings.op == "preview" and j.client == client and j.settings.session == session]


def inherit_image(req: P.Preview, older: list[Job]) -> P.Preview:
    """A preview without an image continues the newest older preview of its session that has one (a slider
    moved while the session was still opening): it takes that image, mask and those options, its own options
    on top. Unchanged when it has an image, or none of them has."""
    if req.image is not None:
        return req
    for job in reversed(older):
        before = job.request  # the worker drops it (sets None) once the job has run
        if isinstance(before, P.Preview) and before.image is not None:
            options = dataclasses.replace(before.options, **{k: getattr(req.options, k)
                                                             for k in req.options.given()})
            return dataclasses.replace(req, image=before.image, mask=before.mask, options=options)
    return req
