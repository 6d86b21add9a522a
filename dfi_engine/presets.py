"""Quality presets per kind of device, as data (``data/presets.toml``).

Why per device: the same 300 iterations at a face's full resolution take a
GPU a second and a 2-core CPU several minutes. A user picks "fast",
"balanced" or "best"; what that costs on the machine at hand (iterations and
the working size of an aligned face) is decided here, once, for the daemon,
the CLI and the plug-in alike.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from .devices import kind_row

DATA = Path(__file__).resolve().parent / "data" / "presets.toml"
NAMES = ("fast", "balanced", "best")
DEFAULT = "balanced"


@dataclass(frozen=True)
class Preset:
    name: str
    iterations: int
    work_size: int | None = None  # None: the device's (or the daemon's) cap; 0: the database's own size

    def cap(self, device_cap: int) -> int:
        """The working-size cap under this preset (0 = the database's own size)."""
        if device_cap <= 0 or self.work_size is None:
            return device_cap
        return min(device_cap, self.work_size)

    def describe(self, device_cap: int, stored: int = 0) -> str:
        """For a user: ``stored`` is the side of the faces in the database (0: no aligned faces)."""
        text = f"{self.iterations} iterations"
        if stored <= 0:
            return text
        cap = self.cap(device_cap)
        if cap <= stored:
            return f"{text}, faces at the database's {stored} px"
        return f"{text}, faces up to {cap} px (coarse-to-fine from {stored})"


@cache
def _table() -> dict[str, dict[str, dict]]:
    return tomllib.loads(DATA.read_text(encoding="utf-8"))


def presets_for(device: torch.device | str) -> dict[str, Preset]:
    """Every preset of ``device``'s kind (unknown kinds get the CPU's, the cautious choice)."""
    rows = kind_row(_table(), device)
    return {name: Preset(name, int(rows[name]["iterations"]), rows[name].get("work_size")) for name in NAMES}


def preset(device: torch.device | str, name: str | None = None) -> Preset:
    name = name or DEFAULT
    if name not in NAMES:
        raise ValueError(f"unknown quality preset {name!r}; use one of {', '.join(NAMES)}")
    return presets_for(device)[name]
