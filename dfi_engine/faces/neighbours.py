"""Choosing neighbours: K nearest in attribute space among admissible database images.

Rule (as in DFI): the source set is the K images nearest to the input in
attribute space that satisfy the definition's source constraints, the
target set likewise with the target constraints; both are restricted to
images whose sign on each ``match`` attribute (gender; smile state for
non-smile edits) equals the input's; the input itself (same content hash)
and other photos of the same person (when the database knows identities) are
excluded. Optionally the 4K nearest are re-ranked by how well their aligned
landmarks fit the input's, keeping the best K. Inpainting takes the K
nearest in appearance (thumbnails) instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..features import Features, mean_features
from ..progress import ProgressFn, report
from .attributes import AttributeDef
from .cache import FeatureCache, set_key
from .database import Database, content_hash, thumbnail
from .errors import DatabaseError, TooFewNeighboursError

SCORE_CLIP = 3.0
ESTIMATE_K = 10
NEAR_DUPLICATE = 2.0  # mean absolute thumbnail difference (0..255) below which two faces count as the same photo


@dataclass
class Selection:
    attribute: str
    source: np.ndarray
    target: np.ndarray
    counts: dict = field(default_factory=dict)
    matched: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"attribute": self.attribute, "source": len(self.source), "target": len(self.target),
                "counts": self.counts, "matched": self.matched}


def _describe(constraints: Mapping[str, bool]) -> str:
    return ", ".join(k if v else f"not {k}" for k, v in constraints.items())


def admissible(db: Database, constraints: Mapping[str, bool]) -> np.ndarray:
    """Boolean mask of images satisfying every constraint (unknown scores never qualify)."""
    ok = np.ones(db.count, bool)
    for name, want in constraints.items():
        col = db.column(name)
        ok &= (col > 0) if want else (col < 0)
    return ok


def attribute_distance(db: Database, scores: np.ndarray) -> np.ndarray:
    """RMS difference over attributes known for both (clipped to ±3; aliases left out); unknown ones sort last."""
    use = [j for j, c in enumerate(db.columns) if c not in db.aliases]
    x = np.clip(np.asarray(scores, np.float32)[use], -SCORE_CLIP, SCORE_CLIP)
    s = np.clip(db.scores[:, use], -SCORE_CLIP, SCORE_CLIP)
    diff = (s - x) ** 2
    known = ~np.isnan(diff)
    n = known.sum(1)
    d = np.sqrt(np.where(known, diff, 0.0).sum(1) / np.maximum(n, 1))
    return np.where(n > 0, d, np.inf)


CHUNK = 8192  # thumbnails converted to float per step: bounded memory on CelebA-sized databases


def _standardise(a: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float32)
    a -= a.mean(1, keepdims=True)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)


def appearance_distance(db: Database, thumb: np.ndarray) -> np.ndarray:
    """Distance between standardised thumbnails (mean removed, unit norm), per database image."""
    t = _standardise(np.asarray(thumb)[None])
    out = np.empty(db.count, np.float32)
    th = db.thumbs()
    for j in range(0, db.count, CHUNK):
        out[j:j + CHUNK] = np.linalg.norm(_standardise(th[j:j + CHUNK]) - t, axis=1)
    return out


def near_duplicates(db: Database, thumb: np.ndarray) -> np.ndarray:
    """Database faces whose thumbnail is within 2 grey levels (mean absolute difference) of ``thumb``."""
    t = np.asarray(thumb, np.float32)[None]
    out = np.empty(db.count, bool)
    th = db.thumbs()
    for j in range(0, db.count, CHUNK):
        out[j:j + CHUNK] = np.abs(th[j:j + CHUNK].astype(np.float32) - t).mean(axis=(1, 2, 3)) < NEAR_DUPLICATE
    return out


def input_scores(db: Database, photo: np.ndarray, aligned, given: Mapping[str, float] | None = None
                 ) -> tuple[np.ndarray, dict, np.ndarray]:
    """The input's attribute scores over ``db.columns`` and where they came from.

    From the database when the photo is in it (same decoded pixels); otherwise
    estimated as the mean (NaN-aware) scores of the 10 database faces whose
    standardised 16×16 thumbnails are nearest to the photo's aligned crop: a
    rough guess, good for gender and smile on a large database, which is all
    matching needs. ``given`` overrides single attributes (e.g. ``{"male": 1}``).
    """
    how: dict = {}
    i = db.find(content_hash(photo))
    thumb = thumbnail(aligned.crop)
    if i is not None:
        x = db.scores[i].copy()
        how.update(source="database", index=int(i),
                   identity=db.identities[db.identity[i]] if db.identity[i] >= 0 else None)
    else:
        d = appearance_distance(db, thumb)
        k = min(ESTIMATE_K, db.count)
        near = np.argsort(d, kind="stable")[:k]
        with warnings.catch_warnings():  # all-NaN columns stay NaN (unknown)
            warnings.simplefilter("ignore", RuntimeWarning)
            x = np.nanmean(db.scores[near], axis=0) if len(db.columns) else np.zeros(0, np.float32)
        how.update(source="estimated", neighbours=[int(j) for j in near])
    for name, v in (given or {}).items():
        if name not in db.columns:
            raise DatabaseError(f"Cannot set {name!r}: the database has no such attribute.",
                                f"It has: {', '.join(db.columns)}.")
        x[db.columns.index(name)] = float(v)
        how.setdefault("given", {})[name] = float(v)
    return x.astype(np.float32), how, thumb


def select(db: Database, attr: AttributeDef, scores: np.ndarray, k: int = 100, minimum: int = 10,
           exclude: int | None = None, identity: str | None = None, input_landmarks: np.ndarray | None = None,
           thumb: np.ndarray | None = None, rerank_pool: int = 4) -> Selection:
    """Source and target neighbour sets for an edit (see the module docstring for the rule)."""
    if k < 1 or minimum < 1:
        raise ValueError("k and minimum must be positive")
    missing = sorted(n for n in attr.needs() if n not in db.columns)
    if missing:
        raise DatabaseError(
            f"The database has no scores for {', '.join(missing)}, needed by {attr.name!r}.",
            f"Use a database with these attributes (LFW or CelebA), or define {attr.name!r} by two folders "
            "(`dfi db build --with DIR --without DIR`).")
    allowed = np.ones(db.count, bool)
    counts: dict = {"database": db.count}
    if exclude is not None:
        allowed[exclude] = False
        counts["excluded_self"] = 1
        if identity is None and db.identity[exclude] >= 0:
            identity = db.identities[db.identity[exclude]]
    if identity is not None and identity in db.identities:
        same = db.identity == db.identities.index(identity)
        counts["excluded_same_person"] = int((same & allowed).sum())
        allowed &= ~same
    if thumb is not None:
        dup = near_duplicates(db, thumb) & allowed
        counts["excluded_near_duplicates"] = int(dup.sum())
        allowed &= ~dup
    matched: dict = {}
    for name in attr.match:
        if name not in db.columns:
            matched[name] = "not in database"
            continue
        v = float(scores[db.columns.index(name)])
        if np.isnan(v) or v == 0.0:
            matched[name] = "unknown"
            continue
        col = db.column(name)
        allowed &= (col > 0) if v > 0 else (col < 0)
        matched[name] = bool(v > 0)
    src_ok = admissible(db, attr.source) & allowed
    tgt_ok = admissible(db, attr.target) & allowed & ~src_ok
    counts.update(source_admissible=int(src_ok.sum()), target_admissible=int(tgt_ok.sum()))
    if src_ok.sum() < minimum or tgt_ok.sum() < minimum:
        m = ", ".join(f"{n}={v}" for n, v in matched.items())
        lacking = []
        if src_ok.sum() < minimum:
            lacking.append(f"without it ({_describe(attr.source)})")
        if tgt_ok.sum() < minimum:
            lacking.append(f"with it ({_describe(attr.target)})")
        raise TooFewNeighboursError(
            f"Too few neighbours for {attr.name!r}: {int(src_ok.sum())} source images ({_describe(attr.source)}) "
            f"and {int(tgt_ok.sum())} target images ({_describe(attr.target)}) qualify among {db.count} "
            f"(matching the photo on: {m or 'nothing'}); at least {minimum} of each are needed.",
            f"Add more photos {' and '.join(lacking)} of the same gender with `dfi db add`, "
            "use a larger database (`dfi db fetch lfw`), or lower the minimum.")
    dist = attribute_distance(db, scores)

    def nearest(ok: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(ok)
        order = idx[np.argsort(dist[idx], kind="stable")]
        if input_landmarks is None:
            return order[:k]
        pool = order[:rerank_pool * k]
        fit = np.linalg.norm(db.landmarks[pool] - np.asarray(input_landmarks, np.float32)[None], axis=2).mean(1)
        return pool[np.argsort(fit, kind="stable")[:k]]

    return Selection(attr.name, nearest(src_ok), nearest(tgt_ok), counts, matched)


def select_appearance(db: Database, thumb: np.ndarray, k: int = 100, minimum: int = 10,
                      exclude: int | None = None) -> np.ndarray:
    """K nearest faces in appearance (for inpainting), excluding the input and near-duplicates of it."""
    d = appearance_distance(db, thumb)
    ok = ~near_duplicates(db, thumb)
    if exclude is not None:
        ok[exclude] = False
    idx = np.flatnonzero(ok)
    if len(idx) < minimum:
        raise TooFewNeighboursError(f"Only {len(idx)} usable faces in the database; at least {minimum} are needed.",
                                    "Add images with `dfi db add`, or use a larger database.")
    return idx[np.argsort(d[idx], kind="stable")[:k]]


def resampled(images: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Database crops at another side (bicubic): the same canonical frame, so no warp is needed."""
    from PIL import Image

    for im in images:
        a = np.clip(np.asarray(im, np.float32), 0, 255).round().astype(np.uint8)
        yield np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC), np.float32)


