"""Where the daemon gets neighbours from, and how an edit runs against them.

A *neighbour source* knows which edits it can define and runs an edit or an
inpainting on the resident network:

* :class:`FaceDatabaseSource` — a face database built with ``dfi db``
  (:mod:`dfi_engine.faces`): the photo's face is detected and aligned to the
  database's frame, neighbours are chosen by attribute, mean features are
  cached between requests, and the change is warped back into the photo.
* :class:`SyntheticSource` — the labelled offline smoke source: cartoon faces
  from ``dfi_engine.synthetic`` rendered at the request's size, no alignment.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict

import numpy as np

ProgressFn = Callable[..., None]  # the engine's: (stage, done, total, **extra)


class Attribute(TypedDict):
    name: str
    label: str
    default_strength: float
    scaling: str  # "none" | "beta": how the engine scales the attribute vector


class NeighbourSource(Protocol):
    """What the daemon needs from a neighbour source."""

    name: str
    label: str  # shown in status and results; says "SYNTHETIC" for the smoke source
    synthetic: bool
    can_align: bool
    resolution: int  # side of the stored faces (0: no aligned faces)
    default_k: int

    def attributes(self) -> list[Attribute]: ...

    def work(self, height: int, width: int, align: bool, work_size: int, iterations: int) -> tuple[int, int]:
        """(pixel-iterations, working side) a job (edit or inpaint) on a photo of this size will take
        (what its time scales with)."""
        ...

    def edit(self, net: Any, image: np.ndarray, mask: np.ndarray | None, attribute: str,
             strengths: Sequence[float], options: Any, align: bool, k: int,
             progress: ProgressFn, cancel: Callable[[], bool], components: Sequence[str] | None = None) -> Any: ...

    def inpaint(self, net: Any, image: np.ndarray, mask: np.ndarray, strength: float | None, options: Any,
                align: bool, k: int, progress: ProgressFn, cancel: Callable[[], bool]) -> Any: ...


class UnknownAttribute(KeyError):
    """The source does not define the requested attribute."""


class SyntheticSource:
    """Offline smoke source: synthetic cartoon faces rendered at the request's size.

    Not a real face database: it exists so the whole daemon path runs on a
    fresh machine with no downloads. "facehair" = the lower face drawn dark.
    Defaults suit seeded random weights (scaling "none", strength ~1).
    """

    name = "synthetic"
    label = "SYNTHETIC smoke-test neighbours (cartoon faces, not a face database)"
    synthetic = True
    can_align = False
    resolution = 0
    default_k = 16
    inpaint_strength = 1.0
    inpaint_scaling = "none"

    _ATTRIBUTES: tuple[Attribute, ...] = (
        {"name": "facehair", "label": "Add facial hair (synthetic)", "default_strength": 1.0, "scaling": "none"},
    )

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attributes(self) -> list[Attribute]:
        return [dict(a) for a in self._ATTRIBUTES]  # type: ignore[misc]

    def work(self, height: int, width: int, align: bool, work_size: int, iterations: int) -> tuple[int, int]:
        return iterations * height * width, max(height, width)  # rendered and inverted at the photo's own size

    def _render(self, tag: str, beard: bool, shape: tuple[int, int], k: int,
                cancel: Callable[[], bool] | None = None) -> Rendered:
        """K faces at exactly ``shape`` (H, W), rendered one at a time as they are read (bounded memory,
        a cancel check per face); deterministic per (seed, tag, shape), so it can be read twice."""
        return Rendered(self.seed, tag, beard, shape, k, cancel)

    def edit(self, net, image, mask, attribute, strengths, options, align, k, progress, cancel, components=None):
        import dfi_engine as dfi
        from dfi_engine.errors import InputError

        if attribute not in {a["name"] for a in self._ATTRIBUTES}:
            raise UnknownAttribute(attribute)
        if components and set(components) != {"texture"}:
            raise InputError("The synthetic smoke-test faces have no landmarks, so no shape or tone edits.",
                             "Use components=['texture'], or a face database (--database PATH).")
        shape = image.shape[:2]
        source, target = self._render("source", False, shape, k, cancel), self._render("target", True, shape, k,
                                                                                       cancel)
        w = dfi.attribute_vector(net, source, target, options.batch_size, shape, progress, (k, k))
        return dfi.apply_vector(net, image, w, strengths, mask, options, progress, cancel)

    def inpaint(self, net, image, mask, strength, options, align, k, progress, cancel):
        """Half plain faces, half bearded: the fill is learnt from faces, whatever they wear."""
        import dataclasses

        import dfi_engine as dfi

        shape = image.shape[:2]
        nb = Chain(self._render("inpaint-a", False, shape, (k + 1) // 2, cancel),
                   self._render("inpaint-b", True, shape, k // 2, cancel))
        options = dataclasses.replace(options, scaling=options.scaling or self.inpaint_scaling)
        return dfi.inpaint(net, image, mask, nb, self.inpaint_strength if strength is None else strength,
                           options, progress, cancel)


class Rendered:
    """Synthetic faces made on the fly each time they are iterated (see ``SyntheticSource._render``)."""

    def __init__(self, seed: int, tag: str, beard: bool, shape: tuple[int, int], k: int,
                 cancel: Callable[[], bool] | None) -> None:
        self.seed, self.tag, self.beard, self.shape, self.k, self.cancel = seed, tag, beard, shape, k, cancel

    def __len__(self) -> int:
        return self.k

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import Image

        from dfi_engine.errors import CancelledError
        from dfi_engine.synthetic import face

        h, w = self.shape
        side = max(h, w)
        rng = np.random.default_rng([self.seed, zlib.crc32(self.tag.encode()), h, w])
        for _ in range(self.k):
            if self.cancel is not None and self.cancel():
                raise CancelledError("The job was cancelled.")
            im = face(rng, self.beard, side)
            if (h, w) != (side, side):
                im = np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
            yield im


class Chain:
    """Several re-iterable sets read as one, any number of times."""

    def __init__(self, *parts: Rendered) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.parts:
            yield from p


FACE_SHARE = 0.8


class FaceDatabaseSource:
    """A face database (``dfi db build`` / ``dfi db fetch``) with alignment and a feature cache."""

    synthetic = False
    can_align = True
    default_k = 100

    def __init__(self, path: str | Path, definitions: Sequence[Path] = (), cache_mb: int = 512) -> None:
        from dfi_engine.faces import Database, FeatureCache, load_definitions

        self.db = Database(path)
        self.defs = load_definitions([p for p in definitions if Path(p).is_file()])
        self.cache = FeatureCache(cache_mb * 2**20)
        self.name = str(path)
        self.label = f"face database {path} ({self.db.count} faces at {self.db.resolution} px)"
        self.resolution = self.db.resolution
        self._detector = None
        self._dense: bool | None = None  # whether any face has its 68 points (shape and tone possible)
        self._lock = threading.Lock()

    @property
    def detector(self):
        with self._lock:  # dlib's models load once, on first use
            if self._detector is None:
                from dfi_engine.faces import FaceDetector

                self._detector = FaceDetector()
            return self._detector

    def work(self, height: int, width: int, align: bool, work_size: int, iterations: int) -> tuple[int, int]:
        """Before the face is found: a selection sent with its context is mostly face (FACE_SHARE of its
        shorter side), so that is the working side, within [the database's resolution, ``work_size``]
        (for Fill selection as for an edit)."""
        from dfi_engine.faces.align import WORK_MULTIPLE
        from dfi_engine.faces.coarse_to_fine import pixel_iterations

        res, guess = self.db.resolution, int(FACE_SHARE * min(height, width)) // WORK_MULTIPLE * WORK_MULTIPLE
        side = res if work_size <= res else max(res, min(work_size, guess))
        return pixel_iterations(iterations, res, side), side

    def attributes(self) -> list[Attribute]:
        """What each attribute is, with its mix of components (texture only on a database without landmarks)."""
        if self._dense is None:
            self._dense = bool(self.db.has_dense().any())
        dense = self._dense
        return [{"name": a.name, "label": a.label, "default_strength": a.strength, "scaling": a.scaling,
                 "components": a.weights() if dense else {"shape": 0.0, "tone": 0.0, "texture": a.texture}}
                for a in self.defs.usable(self.db) if a.kind != "inpaint"]

    def edit(self, net, image, mask, attribute, strengths, options, align, k, progress, cancel, components=None):
        from dfi_engine.faces import edit_attribute

        if attribute not in {a["name"] for a in self.attributes()}:
            raise UnknownAttribute(attribute)
        return edit_attribute(net, image, self.db, self.defs.get(attribute, self.db), strengths, mask, options,
                              self.detector if align else None, not align, k, cache=self.cache,
                              progress=progress, cancel=cancel, components=components)

    def inpaint(self, net, image, mask, strength, options, align, k, progress, cancel):
        from dfi_engine.faces import inpaint_face

        inpaint = next((a for a in self.defs.usable(self.db) if a.kind == "inpaint"), None)
        return inpaint_face(net, image, self.db, mask, strength if strength is not None else
                            (inpaint.strength if inpaint else None), options, self.detector if align else None,
                            not align, k, cache=self.cache, progress=progress, cancel=cancel)


class SourceUnavailable(Exception):
    """The requested neighbour source cannot be opened; the message says what to do."""


def open_source(spec: str, definitions: Sequence[Path] = ()) -> NeighbourSource | None:
    """``synthetic[:SEED]`` -> smoke source; ``none`` -> no source; ``auto`` -> the fetched LFW database if
    present; anything else is the path of a face database."""
    from ..paths import default_database

    if spec == "synthetic" or spec.startswith("synthetic:"):
        seed = spec.partition(":")[2]
        return SyntheticSource(int(seed) if seed.isdigit() else 0)
    if spec in ("none", ""):
        return None
    if spec == "auto":
        spec = str(default_database())
        if not Path(spec).is_dir():
            return None
    from dfi_engine.errors import DFIError

    try:
        return FaceDatabaseSource(Path(spec).expanduser(), definitions)
    except DFIError as e:
        raise SourceUnavailable(f"Neighbour database {spec!r} cannot be opened: {e}") from None


def real_database_status(spec: str = "auto") -> str | None:
    """None when ``spec`` names a usable face database, else a sentence saying what is missing."""
    from ..paths import default_database

    path = default_database() if spec == "auto" else Path(spec).expanduser()
    if spec not in ("none", "") and not spec.startswith("synthetic") and (path / "manifest.json").is_file():
        return None
    return (f"face database: none at {path} (run 'dfi db fetch lfw' with internet access, or build one with "
            "'dfi db build', then pass --database PATH)")
