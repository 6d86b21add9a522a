"""Where the daemon gets neighbour images from: the seam between the daemon and a face database.

A *neighbour source* answers three questions for a request:

* ``attributes()``: which edits it can define (name, label, default strength, scaling);
* ``neighbours(attribute, image_rgb, k)``: K source images (without the attribute) and K target
  images (with it), aligned to the photo's working size;
* ``inpaint_neighbours(image_rgb, k)``: K images to fill a masked region from.

Only the labelled **synthetic smoke source** exists today (cartoon faces from
``dfi_engine.synthetic`` with a drawn beard). The real face database
(``dfi_engine.faces``) plugs in by adding one class that implements
:class:`NeighbourSource` and one entry in :func:`open_source` — see ``SEAM`` below.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol, TypedDict

import numpy as np


class Attribute(TypedDict):
    name: str
    label: str
    default_strength: float
    scaling: str  # "none" | "beta": how the engine scales the attribute vector


class NeighbourSource(Protocol):
    """What the daemon needs from a neighbour database."""

    name: str
    label: str  # shown in status and results; says "SYNTHETIC" for the smoke source
    synthetic: bool
    inpaint_strength: float
    inpaint_scaling: str

    def attributes(self) -> list[Attribute]: ...

    def neighbours(self, attribute: str, image_rgb: np.ndarray, k: int
                   ) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]: ...

    def inpaint_neighbours(self, image_rgb: np.ndarray, k: int) -> Sequence[np.ndarray]: ...


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
    inpaint_strength = 1.0
    inpaint_scaling = "none"

    _ATTRIBUTES: tuple[Attribute, ...] = (
        {"name": "facehair", "label": "Add facial hair (synthetic)", "default_strength": 1.0, "scaling": "none"},
    )

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attributes(self) -> list[Attribute]:
        return [dict(a) for a in self._ATTRIBUTES]  # type: ignore[misc]

    def _render(self, tag: str, beard: bool, shape: tuple[int, int], k: int) -> list[np.ndarray]:
        """K faces at exactly ``shape`` (H, W); deterministic per (seed, tag, shape)."""
        from PIL import Image

        from dfi_engine.synthetic import face

        h, w = shape
        side = max(h, w)
        rng = np.random.default_rng([self.seed, zlib.crc32(tag.encode()), h, w])
        out = []
        for _ in range(k):
            im = face(rng, beard, side)
            if (h, w) != (side, side):
                im = np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
            out.append(im)
        return out

    def neighbours(self, attribute: str, image_rgb: np.ndarray, k: int
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if attribute not in {a["name"] for a in self._ATTRIBUTES}:
            raise UnknownAttribute(attribute)
        shape = image_rgb.shape[:2]
        return self._render("source", False, shape, k), self._render("target", True, shape, k)

    def inpaint_neighbours(self, image_rgb: np.ndarray, k: int) -> list[np.ndarray]:
        """Half plain faces, half bearded: the fill is learnt from faces, whatever they wear."""
        shape = image_rgb.shape[:2]
        return [*self._render("inpaint-a", False, shape, (k + 1) // 2),
                *self._render("inpaint-b", True, shape, k // 2)]


class SourceUnavailable(Exception):
    """The requested neighbour source cannot be opened; the message says what to do."""


def open_source(spec: str) -> NeighbourSource | None:
    """``"synthetic"`` -> the smoke source; ``"none"`` -> no source (edits answer ``no_database``).

    SEAM: the real face database goes here, e.g. ``spec == "faces"`` or a path to a
    database folder -> ``FaceDatabaseSource(dfi_engine.faces.open(spec))``.
    """
    if spec == "synthetic" or spec.startswith("synthetic:"):
        seed = spec.partition(":")[2]
        return SyntheticSource(int(seed) if seed.isdigit() else 0)
    if spec in ("none", ""):
        return None
    raise SourceUnavailable(
        f"Neighbour database {spec!r} cannot be opened: the face-database adapter is not wired into the "
        "daemon yet.",
    )


def real_database_status() -> str | None:
    """None when a real face database is usable, else a sentence saying what is missing."""
    return ("no face database: the real neighbour database (dfi_engine.faces) is not connected to the daemon "
            "yet, so attributes cannot be computed from real faces")
