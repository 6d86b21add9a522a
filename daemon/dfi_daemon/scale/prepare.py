"""``dfi db build/add/fetch --ray``: faces detected and aligned on Ray workers, one detector each.

The builder (``dfi_engine.faces.builder``) stays the only writer: it takes the
prepared rows in the plan's order and writes its shards as it always does, so a
database built on Ray is the same as one built in one process, and resumes the
same way. The driver reads each file and sends its bytes, so workers need no
access to the images' folder; a worker lost mid-image is replaced and the image
sent again.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import ScaleError, require_ray
from .cluster import joined
from .pool import Pool

WINDOW_PER_WORKER = 4
ATTEMPTS = 3  # Ray restarts a lost worker this often; an image is sent this often at most


class _Named(io.BytesIO):
    """File bytes that print as their file's name (in the builder's skip messages)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


class Preparer:
    """A Ray actor with one face detector: file bytes -> ``Prepared`` row."""

    def __init__(self, size: int, aligned: bool, model: str, upsample: int) -> None:
        from dfi_engine.faces.landmarks import FaceDetector

        self.size = size
        self.detector = None if aligned else FaceDetector(model, upsample)

    def prepare(self, name: str, data: bytes | None) -> Any:
        from dfi_engine.faces.prepare_pool import Prepared, prepare

        if data is None:
            return Prepared("unreadable", message=f"unreadable: cannot read {name}")
        return prepare(_Named(data, name), self.size, self.detector)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class RayPreparer:
    """The builder's ``preparer``: ``prepared`` over a Ray cluster's workers, results in the plan's order."""

    def __init__(self, address: str, workers: int = 0, note: Callable[[str], None] = print) -> None:
        self.address, self.workers, self.note = address, workers, note

    def __call__(self, files: Sequence[str | Path], size: int, aligned: bool, model: str = "5",
                 upsample: int = 1) -> Iterator[Any]:
        ray = require_ray(self.address)
        try:
            yield from self._prepared(ray, files, size, aligned, model, upsample)
        except ray.exceptions.RayError as e:  # the cluster itself failed: one line, the shards so far are kept
            first = (str(e).strip().splitlines() or [""])[0]
            raise ScaleError(f"Ray failed: {type(e).__name__}: {first[:300]} (see the Ray logs under /tmp/ray); "
                             "run the same command again to resume.") from None

    def _prepared(self, ray: Any, files: Sequence[str | Path], size: int, aligned: bool, model: str,
                  upsample: int) -> Iterator[Any]:
        with joined(self.address, note=self.note) as cluster:
            n = max(1, min(self.workers or cluster.cpus, cluster.cpus, len(files) or 1))  # 1 CPU each
            self.workers = n
            self.note(f"detecting faces on {n} Ray worker(s) of {cluster.describe()}")
            remote = ray.remote(Preparer).options(num_cpus=1, max_restarts=ATTEMPTS, max_task_retries=0)
            actors = [remote.remote(size, aligned, model, upsample) for _ in range(n)]
            pool = Pool(actors, WINDOW_PER_WORKER)
            window: deque[tuple[Any, int, Path, bytes | None]] = deque()
            try:
                for f in files:
                    path = Path(f)
                    data = _read(path)
                    while (i := pool.free()) is None:  # every worker's window is full: take the oldest result
                        if not window:  # none full: they are all restarting
                            i = pool.wait_for_free()
                            break
                        yield self._result(ray, pool, *window.popleft())
                    window.append((actors[i].prepare.remote(str(path), data), i, path, data))
                    pool.sent(i)
                while window:
                    yield self._result(ray, pool, *window.popleft())
            finally:
                for a in actors:
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # already gone with its node
                        pass

    @staticmethod
    def _result(ray: Any, pool: Pool, ref: Any, i: int, path: Path, data: bytes | None) -> Any:
        """The row of one image, sent again (to a worker that is up) if its worker was lost; an image that
        loses its worker ATTEMPTS times is skipped as unreadable."""
        from dfi_engine.faces.prepare_pool import Prepared

        for attempt in range(1, ATTEMPTS + 1):
            try:
                row = ray.get(ref)
                pool.back(i, ok=True)
                return row
            except ray.exceptions.RayActorError:
                pool.back(i, ok=False)
                if attempt == ATTEMPTS:
                    break
                i = pool.wait_for_free(room=False)
                ref = pool.actors[i].prepare.remote(str(path), data)
                pool.sent(i)
        return Prepared("unreadable", message=f"unreadable: its Ray worker was lost {ATTEMPTS} times over it")
