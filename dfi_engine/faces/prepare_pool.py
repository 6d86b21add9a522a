"""Reading, detecting and aligning a build's images, in this process or in a pool of worker processes.

Face detection is the slow part of a database build (~5 images/s per core with
dlib), and it is independent per image, so ``prepared`` fans it out over worker
processes (each with its own detector) and yields the results in the plan's order.
At most ``WINDOW_PER_WORKER`` images per worker are in flight, so memory stays
bounded whatever the size of the plan. Workers ignore SIGINT: Ctrl-C reaches the
building process, which writes what it has and stops them.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..errors import DFIError
from ..images import read_image
from . import align as al
from .database import MAX_SOURCE_PIXELS, content_hash
from .errors import NoFaceError
from .landmarks import FaceDetector, choose_face, to_uint8_rgb

WINDOW_PER_WORKER = 4


@dataclass
class Prepared:
    """One plan row: ``status`` "ok" (crop, landmarks, dense), "no_face" or "unreadable" (message)."""

    status: str
    digest: bytes | None = None
    crop: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    message: str = ""
    dense: np.ndarray | None = None  # (68, 2) in crop pixels; None where no 68-point model could run


def align_source(rgb8: np.ndarray, size: int, detector: FaceDetector | None) -> tuple[np.ndarray, np.ndarray]:
    """(aligned uint8 crop, crop landmarks) for one source image; NoFaceError if none."""
    crop, lm, _ = align_source_dense(rgb8, size, detector)
    return crop, lm


@cache
def _crop_detector() -> FaceDetector | None:
    """A detector for the dense points of already aligned crops (builds without detection); None without dlib."""
    try:
        return FaceDetector()
    except DFIError:
        return None


def align_source_dense(rgb8: np.ndarray, size: int, detector: FaceDetector | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(aligned uint8 crop, crop landmarks, 68 crop points or None) for one source image; NoFaceError if none.

    The 68 points are found on the photo at full resolution and mapped through the crop's alignment, so they
    are as sharp as the photo allows; already aligned crops are searched directly. None when dlib's 68-point
    model cannot run (the database then serves texture-only edits).
    """
    if detector is None:  # already aligned: centre square, resized; landmarks from the template
        from PIL import Image

        h, w = rgb8.shape[:2]
        s = min(h, w)
        sq = rgb8[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        crop = np.ascontiguousarray(np.asarray(Image.fromarray(sq).resize((size, size), Image.LANCZOS))
                                    if s != size else sq)
        det = _crop_detector()
        try:
            dense = None if det is None else det.dense_on_crop(crop)
        except DFIError:
            dense = None
        return crop, al.template(size), dense
    faces = detector.detect(rgb8)
    if not faces:
        raise NoFaceError("no face found")
    i, _ = choose_face(faces)
    crop, m = al.align_rgb(rgb8.astype(np.float32), faces[i], size)
    try:
        dense = al.apply(m, detector.dense(rgb8, faces[i]))
    except DFIError:
        dense = None
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8), al.apply(m, faces[i].landmarks), dense


def prepare(path: str | Path, size: int, detector: FaceDetector | None) -> Prepared:
    try:
        rgb8 = to_uint8_rgb(read_image(path, MAX_SOURCE_PIXELS))
        digest = content_hash(rgb8)
    except (DFIError, OSError, ValueError) as e:
        return Prepared("unreadable", message=f"unreadable: {e}")
    try:
        crop, lm, dense = align_source_dense(rgb8, size, detector)
    except NoFaceError:
        return Prepared("no_face", digest, message="no face found")
    except (DFIError, ValueError) as e:
        return Prepared("unreadable", digest, message=f"unreadable: {e}")
    return Prepared("ok", digest, crop, lm, dense=dense)


# ------------------------------------------------------------------------------------------ the pool

_detector: FaceDetector | None = None
_size = 0


def _start_worker(size: int, aligned: bool, model: str, upsample: int) -> None:
    global _detector, _size
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _size = size
    _detector = None if aligned else FaceDetector(model, upsample)


def _prepare_in_worker(path: str) -> Prepared:
    return prepare(path, _size, _detector)


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def prepared(files: Sequence[str | Path], size: int, aligned: bool, model: str = "5", upsample: int = 1,
             workers: int = 1, detector: FaceDetector | None = None) -> Iterator[Prepared]:
    """``prepare`` for every file, in order; ``workers`` > 1 runs them in that many processes."""
    if workers <= 1 or len(files) <= 1:
        det = None if aligned else (detector or FaceDetector(model, upsample))
        for f in files:
            yield prepare(f, size, det)
        return
    pool = ProcessPoolExecutor(min(workers, len(files)), mp_context=get_context("spawn"),
                               initializer=_start_worker, initargs=(size, aligned, model, upsample))
    window: deque[Future] = deque()
    todo = iter(files)
    try:
        for f in todo:
            window.append(pool.submit(_prepare_in_worker, str(f)))
            if len(window) >= WINDOW_PER_WORKER * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # what is still queued is dropped, a resume redoes it
