"""Parsers for attribute tables: LFW (Kumar et al.), CelebA ``list_attr_celeba.txt`` and plain CSV.

Each returns a :class:`Table` of raw column names and a score matrix where a
positive value means the attribute is present, negative absent and NaN
unknown; mapping raw names to the canonical vocabulary is
:mod:`.attributes`' job.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TableError

FORMATS = ("lfw", "celeba", "csv")
_TRUE = {"true", "yes", "y", "t"}
_FALSE = {"false", "no", "n", "f"}


@dataclass
class Table:
    """Rows of an attribute table: file (relative to the image folder), identity (or None), scores."""

    format: str
    columns: list[str]
    files: list[str]
    identities: list[str | None]
    scores: np.ndarray  # (N, len(columns)) float32

    def __len__(self) -> int:
        return len(self.files)


def detect_format(path: Path) -> str:
    """Guess the table format from its first two lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
        second = f.readline()
    if first.isdigit():
        return "celeba"
    if first.startswith("#") and second.lstrip("#").strip().lower().startswith("person"):
        return "lfw"
    if "file" in [c.strip().lower() for c in next(csv.reader([first]), [])]:
        return "csv"
    raise TableError(
        f"Cannot tell the format of attribute table {path}.",
        "Use the LFW lfw_attributes.txt format, CelebA list_attr_celeba.txt, or a CSV with a 'file' column "
        "(or pass the format explicitly).",
    )


def read_table(path: str | Path, fmt: str = "auto") -> Table:
    """Parse an attribute table in the given (or detected) format."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"No attribute table at {path}.", "Check the path.")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "lfw":
        return read_lfw(path)
    if fmt == "celeba":
        return read_celeba(path)
    if fmt == "csv":
        return read_csv(path)
    raise TableError(f"Unknown table format {fmt!r}.", f"Use auto or one of {', '.join(FORMATS)}.")


def lfw_file(person: str, num: int) -> str:
    """LFW's file naming: ``Aaron_Eckhart/Aaron_Eckhart_0001.jpg``."""
    name = person.strip().replace(" ", "_")
    return f"{name}/{name}_{num:04d}.jpg"


def read_lfw(path: Path) -> Table:
    """``lfw_attributes.txt``: a count line, a ``#``-header (person, imagenum, 73 names), then tab-separated rows."""
    with open(path, encoding="utf-8") as f:
        f.readline()
        header = [c.strip() for c in f.readline().rstrip("\n").split("\t")]
        if header and header[0] == "#":
            header = header[1:]
        elif header and header[0].startswith("#"):
            header[0] = header[0].lstrip("#").strip()
        if len(header) < 3 or header[0].lower() != "person" or header[1].lower() != "imagenum":
            raise TableError(f"{path}: line 2 must be '#<TAB>person<TAB>imagenum<TAB>attribute names…'.",
                             "Pass the original lfw_attributes.txt.")
        columns = header[2:]
        files, ids, rows = [], [], []
        for n, line in enumerate(f, start=3):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(columns) + 2:
                raise TableError(f"{path}:{n}: {len(parts) - 2} scores, expected {len(columns)}.",
                                 "The file is truncated or not tab-separated.")
            try:
                num = int(parts[1])
                vals = [float(x) for x in parts[2:]]
            except ValueError as e:
                raise TableError(f"{path}:{n}: {e}.", "Scores must be numbers.") from None
            files.append(lfw_file(parts[0], num))
            ids.append(parts[0].strip())
            rows.append(vals)
    return Table("lfw", columns, files, ids, _matrix(rows, len(columns)))


def read_celeba(path: Path) -> Table:
    """``list_attr_celeba.txt``: a count line, a line of 40 names, then ``file ±1 …`` (whitespace-separated)."""
    with open(path, encoding="utf-8") as f:
        try:
            declared = int(f.readline().strip())
        except ValueError:
            raise TableError(f"{path}: line 1 must be the image count.", "Pass list_attr_celeba.txt.") from None
        columns = f.readline().split()
        if not columns:
            raise TableError(f"{path}: line 2 must list the attribute names.", "Pass list_attr_celeba.txt.")
        files, rows = [], []
        for n, line in enumerate(f, start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(columns) + 1:
                raise TableError(f"{path}:{n}: {len(parts) - 1} values, expected {len(columns)}.",
                                 "The file is truncated or damaged.")
            try:
                rows.append([float(x) for x in parts[1:]])
            except ValueError as e:
                raise TableError(f"{path}:{n}: {e}.", "Values must be 1 or -1.") from None
            files.append(parts[0])
    if declared != len(files):
        raise TableError(f"{path}: declares {declared} images but lists {len(files)}.",
                         "The file is truncated; download it again.")
    return Table("celeba", columns, files, [None] * len(files), _matrix(rows, len(columns)))


def _value(text: str) -> float:
    t = text.strip().lower()
    if t in ("", "nan", "na", "?"):
        return math.nan
    if t in _TRUE:
        return 1.0
    if t in _FALSE:
        return -1.0
    return float(t)


def read_csv(path: Path) -> Table:
    """CSV with a ``file`` column, an optional ``identity``/``person`` column, and score columns.

    Scores: numbers (positive = present), true/false, yes/no, or empty for
    unknown. A column holding only 0 and 1 is read as absent/present.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        lower = [h.lower() for h in header]
        if "file" not in lower:
            raise TableError(f"{path}: no 'file' column in the header.", "Name the image column 'file'.")
        fi = lower.index("file")
        ii = next((lower.index(k) for k in ("identity", "person") if k in lower), None)
        cols = [i for i in range(len(header)) if i not in (fi, ii)]
        files, ids, rows = [], [], []
        for n, rec in enumerate(reader, start=2):
            if not any(c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise TableError(f"{path}:{n}: {len(rec)} fields, expected {len(header)}.", "Fix the row.")
            try:
                rows.append([_value(rec[i]) for i in cols])
            except ValueError as e:
                raise TableError(f"{path}:{n}: {e}.", "Scores must be numbers, true/false or empty.") from None
            files.append(rec[fi].strip())
            ids.append(rec[ii].strip() or None if ii is not None else None)
    scores = _matrix(rows, len(cols))
    for j in range(scores.shape[1]):
        col = scores[:, j]
        known = col[~np.isnan(col)]
        if known.size and np.isin(known, (0.0, 1.0)).all():
            scores[:, j] = np.where(col == 0.0, -1.0, col)
    return Table("csv", [header[i] for i in cols], files, ids, scores)


def _matrix(rows: list[list[float]], ncols: int) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(len(rows), ncols)
