"""Face detection and landmarks with dlib, using the models shipped by ``face_recognition_models``.

The models package is located with :func:`importlib.util.find_spec` and never
imported: its ``__init__`` imports ``pkg_resources``, which modern
environments no longer have. The 5-point predictor is the default because it
carries no licence restriction; the 68-point one was trained on iBUG 300-W,
which forbids commercial use, so it is opt-in.

Every landmark set is reduced to the same five points (the 5-point model's
own order) so alignment works the same with either model. Shape and tone
edits need the mouth, brows and jaw too: :meth:`FaceDetector.dense` gives the
68 points for a face found with either model (the 68-point predictor is
loaded on first use, so a user who never asks for shape or tone never runs it).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FacesUnavailableError, InputError

MODEL_FILES = {
    "5": "shape_predictor_5_face_landmarks.dat",
    "68": "shape_predictor_68_face_landmarks.dat",
}
# The 5-point model's order: image-right eye outer/inner corner, image-left eye outer/inner corner, nose base.
POINT_NAMES = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose_base")
FROM_68 = (45, 42, 36, 39, 33)
DENSE_POINTS = 68
CROP_BOX = (0.24, 0.25, 0.77, 0.78)  # dlib's box on a template-aligned crop (fractions), for dense_on_crop
NO_68 = "DFI_NO_68_POINT_MODEL"  # set (e.g. =1) to never load the non-commercial 68-point model
DETECT_MAX_SIDE = 1600  # larger photos are detected on a downscaled copy; landmarks still at full resolution


def models_dir() -> Path:
    """Folder of the ``face_recognition_models`` .dat files (without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacesUnavailableError(
            "The face landmark models are not installed.",
            "Install them with: pip install face_recognition_models dlib-bin",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(model: str = "5") -> Path:
    if model not in MODEL_FILES:
        raise InputError(f"Unknown landmark model {model!r}.", "Use '5' (default) or '68'.")
    path = models_dir() / MODEL_FILES[model]
    if not path.is_file():
        raise FacesUnavailableError(f"Landmark model file {path} is missing.",
                                    "Reinstall it with: pip install --force-reinstall face_recognition_models")
    return path


@dataclass(frozen=True)
class Face:
    """One detected face in photo pixel coordinates (x, y; pixel centres at integers)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float
    landmarks: np.ndarray  # (5, 2) float64 in the 5-point order
    points: np.ndarray = field(repr=False)  # the predictor's own points, (5, 2) or (68, 2)

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)

    def as_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 4),
                "landmarks": np.round(self.landmarks, 2).tolist()}


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Any engine-acceptable array -> contiguous uint8 RGB, as dlib wants it."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"Unsupported image shape {a.shape}.", "Pass (H, W) or (H, W, C) with C = 1..4.")
    c = a[:, :, :3] if a.shape[2] >= 3 else np.repeat(a[:, :, :1], 3, axis=2)
    if c.dtype == np.uint8:
        return np.ascontiguousarray(c)
    scale = 255.0 / 65535.0 if c.dtype == np.uint16 else 255.0  # floats are 0..1, as everywhere in the engine
    return np.ascontiguousarray(np.clip(np.rint(c.astype(np.float32) * scale), 0, 255).astype(np.uint8))


class FaceDetector:
    """dlib's HOG frontal-face detector plus a shape predictor; load once, call many times."""

    def __init__(self, model: str = "5", upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise FacesUnavailableError("dlib is not installed.", "Install it with: pip install dlib-bin") from None
        self.model = model
        self.upsample = int(upsample)
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model_path(model)))
        self._dense = self._predictor if model == "68" else None

    def _dense_predictor(self):
        if os.environ.get(NO_68):  # the licence switch: no non-commercial model, so no shape or tone
            raise FacesUnavailableError(f"The 68-point landmark model is switched off ({NO_68} is set).",
                                        f"Unset {NO_68} for shape and tone edits (the model is non-commercial).")
        if self._dense is None:
            self._dense = self._dlib.shape_predictor(str(model_path("68")))
        return self._dense

    def _points(self, predictor, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        shape = predictor(rgb, self._dlib.rectangle(*box))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    def dense(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 68 dlib points (x, y) of a detected face, in photo pixels (the 68-point model is non-commercial)."""
        if len(face.points) == DENSE_POINTS:
            return face.points.copy()
        return self._points(self._dense_predictor(), to_uint8_rgb(image), face.box)

    def dense_on_crop(self, crop: np.ndarray) -> np.ndarray:
        """68 points of the face filling an already aligned crop: detected if dlib finds it, else predicted
        in the box where dlib puts a template-aligned face."""
        rgb = to_uint8_rgb(crop)
        faces = self.detect(rgb)
        if faces:
            return self.dense(rgb, max(faces, key=lambda f: f.area))
        h, w = rgb.shape[:2]
        box = (round(CROP_BOX[0] * w), round(CROP_BOX[1] * h), round(CROP_BOX[2] * w), round(CROP_BOX[3] * h))
        return self._points(self._dense_predictor(), rgb, box)

    def dense_in_template_box(self, crop: np.ndarray, upsample: int = 4) -> np.ndarray:
        """68 points of an aligned crop, predicted in the fixed box of a template-aligned face on an
        ``upsample``-times larger copy: to compare two versions of one crop, where nothing but the pixels may
        differ (no detector box jitter; steps of 1/upsample of a crop pixel instead of whole pixels)."""
        from PIL import Image

        rgb = to_uint8_rgb(crop)
        h, w = rgb.shape[:2]
        big = np.asarray(Image.fromarray(rgb).resize((w * upsample, h * upsample), Image.BICUBIC))
        box = tuple(round(f * s * upsample) for f, s in zip(CROP_BOX, (w, h, w, h)))
        return (self._points(self._dense_predictor(), big, box) + 0.5) / upsample - 0.5  # type: ignore[arg-type]

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, most confident first. Large photos are searched on a downscaled copy."""
        rgb = to_uint8_rgb(image)
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = rgb
        if scale < 1.0:
            from PIL import Image

            small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                           Image.BILINEAR))
        rects, scores, _ = self._detector.run(small, self.upsample, 0.0)
        faces = []
        for r, s in zip(rects, scores):
            box = tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))
            pts = self._points(self._predictor, rgb, box)  # type: ignore[arg-type]
            lm = pts if len(pts) == 5 else pts[list(FROM_68)]
            faces.append(Face(box, float(s), lm, pts))  # type: ignore[arg-type]
        faces.sort(key=lambda f: -f.score)
        return faces


