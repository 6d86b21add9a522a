"""The neighbour database: aligned faces, landmarks and attribute scores as memory-mapped .npy shards.

Layout (documented in docs/database.md)::

    NAME/manifest.json             format, version, resolution, shards, columns, pending build
    NAME/shards/000000/images.npy      uint8   (n, S, S, 3)  aligned faces
                       landmarks.npy   float32 (n, 5, 2)     in crop pixels
                       dense.npy       float32 (n, 68, 2)    dlib's 68 points in crop pixels, NaN unknown
                                                             (version 2 on; shape and tone edits need them)
                       scores.npy      float32 (n, a)        canonical attributes (NaN = unknown)
                       hashes.npy      uint8   (n, 16)       BLAKE2b-128 of the decoded source pixels
                       identity.npy    int32   (n,)          index into shard.json "identities", −1 unknown
                       thumbs.npy      uint8   (n, 16, 16, 3) appearance thumbnails
                       shard.json      count, columns, identities, plan range, skipped, duplicates
                       paths.txt       source path per image

Builds stream through the input one shard at a time (bounded memory), each
shard is written to a temporary folder and renamed into place, and the
manifest is rewritten atomically after each shard, so an interrupted build
resumes at the last finished shard. No pickles anywhere: opening is a JSON
parse and a few ``np.load(mmap_mode="r")`` calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import align as al
from .errors import DatabaseError
from .landmarks import to_uint8_rgb

FORMAT = "gimp-dfi neighbour database"
VERSION = 2  # 2: dense.npy (68 landmarks per face); version 1 databases serve texture-only edits
DENSE = 68
MANIFEST = "manifest.json"
THUMB = 16
MIN_RESOLUTION = 32
SHARD_BYTES = 64 * 2**20
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_SOURCE_PIXELS = 50_000_000


def content_hash(rgb: np.ndarray) -> bytes:
    """BLAKE2b-128 of decoded 8-bit RGB pixels (and the shape): same picture, same hash, whatever the file."""
    a = to_uint8_rgb(rgb)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.digest()


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """16×16 RGB uint8 of an aligned crop: the cheap appearance feature (see docs/database.md)."""
    from PIL import Image

    a = np.clip(np.rint(np.asarray(crop, np.float32)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(a).resize((THUMB, THUMB), Image.BOX))


# ---------------------------------------------------------------------------------------------- plans


@dataclass
class Plan:
    """What to add, in order: one row per source image, scores over ``columns``."""

    files: list[Path]
    names: list[str]  # as recorded (relative to the source folder)
    identities: list[str | None]
    columns: list[str]
    scores: np.ndarray  # (N, len(columns)) float32
    description: str
    custom: dict = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)  # columns repeating another (left out of distances)

    def __len__(self) -> int:
        return len(self.files)

    def plan_id(self, options: dict) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.names, self.identities, self.columns, options], sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.scores).tobytes())
        return h.hexdigest()[:24]


def plan_from_table(images: str | Path, table: str | Path, fmt: str = "auto", definitions=None,
                    missing: str = "skip") -> tuple[Plan, list[str]]:
    """Plan from an image folder and an attribute table; returns (plan, table rows whose file is missing)."""
    from .attributes import load_definitions
    from .tables import read_table

    root = Path(images)
    if not root.is_dir():
        raise InputError(f"No image folder at {root}.", "Pass the folder the table's file names are relative to.")
    t = read_table(table, fmt)
    defs = definitions or load_definitions()
    columns, scores, aliases = defs.canonical_scores(t.format, t.columns, t.scores)
    keep, absent = [], []
    for i, name in enumerate(t.files):
        (keep if (root / name).is_file() else absent).append(i)
    if not keep:
        raise InputError(f"None of the {len(t)} files named in {table} exist under {root}.",
                         "Point --images at the folder that holds them (e.g. the extracted lfw-deepfunneled).")
    if absent and missing == "error":
        raise InputError(f"{len(absent)} files named in {table} are missing under {root}.", "Check the folder.")
    plan = Plan([root / t.files[i] for i in keep], [t.files[i] for i in keep], [t.identities[i] for i in keep],
                columns, scores[keep], f"{t.format} table {Path(table).name} over {root}", aliases=aliases)
    return plan, [t.files[i] for i in absent]


def list_images(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"No image folder at {root}.", "Check the path.")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def plan_from_folders(with_dir: str | Path, without_dir: str | Path, name: str, label: str | None = None) -> Plan:
    """A custom attribute: images in ``with_dir`` have it (+1), those in ``without_dir`` do not (−1)."""
    from .attributes import snake

    key = snake(name)
    if not key:
        raise InputError(f"Attribute name {name!r} is empty after normalising.", "Use letters and digits.")
    pos, neg = list_images(with_dir), list_images(without_dir)
    if not pos or not neg:
        raise InputError(f"The 'with' folder has {len(pos)} images and the 'without' folder {len(neg)}.",
                         "Put example images in both folders.")
    files = pos + neg
    scores = np.array([[1.0]] * len(pos) + [[-1.0]] * len(neg), np.float32)
    names = [str(p) for p in files]
    return Plan(files, names, [None] * len(files), [key], scores,
                f"custom attribute {key}: {with_dir} (with) / {without_dir} (without)",
                {key: {"label": label or key.replace("_", " ").capitalize()}})


def plan_from_folder(folder: str | Path) -> Plan:
    """Images without attributes (usable for inpainting neighbours only)."""
    files = list_images(folder)
    if not files:
        raise InputError(f"No images in {folder}.", "Use a folder of JPEG/PNG images.")
    return Plan(files, [str(p) for p in files], [None] * len(files), [], np.zeros((len(files), 0), np.float32),
                f"images of {folder}")


# ---------------------------------------------------------------------------------------------- manifest


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> dict:
    """The validated manifest of a database folder, or a DatabaseError saying what is wrong."""
    root = Path(path)
    if not root.exists():
        raise DatabaseError(f"No neighbour database at {root}.",
                            "Build one with `dfi db build` or download LFW with `dfi db fetch lfw`.")
    if not root.is_dir():
        raise DatabaseError(f"{root} is a file, not a neighbour database folder.", "Pass the database folder.")
    mf = root / MANIFEST
    if not mf.is_file():
        images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in list(root.iterdir())[:200])
        raise DatabaseError(
            f"{root} is not a gimp-dfi neighbour database (it has no {MANIFEST}).",
            "Build a database from these images with `dfi db build`." if images
            else "Pass the folder made by `dfi db build`.")
    try:
        man = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatabaseError(f"The manifest of {root} is corrupt ({e}).",
                            "Rebuild the database, or restore it from a backup.") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise DatabaseError(f"{root} is not a gimp-dfi neighbour database (foreign {MANIFEST}).",
                            "Pass the folder made by `dfi db build`.")
    ver = man.get("version")
    if not isinstance(ver, int) or ver > VERSION:
        raise DatabaseError(f"{root} has format version {ver}; this gimp-dfi reads up to {VERSION}.",
                            "Upgrade gimp-dfi, or rebuild the database with this version.")
    for key in ("resolution", "shards", "id"):
        if key not in man:
            raise DatabaseError(f"The manifest of {root} lacks {key!r}.", "Rebuild the database.")
    return man


def _new_manifest(resolution: int, landmark_model: str) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"format": FORMAT, "version": VERSION, "id": uuid.uuid4().hex, "resolution": resolution,
            "landmark_model": landmark_model, "dense_landmarks": "dlib-68",
            "template": al.TEMPLATE.tolist(), "thumb": THUMB,
            "shards": [], "count": 0, "columns": [], "custom": {}, "sources": [], "pending": None,
            "created": now, "updated": now}


# ---------------------------------------------------------------------------------------------- open


def _load(d: Path, name: str, mmap: bool) -> np.ndarray:
    try:
        return np.load(d / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DatabaseError(f"Shard {d.name} of {d.parent.parent} lacks {name}.",
                            "The database is damaged: run `dfi db check`, then rebuild it.") from None
    except (ValueError, OSError, EOFError) as e:
        raise DatabaseError(f"Shard {d.name} of {d.parent.parent}: {name} is corrupt ({e}).",
                            "The database is damaged: run `dfi db check`, then rebuild it.") from None


class Database:
    """An opened neighbour database. Small arrays are in memory; images and thumbnails stay memory-mapped."""

    def __init__(self, path: str | Path, allow_empty: bool = False) -> None:
        root = Path(path)
        man = read_manifest(root)
        self.path = root
        self.manifest = man
        self.resolution = int(man["resolution"])
        self.id = man["id"]
        self.custom: dict = man.get("custom") or {}
        self.complete = not man.get("pending")
        self.columns: list[str] = list(man.get("columns", []))
        self.aliases: set[str] = set(man.get("aliases", []))
        col_index = {c: j for j, c in enumerate(self.columns)}
        s = self.resolution
        images, thumbs, lms, dense, scores, hashes, idents = [], [], [], [], [], [], []
        self.identities: list[str] = []
        name_index: dict[str, int] = {}
        self._shard_dirs: list[Path] = []  # shards holding faces (parallel to the image memmaps)
        self._all_dirs: list[Path] = []  # every shard, including ones where every image was skipped
        for entry in man["shards"]:
            d = root / "shards" / entry["name"]
            if not d.is_dir():
                raise DatabaseError(f"Shard {entry['name']} of {root} is missing.",
                                    "The database is damaged: rebuild it, or restore the shards folder.")
            try:
                meta = json.loads((d / "shard.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise DatabaseError(f"Shard {entry['name']} of {root}: shard.json unreadable ({e}).",
                                    "The database is damaged: run `dfi db check`, then rebuild it.") from None
            n = int(meta.get("count", -1))
            if n != entry.get("count"):
                raise DatabaseError(f"Shard {entry['name']} of {root} holds {n} faces, the manifest says "
                                    f"{entry.get('count')}.", "The database is damaged: rebuild it.")
            arrs = {k: _load(d, f"{k}.npy", k in ("images", "thumbs"))
                    for k in ("images", "landmarks", "scores", "hashes", "identity", "thumbs")}
            want = {"images": ((n, s, s, 3), np.uint8), "landmarks": ((n, 5, 2), np.float32),
                    "scores": ((n, len(meta.get("columns", []))), np.float32), "hashes": ((n, 16), np.uint8),
                    "identity": ((n,), np.int32), "thumbs": ((n, THUMB, THUMB, 3), np.uint8)}
            if (d / "dense.npy").is_file():
                arrs["dense"] = _load(d, "dense.npy", False)
                want["dense"] = ((n, DENSE, 2), np.float32)
            else:  # built before version 2: no dense points, shape and tone edits say how to rebuild
                arrs["dense"] = np.full((n, DENSE, 2), np.nan, np.float32)
            for k, (shape, dtype) in want.items():
                if arrs[k].shape != shape or arrs[k].dtype != dtype:
                    raise DatabaseError(
                        f"Shard {entry['name']} of {root}: {k}.npy is {arrs[k].dtype}{arrs[k].shape}, "
                        f"expected {np.dtype(dtype)}{shape}.", "The database is damaged: rebuild it.")
            self._all_dirs.append(d)
            if n == 0:
                continue
            full = np.full((n, len(self.columns)), np.nan, np.float32)
            for j, c in enumerate(meta.get("columns", [])):
                if c not in col_index:
                    raise DatabaseError(f"Shard {entry['name']} has column {c!r} missing from the manifest.",
                                        "The database is damaged: rebuild it.")
                full[:, col_index[c]] = arrs["scores"][:, j]
            remap = np.full(len(meta.get("identities", [])) + 1, -1, np.int32)
            for j, nm in enumerate(meta.get("identities", [])):
                if nm not in name_index:
                    name_index[nm] = len(self.identities)
                    self.identities.append(nm)
                remap[j] = name_index[nm]
            images.append(arrs["images"])
            thumbs.append(arrs["thumbs"])
            lms.append(arrs["landmarks"])
            dense.append(arrs["dense"])
            scores.append(full)
            hashes.append(arrs["hashes"])
            idents.append(remap[arrs["identity"]])  # −1 indexes the trailing −1
            self._shard_dirs.append(d)
        self._images = images
        self._thumbs = thumbs
        self._offsets = np.cumsum([0] + [len(a) for a in images])
        self.count = int(self._offsets[-1])
        if self.count == 0 and not allow_empty:
            raise DatabaseError(f"The neighbour database at {root} is empty.",
                                "Add images with `dfi db add`, or rebuild it from a folder that has faces.")
        self.landmarks = np.concatenate(lms) if lms else np.zeros((0, 5, 2), np.float32)
        self.dense = np.concatenate(dense) if dense else np.zeros((0, DENSE, 2), np.float32)
        self.scores = np.concatenate(scores) if scores else np.zeros((0, len(self.columns)), np.float32)
        self.hashes = np.concatenate(hashes) if hashes else np.zeros((0, 16), np.uint8)
        self.identity = np.concatenate(idents) if idents else np.zeros(0, np.int32)
        self._hash_index: dict[bytes, int] | None = None
        self._thumb_cache: np.ndarray | None = None

    # -- access
    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return s, i - int(self._offsets[s])

    def image(self, i: int) -> np.ndarray:
        """Aligned face i as uint8 (S, S, 3) (a fresh array, not a view of the file)."""
        s, j = self._locate(int(i))
        return np.array(self._images[s][j])

    def images(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Aligned faces as float32 (S, S, 3), streamed (for :func:`~dfi_engine.features.mean_features`)."""
        for i in indices:
            yield self.image(int(i)).astype(np.float32)

    def thumbs(self) -> np.ndarray:
        """All thumbnails (N, 16, 16, 3) uint8, read once."""
        if self._thumb_cache is None:
            self._thumb_cache = np.concatenate([np.asarray(t) for t in self._thumbs]) if self._thumbs \
                else np.zeros((0, THUMB, THUMB, 3), np.uint8)
        return self._thumb_cache

    def find(self, digest: bytes) -> int | None:
        """Index of the image with this content hash, if the database has it."""
        if self._hash_index is None:
            self._hash_index = {h.tobytes(): i for i, h in enumerate(self.hashes)}
        return self._hash_index.get(digest)

    def paths(self) -> list[str]:
        out: list[str] = []
        for d in self._shard_dirs:
            out += (d / "paths.txt").read_text(encoding="utf-8").splitlines()
        return out

    def has_dense(self) -> np.ndarray:
        """Which faces have their 68 points (shape and tone edits use only those)."""
        return np.isfinite(self.dense).all(axis=(1, 2))

    def require_dense(self, indices: Sequence[int], minimum: int = 1) -> np.ndarray:
        """The ``indices`` that have 68 points; a DatabaseError saying how to rebuild when fewer than ``minimum``."""
        idx = np.asarray(indices, np.int64)
        ok = idx[self.has_dense()[idx]] if len(idx) else idx
        if len(ok) < minimum:
            raise DatabaseError(
                f"{len(idx) - len(ok)} of the {len(idx)} neighbour faces in {self.path} have no 68-point landmarks, "
                "which shape and tone edits need (the database predates them).",
                "Rebuild it with `dfi db build` to use shape and tone; texture-only edits work as it is.")
        return ok

    def column(self, name: str) -> np.ndarray:
        """Scores of one canonical attribute (NaN where unknown)."""
        if name not in self.columns:
            raise DatabaseError(f"The database has no {name!r} scores.",
                                f"It has: {', '.join(self.columns) or 'none'}.")
        return self.scores[:, self.columns.index(name)]

    def info(self) -> dict:
        man = self.manifest
        skipped = dups = 0
        for d in self._all_dirs:
            meta = json.loads((d / "shard.json").read_text(encoding="utf-8"))
            skipped += len(meta.get("skipped", []))
            dups += len(meta.get("duplicates", []))
        known = {c: int(np.sum(~np.isnan(self.scores[:, j]))) for j, c in enumerate(self.columns)}
        present = {c: int(np.sum(self.scores[:, j] > 0)) for j, c in enumerate(self.columns)}
        return {"path": str(self.path), "format": man["format"], "version": man["version"], "id": self.id,
                "resolution": self.resolution, "count": self.count, "shards": len(man["shards"]),
                "complete": self.complete, "landmark_model": man.get("landmark_model"),
                "identities": len(self.identities), "columns": self.columns, "known": known, "present": present,
                "custom": self.custom, "skipped": skipped, "duplicates": dups, "sources": man.get("sources", []),
                "created": man.get("created"), "updated": man.get("updated")}


