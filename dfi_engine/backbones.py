"""Per-backbone defaults as data (``data/backbones.toml``): one row per feature network.

The engine fills every setting a caller leaves as ``None`` from the row of the
network in use (``net.backbone``), so a daemon, the CLI and a script get the
same calibrated edit without repeating numbers.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "backbones.toml"


@dataclass(frozen=True)
class BackboneDefaults:
    tv_weight: float
    tv_on: str
    chroma_weight: float
    levels: int
    scaling: str
    strength: float
    strength_max: float
    inpaint_scaling: str
    inpaint_strength: float
    inpaint_chroma_weight: float
    iterations: int
    color: str
    fine_chroma_weight: float
    label: str = ""


@cache
def _table() -> dict[str, dict]:
    return tomllib.loads(DATA.read_text(encoding="utf-8"))


def defaults_for(backbone: str) -> BackboneDefaults:
    """The row for ``backbone`` over the shared ``[defaults]`` (unknown backbones get the defaults)."""
    table = _table()
    row = {**table["defaults"], **table.get(backbone, {})}
    names = {f.name for f in fields(BackboneDefaults)}
    return BackboneDefaults(**{k: v for k, v in row.items() if k in names})
