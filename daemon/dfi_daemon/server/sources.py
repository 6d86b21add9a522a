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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np

from .jobs import Settings

if TYPE_CHECKING:  # the engine loads torch: imported where a job runs, not where this module is read
    from dfi_engine.edit import EditOptions, EditResult
    from dfi_engine.faces.landmarks import FaceDetector
    from dfi_engine.faces.pipeline import FaceEditResult
    from dfi_engine.faces.session import EditSession
    from dfi_engine.progress import CancelFn, ProgressFn
    from dfi_engine.vgg import VGGFeatures

    Outcome = EditResult | FaceEditResult


# (message, hint) of a live preview asked of a source that cannot open sessions
LIVE_NEEDS_DATABASE = ("Live previews need a face database; the synthetic smoke-test source has none.",
                       "Start the daemon with --database PATH (a face database from 'dfi db build' or 'dfi db fetch "
                       "lfw'), or use edit.")


class Attribute(TypedDict):
    name: str
    label: str
    default_strength: float
    scaling: str  # "none" | "beta": how the engine scales the attribute vector
    tone_form: str  # "ratio" (multiplied in) | "alpha" (a cover blended towards its own colour) | "additive"


@dataclass(frozen=True)
class SourceJob:
    """One edit or inpaint as a neighbour source runs it: the job's settings (attribute, strengths, k, align,
    components, ...), the photo and mask as arrays, the engine's options, and the progress/cancel contract of
    :mod:`dfi_engine.progress`."""

    settings: Settings
    net: VGGFeatures
    image: np.ndarray  # (H, W, C) uint8, the request's bytes
    mask: np.ndarray | None  # (H, W) uint8, 255 = edit
    options: EditOptions
    progress: ProgressFn
    cancel: CancelFn


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

    def edit(self, job: SourceJob) -> Outcome:
        """One result per strength of ``job.settings.attribute``; raises UnknownAttribute if not defined here."""
        ...

    def inpaint(self, job: SourceJob) -> Outcome:
        """The masked region of ``job.image`` filled from neighbours."""
        ...

    def open_session(self, job: SourceJob) -> EditSession:
        """A live-preview session of ``job.settings.attribute`` on ``job.image`` (set up once, then any strength)."""
        ...


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
        {"name": "facehair", "label": "Add facial hair (synthetic)", "default_strength": 1.0, "scaling": "none",
         "tone_form": "ratio"},  # texture only: the synthetic faces have no landmarks
    )

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attributes(self) -> list[Attribute]:
        return [dict(a) for a in self._ATTRIBUTES]  # type: ignore[misc]

    def work(self, height: int, width: int, align: bool, work_size: int, iterations: int) -> tuple[int, int]:
        return iterations * height * width, max(height, width)  # rendered and inverted at the photo's own size

    def _render(self, tag: str, beard: bool, shape: tuple[int, int], k: int,
                cancel: CancelFn | None = None) -> Rendered:
        """K faces at exactly ``shape`` (H, W), rendered one at a time as they are read (bounded memory,
        a cancel check per face); deterministic per (seed, tag, shape), so it can be read twice."""
        return Rendered(self.seed, tag, beard, shape, k, cancel)

    def edit(self, job: SourceJob) -> Outcome:
        import dfi_engine as dfi
        from dfi_engine.errors import InputError

        s = job.settings
        if s.attribute not in {a["name"] for a in self._ATTRIBUTES}:
            raise UnknownAttribute(s.attribute)
        if s.components and set(s.components) != {"texture"}:
            raise InputError("The synthetic smoke-test faces have no landmarks, so no shape or tone edits.",
                             "Use components=['texture'], or a face database (--database PATH).")
        shape = job.image.shape[:2]
        source = self._render("source", False, shape, s.k, job.cancel)
        target = self._render("target", True, shape, s.k, job.cancel)
        w = dfi.attribute_vector(job.net, source, target, batch_size=job.options.batch_size, shape=shape,
                                 progress=job.progress, totals=(s.k, s.k))
        return dfi.apply_vector(job.net, job.image, w, s.strengths, mask=job.mask, options=job.options,
                                progress=job.progress, cancel=job.cancel)

    def open_session(self, job: SourceJob) -> EditSession:
        """Live previews are built on a face database's landmarks and prototypes; cartoon faces have neither."""
        from dfi_engine.errors import InputError

        raise InputError(*LIVE_NEEDS_DATABASE)

    def inpaint(self, job: SourceJob) -> Outcome:
        """Half plain faces, half bearded: the fill is learnt from faces, whatever they wear."""
        import dataclasses

        import dfi_engine as dfi

        s, shape = job.settings, job.image.shape[:2]
        nb = Chain(self._render("inpaint-a", False, shape, (s.k + 1) // 2, job.cancel),
                   self._render("inpaint-b", True, shape, s.k // 2, job.cancel))
        options = dataclasses.replace(job.options, scaling=job.options.scaling or self.inpaint_scaling)
        return dfi.inpaint(job.net, job.image, job.mask, nb,
                           strength=self.inpaint_strength if s.strength is None else s.strength, options=options,
                           progress=job.progress, cancel=job.cancel)


class Rendered:
    """Synthetic faces made on the fly each time they are iterated (see ``SyntheticSource._render``)."""

    def __init__(self, seed: int, tag: str, beard: bool, shape: tuple[int, int], k: int,
                 cancel: CancelFn | None) -> None:
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
        self._detector: FaceDetector | None = None
        self._dense: bool | None = None  # whether any face has its 68 points (shape and tone possible)
        self._lock = threading.Lock()

    @property
    def detector(self) -> FaceDetector:
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
                 "tone_form": a.tone_form,
                 "components": a.weights() if dense else {"shape": 0.0, "tone": 0.0, "texture": a.texture}}
                for a in self.defs.usable(self.db) if a.kind != "inpaint"]

    def edit(self, job: SourceJob) -> Outcome:
        from dfi_engine.faces import edit_attribute

        s = job.settings
        if s.attribute not in {a["name"] for a in self.attributes()}:
            raise UnknownAttribute(s.attribute)
        return edit_attribute(job.net, job.image, self.db, self.defs.get(s.attribute, self.db), s.strengths,
                              mask=job.mask, options=job.options, detector=self.detector if s.align else None,
                              whole_image=not s.align, k=s.k, cache=self.cache, progress=job.progress,
                              cancel=job.cancel, components=s.components)

    def open_session(self, job: SourceJob) -> EditSession:
        """The photo set up once for ``job.settings.attribute`` (aligned, neighbours, prototypes, attribute
        vector), kept by the daemon while a slider moves; progress and cancel apply while it opens."""
        from dfi_engine.faces.session import EditSession

        s = job.settings
        if s.attribute not in {a["name"] for a in self.attributes()}:
            raise UnknownAttribute(s.attribute)
        return EditSession(job.net, job.image, self.db, self.defs.get(s.attribute, self.db), mask=job.mask,
                           options=job.options, detector=self.detector if s.align else None,
                           whole_image=not s.align, k=s.k, cache=self.cache, components=s.components,
                           progress=job.progress, cancel=job.cancel)

    def inpaint(self, job: SourceJob) -> Outcome:
        from dfi_engine.faces import inpaint_face

        s = job.settings
        fill = next((a for a in self.defs.usable(self.db) if a.kind == "inpaint"), None)
        strength = s.strength if s.strength is not None else (fill.strength if fill else None)
        return inpaint_face(job.net, job.image, self.db, job.mask, strength=strength, options=job.options,
                            detector=self.detector if s.align else None, whole_image=not s.align, k=s.k,
                            cache=self.cache, progress=job.progress, cancel=job.cancel)


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
