"""Errors of face alignment and the neighbour database (all :class:`DFIError`, so the CLI and daemon map them)."""

from __future__ import annotations

from ..errors import DFIError, InputError


class NoFaceError(InputError):
    """No face was found where one was expected; the caller may edit the whole image unaligned."""

    code = "no_face"


class DatabaseError(DFIError):
    """A neighbour database is missing, corrupt, foreign, empty or of an unsupported version."""

    code = "database_error"


class TooFewNeighboursError(DFIError):
    """Fewer admissible neighbours than the minimum; the message gives the counts found."""

    code = "too_few_neighbours"


class TableError(InputError):
    """An attribute table cannot be parsed."""

    code = "bad_table"


class AttributeDefinitionError(InputError):
    """An attribute definition file is malformed or names an unknown attribute."""

    code = "bad_attribute"


class FetchError(DFIError):
    """A download failed on every mirror (the message lists each attempt)."""

    code = "fetch_failed"


class FacesUnavailableError(DFIError):
    """dlib or the landmark models are not installed."""

    code = "faces_unavailable"
