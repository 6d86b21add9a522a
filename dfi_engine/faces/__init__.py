"""Faces: landmarks, alignment to a canonical frame, the neighbour database and neighbour selection.

Typical use (what the daemon does per request)::

    det = FaceDetector()                                   # dlib, 5-point landmarks
    db = Database("~/.local/share/gimp-dfi/databases/lfw-deepfunneled")
    defs = load_definitions([user_attributes_toml])
    res = edit_attribute(net, photo, db, defs.get("facehair", db), [0.4], mask=sel,
                         detector=det, cache=FeatureCache())

dlib is imported only when a :class:`FaceDetector` is made.
"""

from .align import AlignedFace
from .attributes import AttributeDef, Definitions, load_definitions
from .builder import BuildReport, build
from .cache import FeatureCache
from .database import Database, Plan, check, plan_from_folder, plan_from_folders, plan_from_table
from .errors import (
    AttributeDefinitionError,
    DatabaseError,
    FacesUnavailableError,
    FetchError,
    NoFaceError,
    TableError,
    TooFewNeighboursError,
)
from .landmarks import Face, FaceDetector, choose_face
from .neighbours import Selection, input_scores, select
from .pipeline import FaceEditResult, align_photo, edit_aligned, edit_attribute, inpaint_face

__all__ = [
    "AlignedFace", "AttributeDef", "AttributeDefinitionError", "BuildReport", "Database", "DatabaseError",
    "Definitions", "Face", "FaceDetector", "FaceEditResult", "FacesUnavailableError", "FeatureCache", "FetchError",
    "NoFaceError", "Plan", "Selection", "TableError", "TooFewNeighboursError", "align_photo", "build", "check",
    "choose_face", "edit_aligned", "edit_attribute", "inpaint_face", "input_scores", "load_definitions",
    "plan_from_folder", "plan_from_folders", "plan_from_table", "select",
]
