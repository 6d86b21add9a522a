"""The live-preview session store on its own (fake sessions with an ``nbytes``, a fake clock): least recently used
out beyond the byte budget, idle sessions dropped, a gone client's dropped, and what a preview without an image
may continue (no daemon, no engine)."""

from __future__ import annotations

import threading

import pytest
from dfi_daemon.server.jobs import Job, Settings
from dfi_daemon.server.sessions import (
    Entry,
    Sessions,
    inherit_image,
    older_previews,
    recipe_matches,
    setup_digest,
)
from dfi_wire import protocol as P

MB = 2**20


class Fake:
    """A session that holds ``nbytes`` (and may grow, as a real one does when it keeps refined looks)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def entry(nbytes: int, setup: bytes = b"x") -> Entry:
    return Entry(Fake(nbytes), setup, {"attribute": "smile", "align": True, "k": 10, "components": None})


def test_least_recently_used_sessions_go_first_beyond_the_budget():
    s = Sessions(10 * MB, 600, Clock())
    for name in ("a", "b", "c"):
        assert s.put((b"c1", name), entry(4 * MB)) == ([] if name != "c" else [(b"c1", "a")])
    assert s.stats() == {"count": 2, "bytes": 8 * MB, "budget_bytes": 10 * MB}
    assert s.get((b"c1", "b")) is not None  # b is now the most recently used: c goes next
    assert s.put((b"c2", "d"), entry(4 * MB)) == [(b"c1", "c")]
    assert s.get((b"c1", "a")) is None and s.get((b"c1", "c")) is None
    assert s.stats()["bytes"] <= s.budget_bytes


def test_the_newest_session_stays_even_alone_over_the_budget():
    """The user is looking at it; everything else goes first."""
    s = Sessions(1 * MB, 600, Clock())
    s.put((b"c", "small"), entry(MB // 2))
    assert s.put((b"c", "big"), entry(3 * MB)) == [(b"c", "small")]
    assert s.stats()["count"] == 1 and s.get((b"c", "big")) is not None


def test_a_session_that_grows_is_measured_again_and_the_budget_applies():
    s = Sessions(10 * MB, 600, Clock())
    first, second = entry(3 * MB), entry(3 * MB)
    s.put((b"c", "a"), first)
    s.put((b"c", "b"), second)
    second.session.nbytes = 8 * MB
    assert s.refresh((b"c", "b"), second) == [(b"c", "a")]
    assert s.stats() == {"count": 1, "bytes": 8 * MB, "budget_bytes": 10 * MB}
    assert s.refresh((b"c", "a"), first) == [], "a dropped entry is not brought back"
    assert s.get((b"c", "a")) is None


def test_idle_sessions_are_dropped_and_use_keeps_them():
    clock = Clock()
    s = Sessions(100 * MB, 60, clock)
    s.put((b"c", "old"), entry(MB))
    s.put((b"c", "used"), entry(MB))
    clock.t += 50
    s.get((b"c", "used"))
    clock.t += 20
    assert s.expire() == [(b"c", "old")]
    assert s.stats()["count"] == 1
    clock.t += 61
    assert s.expire() == [(b"c", "used")] and s.stats()["count"] == 0


def test_a_gone_client_loses_its_sessions_and_only_its_own():
    s = Sessions(100 * MB, 600, Clock())
    for client, name in ((b"gone", "a"), (b"gone", "b"), (b"stays", "a")):
        s.put((client, name), entry(MB))
    assert s.drop_client(b"gone") == 2
    assert s.get((b"stays", "a")) is not None and s.stats()["count"] == 1


def test_a_put_refused_under_the_lock_when_the_job_is_gone_meanwhile():
    s = Sessions(100 * MB, 600, Clock())
    assert s.put((b"c", "a"), entry(MB), unless=lambda: True) == []
    assert s.stats()["count"] == 0


def test_the_store_is_safe_under_threads():
    """The worker opens sessions while the main loop drops clients and reads totals."""
    s = Sessions(10 * MB, 600)
    errors: list[BaseException] = []

    def worker(client: bytes) -> None:
        try:
            for i in range(300):
                s.put((client, str(i % 7)), entry(MB))
                s.drop_client(client if i % 5 == 0 else b"other")
                s.stats()
        except BaseException as e:  # noqa: BLE001 - any error in a thread fails the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(bytes([i]),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st = s.stats()
    assert st["bytes"] == st["count"] * MB <= 10 * MB


def image(value: int = 0) -> P.Image:
    return P.Image(32, 32, "RGB8", bytes([value]) * 32 * 32 * 3)


def preview(image_: P.Image | None = None, **options) -> P.Preview:
    return P.Preview(op="preview", session="s", attribute="smile", strength=0.3, image=image_,
                     options=P.Options(**options))


def test_the_setup_digest_tells_a_reuse_from_a_replacement():
    a = setup_digest(preview(image()), True, 10)
    assert a == setup_digest(preview(image()), True, 10)
    assert a != setup_digest(preview(image(1)), True, 10), "another photo"
    assert a != setup_digest(preview(image()), True, 20), "other neighbours"
    assert a != setup_digest(preview(image(), components=("shape",)), True, 10)


def test_a_preview_without_image_continues_a_session_with_the_same_attribute_and_named_options():
    recipe = {"attribute": "smile", "align": True, "k": 10, "components": ("shape", "tone")}
    assert recipe_matches(recipe, preview())
    assert recipe_matches(recipe, preview(k=10, components=("shape", "tone")))
    assert not recipe_matches(recipe, preview(k=20))
    assert not recipe_matches(recipe, preview(components=("tone",)))
    assert not recipe_matches(recipe, P.Preview(op="preview", session="s", attribute="older", strength=0.3))
    with pytest.raises(P.ProtocolError) as e:
        Sessions(MB, 600).kept(b"c", preview())
    assert e.value.code == "unknown_session" and "image" in e.value.hint


def job(client: bytes, session: str, request: P.Request | None, state: str = "queued") -> Job:
    settings = Settings(op="preview", height=32, width=32, k=10, align=True, work_size=0, iterations=3,
                        quality="balanced", scaling=None, color=None, feather=None, preview_s=0.0, session=session)
    return Job("job-1", client, 1, request, settings, state=state)


def test_a_preview_without_image_takes_the_image_of_the_newest_older_preview_of_its_session():
    first, second = job(b"c", "s", preview(image(1), k=5)), job(b"c", "s", preview(image(2), k=7), "running")
    others = [job(b"other", "s", preview(image(3))), job(b"c", "t", preview(image(4))),
              job(b"c", "s", preview(image(5)), "done")]
    older = older_previews([first, *others, second], b"c", "s")
    assert older == [first, second]
    got = inherit_image(preview(iterations=2), older)
    assert got.image == image(2) and got.options.k == 7 and got.options.iterations == 2
    assert inherit_image(preview(image(9)), older).image == image(9), "its own image wins"
    second.request = None  # the worker has let go of it
    assert inherit_image(preview(), older).image == image(1)
    assert inherit_image(preview(), []).image is None