def check(path: str | Path) -> dict:
    """Read every byte of a database and report problems (an empty list when healthy)."""
    problems: list[str] = []
    try:
        db = Database(path, allow_empty=True)
    except DatabaseError as e:
        return {"ok": False, "problems": [str(e)], "count": 0}
    if db.count == 0:
        problems.append("the database is empty")
    for k, im in enumerate(db._images):
        try:
            for j in range(0, len(im), 256):
                np.asarray(im[j:j + 256]).sum()
        except (OSError, ValueError) as e:
            problems.append(f"shard {db._shard_dirs[k].name}: images unreadable ({e})")
    if not np.isfinite(db.landmarks).all():
        problems.append(f"{int((~np.isfinite(db.landmarks)).any(axis=(1, 2)).sum())} faces have non-finite landmarks")
    if np.isinf(db.scores).any():
        problems.append("some attribute scores are infinite")
    uniq = np.unique(db.hashes, axis=0) if db.count else db.hashes
    if len(uniq) != db.count:
        problems.append(f"{db.count - len(uniq)} duplicate images (same content hash)")
    if not db.complete:
        problems.append("a build was interrupted; re-run it to finish")
    paths = db.paths()
    if len(paths) != db.count:
        problems.append(f"paths.txt lists {len(paths)} sources for {db.count} faces")
    return {"ok": not problems, "problems": problems, "count": db.count}