def choose_face(faces: list[Face], mask: np.ndarray | None = None) -> tuple[int, str]:
    """Index of the face to edit and why.

    With a mask (the user's selection): the face whose landmarks lie most inside
    it. Without: the largest; among faces of similar size (at least 70% of the
    largest area) the most confident detection, since dlib's boxes come in
    discrete sizes and a false positive can tie with the real face.
    """
    if not faces:
        raise ValueError("no faces")
    if mask is not None:
        m = np.asarray(mask)
        m = m[:, :, 0] if m.ndim == 3 else m
        h, w = m.shape
        inside = []
        for f in faces:
            xs = np.clip(np.rint(f.landmarks[:, 0]).astype(int), 0, w - 1)
            ys = np.clip(np.rint(f.landmarks[:, 1]).astype(int), 0, h - 1)
            inside.append(float((m[ys, xs] > 0).mean()))
        best = max(inside)
        if best > 0:
            cands = [i for i, v in enumerate(inside) if v == best]
            i = max(cands, key=lambda j: (faces[j].area, faces[j].score))
            return i, f"face {i + 1} of {len(faces)}: inside the selection"
    biggest = max(f.area for f in faces)
    cands = [i for i, f in enumerate(faces) if f.area >= 0.7 * biggest]
    i = max(cands, key=lambda j: faces[j].score)
    return i, f"face {i + 1} of {len(faces)}: largest" + (" (none inside the selection)" if mask is not None else "")
