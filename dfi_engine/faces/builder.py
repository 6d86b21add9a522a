"""Building and extending a neighbour database: detect and align faces, write shards, resume.

Builds stream through the input one shard at a time (bounded memory), each shard
is written to a temporary folder and renamed into place, and the manifest is
rewritten atomically after each shard, so an interrupted build resumes at the last
finished shard. Detection and alignment run in a pool of worker processes
(``workers``); their results are taken in the plan's order, so a build gives the
same database whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CancelledError, InputError
from .database import (
    DENSE,
    MANIFEST,
    MIN_RESOLUTION,
    SHARD_BYTES,
    THUMB,
    Plan,
    _new_manifest,
    _write_json,
    read_manifest,
    thumbnail,
)
from .errors import DatabaseError
from .landmarks import FaceDetector
from .prepare_pool import Prepared, default_workers, prepared


@dataclass
class BuildReport:
    """What a build or add did: counts, skipped files with reasons, duplicates, timing."""

    database: str
    added: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    resumed_at: int = 0
    total: int = 0
    seconds: float = 0.0
    complete: bool = False
    workers: int = 1

    def summary(self) -> str:
        rate = (self.total - self.resumed_at) / self.seconds if self.seconds > 0 else 0.0
        s = (f"{self.database}: added {self.added} faces of {self.total - self.resumed_at} images processed "
             f"({rate:.1f} images/s, {self.workers} worker{'s' if self.workers != 1 else ''}), "
             f"skipped {len(self.skipped)}, duplicates {len(self.duplicates)}")
        if self.resumed_at:
            s += f", resumed at image {self.resumed_at}"
        return s + ("" if self.complete else " — INTERRUPTED; run the same command again to resume")


class _Shard:
    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.images: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.dense: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.hashes: list[bytes] = []
        self.identity: list[int] = []
        self.identities: list[str] = []
        self.thumbs: list[np.ndarray] = []
        self.paths: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.duplicates: list[tuple[str, str]] = []

    def add(self, crop, lm, scores, digest, ident, name, dense=None) -> None:
        self.images.append(crop)
        self.landmarks.append(lm.astype(np.float32))
        self.dense.append(np.full((DENSE, 2), np.nan, np.float32) if dense is None else dense.astype(np.float32))
        self.scores.append(scores)
        self.hashes.append(digest)
        if ident is None:
            self.identity.append(-1)
        else:
            if ident not in self.identities:
                self.identities.append(ident)
            self.identity.append(self.identities.index(ident))
        self.thumbs.append(thumbnail(crop))
        self.paths.append(name)

    def write(self, root: Path, name: str, size: int, plan_id: str, start: int, end: int) -> dict:
        n = len(self.images)
        tmp = root / "shards" / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        np.save(tmp / "images.npy", np.stack(self.images) if n else np.zeros((0, size, size, 3), np.uint8))
        np.save(tmp / "landmarks.npy", np.stack(self.landmarks) if n else np.zeros((0, 5, 2), np.float32))
        np.save(tmp / "dense.npy", np.stack(self.dense) if n else np.zeros((0, DENSE, 2), np.float32))
        np.save(tmp / "scores.npy", np.stack(self.scores).astype(np.float32) if n
                else np.zeros((0, len(self.columns)), np.float32))
        np.save(tmp / "hashes.npy", np.frombuffer(b"".join(self.hashes), np.uint8).reshape(n, 16))
        np.save(tmp / "identity.npy", np.asarray(self.identity, np.int32).reshape(n))
        np.save(tmp / "thumbs.npy", np.stack(self.thumbs) if n else np.zeros((0, THUMB, THUMB, 3), np.uint8))
        (tmp / "paths.txt").write_text("".join(p.replace("\n", " ") + "\n" for p in self.paths), encoding="utf-8")
        meta = {"count": n, "columns": self.columns, "identities": self.identities, "plan": plan_id,
                "start": start, "end": end, "skipped": self.skipped, "duplicates": self.duplicates}
        (tmp / "shard.json").write_text(json.dumps(meta), encoding="utf-8")
        final = root / "shards" / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return {"name": name, "count": n, "plan": plan_id, "start": start, "end": end}


def _existing_hashes(root: Path, man: dict) -> dict[bytes, str]:
    seen: dict[bytes, str] = {}
    for sh in man["shards"]:
        d = root / "shards" / sh["name"]
        hashes = np.load(d / "hashes.npy", allow_pickle=False)
        paths = (d / "paths.txt").read_text(encoding="utf-8").splitlines()
        for h, p in zip(hashes, paths):
            seen[h.tobytes()] = p
    return seen


def build(
    db_path: str | Path,
    plan: Plan,
    resolution: int = 128,
    assume_aligned: bool = False,
    landmark_model: str = "5",
    upsample: int = 1,
    mode: str = "build",
    shard_size: int | None = None,
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
    detector: FaceDetector | None = None,
    workers: int = 1,
    preparer: Callable[..., Iterator[Prepared]] | None = None,
) -> BuildReport:
    """Create (``mode="build"``) or extend (``mode="add"``) a database from a plan; resumes interrupted runs.

    Faces are detected and aligned once here; images without a face are skipped
    and listed, as are exact duplicates (same decoded pixels) of images already
    in the database. Memory is bounded by one shard (about 64 MiB of crops).
    ``workers`` > 1 detects and aligns in that many processes (0 = every core);
    the database is the same either way. ``preparer`` replaces that pool (same arguments as ``prepared``, rows
    in order): the daemon's Ray version runs it on a cluster.
    """
    from ..bars import bar as progress_bar

    root = Path(db_path)
    if resolution < MIN_RESOLUTION:
        raise InputError(f"Resolution {resolution} is too small.", f"Use at least {MIN_RESOLUTION} px.")
    options = {"resolution": resolution, "aligned": bool(assume_aligned), "model": landmark_model,
               "upsample": upsample}
    pid = plan.plan_id(options)
    if (root / MANIFEST).is_file():
        man = read_manifest(root)
        pending = man.get("pending") or {}
        resuming = pending.get("plan") == pid
        if not resuming and mode == "build" and man["shards"]:
            raise DatabaseError(f"A database already exists at {root}.",
                                "Use `dfi db add` to add images to it, or choose another output folder.")
        if man["resolution"] != resolution:
            raise DatabaseError(f"{root} stores faces at {man['resolution']} px, not {resolution} px.",
                                f"Use --resolution {man['resolution']} or a new database.")
        if pending and not resuming:
            raise DatabaseError(f"An earlier build of {root} was interrupted ({pending.get('description')}).",
                                "Finish it first by re-running that same command.")
    else:
        if mode == "add":
            read_manifest(root)  # raises the right error
        if root.exists() and any(root.iterdir()):
            raise DatabaseError(f"{root} exists and is not empty.", "Choose a new folder for the database.")
        root.mkdir(parents=True, exist_ok=True)
        man = _new_manifest(resolution, "template" if assume_aligned else landmark_model)
    (root / "shards").mkdir(exist_ok=True)
    for junk in (root / "shards").glob(".tmp-*"):
        shutil.rmtree(junk, ignore_errors=True)
    listed = {s["name"] for s in man["shards"]}
    for d in (root / "shards").iterdir():
        if d.is_dir() and d.name not in listed:  # renamed into place but never recorded: redo it
            shutil.rmtree(d, ignore_errors=True)
    start = max([s["end"] for s in man["shards"] if s["plan"] == pid], default=0)
    man["pending"] = {"plan": pid, "total": len(plan), "description": plan.description}
    man["custom"].update(plan.custom)
    man["aliases"] = sorted(set(man.get("aliases", [])) | set(plan.aliases))
    _write_json(root / MANIFEST, man)

    seen = _existing_hashes(root, man)
    det = detector  # a caller's detector: used here, in this process
    per_shard = shard_size or max(16, min(4096, SHARD_BYTES // (resolution * resolution * 3)))
    report = BuildReport(str(root), resumed_at=start, total=len(plan))
    t0 = time.perf_counter()
    shard = _Shard(list(plan.columns))
    shard_start = start

    def flush(end: int) -> None:
        nonlocal shard, shard_start
        if end <= shard_start:
            return
        name = f"{len(man['shards']):06d}"
        entry = shard.write(root, name, resolution, pid, shard_start, end)
        man["shards"].append(entry)
        man["count"] = sum(s["count"] for s in man["shards"])
        man["columns"] = list(dict.fromkeys(man["columns"] + shard.columns))
        man["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_json(root / MANIFEST, man)
        report.added += len(shard.images)
        report.skipped += shard.skipped
        report.duplicates += shard.duplicates
        shard = _Shard(list(plan.columns))
        shard_start = end

    bar = progress_bar(total=len(plan), initial=start, desc="faces", unit="img", disable=not progress)
    workers = workers or default_workers()
    report.workers = 1 if det is not None else workers
    done = start  # plan rows fully processed
    if preparer is not None and det is None:
        results = preparer(plan.files[start:], resolution, assume_aligned, landmark_model, upsample)
    else:
        results = prepared(plan.files[start:], resolution, assume_aligned, landmark_model, upsample,
                           1 if det is not None else workers, det)
    try:
        for i, r in zip(range(start, len(plan)), results):
            if cancel is not None and cancel():
                flush(i)
                raise CancelledError("Database build cancelled.", "Run the same command again to resume.")
            name = plan.names[i]
            if r.digest is not None and r.digest in seen:
                shard.duplicates.append((name, seen[r.digest]))
            elif r.status == "ok":
                shard.add(r.crop, r.landmarks, plan.scores[i], r.digest, plan.identities[i], name,
                          getattr(r, "dense", None))
                seen[r.digest] = name
            else:
                shard.skipped.append((name, r.message))
            bar.update(1)
            done = i + 1
            if len(shard.images) >= per_shard:
                flush(i + 1)
        flush(len(plan))
    except KeyboardInterrupt:
        flush(done)
        raise
    finally:
        results.close()  # stops the workers
        bar.close()
        report.workers = getattr(preparer, "workers", report.workers) if preparer is not None else report.workers
        report.seconds = time.perf_counter() - t0
    man["pending"] = None
    man["sources"].append({"description": plan.description, "images": len(plan), "options": options,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    _write_json(root / MANIFEST, man)
    report.complete = True
    if man["count"] == 0:
        raise DatabaseError(f"No usable face among the {len(plan)} images; the database at {root} is empty.",
                            "Check the images, or use --aligned if they are already aligned face crops.")
    return report