def mean_cached(net, db: Database, indices: np.ndarray, batch_size: int, cache: FeatureCache | None,
                progress: ProgressFn | None, stage: str, transform=None, extra: bytes = b"",
                size: int | None = None, before=None) -> Features:
    """Mean φ of database faces ``indices`` at ``size`` (default: as stored), optionally changed by
    ``before(image, index)`` as stored and by ``transform(image)`` after resampling, through the cache when given
    (``extra`` names the changes in the cache key)."""
    size = size or db.resolution
    key = set_key(db.id, db.count, indices, size, net.label, net.layers, extra)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            report(progress, stage + " (cached)", len(indices), len(indices))
            return hit
    images = db.images(indices)
    if before is not None:
        images = (before(im, i) for im, i in zip(images, indices))
    if size != db.resolution:
        images = resampled(images, size)
    if transform is not None:
        images = (transform(im) for im in images)
    mean, _ = mean_features(net, images, batch_size, (size, size), progress, stage, len(indices))
    if cache is not None:
        cache.put(key, mean)
    return mean


def attribute_vector_cached(net, db: Database, sel: Selection, batch_size: int = 8,
                            cache: FeatureCache | None = None, progress: ProgressFn | None = None,
                            size: int | None = None, source_change=None, change_key: bytes = b"") -> Features:
    """w = mean φ(target) − mean φ(source) at ``size``, each mean cached per neighbour set.

    ``source_change(image, index)`` first moves each source face (the shape and tone prototype: w is then the
    texture those do not explain); ``change_key`` names it for the cache."""
    mt = mean_cached(net, db, sel.target, batch_size, cache, progress, "target features", size=size)
    ms = mean_cached(net, db, sel.source, batch_size, cache, progress, "source features", size=size,
                     extra=change_key, before=source_change)
    return [t - s for t, s in zip(mt, ms)]
