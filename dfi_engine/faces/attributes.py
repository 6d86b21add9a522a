"""Attribute definitions as data: the shipped ``data/attributes.toml`` plus user files that add or override.

The loader takes explicit paths (the CLI passes the user's config file); the
engine keeps no global registry.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..attribute import SCALINGS
from .errors import AttributeDefinitionError
from .tone import FORMS

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "attributes.toml"
KINDS = ("attribute", "inpaint")
COMPONENTS = ("shape", "tone", "texture")  # prototype landmark shape, prototype tone, DFI texture


def snake(name: str) -> str:
    """Column name -> canonical spelling: 'Mouth Slightly Open' -> 'mouth_slightly_open'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True)
class AttributeDef:
    """One edit: source/target constraints over canonical attributes, fields to match, defaults."""

    name: str
    label: str
    kind: str = "attribute"
    source: Mapping[str, bool] = field(default_factory=dict)
    target: Mapping[str, bool] = field(default_factory=dict)
    match: tuple[str, ...] = ()
    strength: float | None = None  # None: the backbone's default (data/backbones.toml)
    scaling: str | None = None
    shape: float = 1.0  # weight of each component at a given strength (1 = the prototype's full change)
    tone: float = 1.0
    texture: float = 1.0
    tone_form: str = FORMS[0]  # "alpha" for an attribute that covers the face (glasses, a beard, paint)

    def weights(self) -> dict[str, float]:
        """The components' weights; inpainting is texture only."""
        if self.kind == "inpaint":
            return {"shape": 0.0, "tone": 0.0, "texture": self.texture}
        return {"shape": self.shape, "tone": self.tone, "texture": self.texture}

    def needs(self) -> set[str]:
        """Canonical attributes the database must have for this edit."""
        return set(self.source) | set(self.target)

    @classmethod
    def custom(cls, name: str, label: str | None = None) -> AttributeDef:
        """The definition of a two-folder attribute: without -> with, nothing matched."""
        return cls(name, label or name.replace("_", " ").capitalize(), "attribute", {name: False}, {name: True},
                   (), None, None)


@dataclass
class Definitions:
    attributes: dict[str, AttributeDef]
    vocabulary: dict[str, dict[str, str]]
    sources: list[str]
    custom_mix: dict[str, float | str] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 1.0))

    def get(self, name: str, database=None) -> AttributeDef:
        """Definition by name; a database's own custom (two-folder) attributes win over shipped ones."""
        custom = getattr(database, "custom", {}) or {}
        if name in custom:
            return replace(AttributeDef.custom(name, custom[name].get("label")), **self.custom_mix)
        if name in self.attributes:
            return self.attributes[name]
        known = sorted(set(self.attributes) | set(custom))
        raise AttributeDefinitionError(f"Unknown attribute {name!r}.", f"Known: {', '.join(known)}.")

    def usable(self, database) -> list[AttributeDef]:
        """Definitions this database can serve: its columns cover the constraints (inpainting always)."""
        defs = {**self.attributes, **{k: self.get(k, database) for k in (getattr(database, "custom", {}) or {})}}
        cols = set(database.columns)
        return [a for a in defs.values() if a.kind == "inpaint" or a.needs() <= cols]

    def canonical_columns(self, fmt: str, raw: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(canonical names, raw column index, sign) for a table's raw columns.

        Each canonical column is ± one raw column; unmapped raw columns keep
        their snake_case name. A CSV may use LFW or CelebA column names, so its
        vocabulary falls back to theirs.
        """
        chain = [fmt] + (["lfw", "celeba"] if fmt == "csv" else [])
        index = {r: i for i, r in enumerate(raw)}
        names: list[str] = []
        cols: list[int] = []
        signs: list[float] = []
        used: set[int] = set()
        for f in chain:
            for canon, expr in self.vocabulary.get(f, {}).items():
                neg = expr.startswith("-")
                col = expr[1:] if neg else expr
                if col in index and canon not in names:
                    names.append(canon)
                    cols.append(index[col])
                    signs.append(-1.0 if neg else 1.0)
                    used.add(index[col])
        for i, r in enumerate(raw):
            s = snake(r)
            if i not in used and s and s not in names:
                names.append(s)
                cols.append(i)
                signs.append(1.0)
        return names, np.asarray(cols, np.int64), np.asarray(signs, np.float32)

    def canonical_scores(self, fmt: str, raw: Sequence[str], scores: np.ndarray
                         ) -> tuple[list[str], np.ndarray, list[str]]:
        """Raw table scores (N, len(raw)) -> (canonical names, (N, len(names)), aliases); NaN stays NaN.

        Aliases are canonical columns that repeat another one's raw column
        (e.g. beard = −No_Beard); they serve constraints but are left out of
        attribute distances so no fact counts twice.
        """
        names, cols, signs = self.canonical_columns(fmt, raw)
        aliases, seen = [], set()
        for j in sorted(range(len(names)), key=lambda j: signs[j] < 0):  # positive mappings are primary
            if int(cols[j]) in seen:
                aliases.append(names[j])
            seen.add(int(cols[j]))
        return names, (np.asarray(scores, np.float32)[:, cols] * signs).astype(np.float32), aliases


def _bool_map(value, where: str) -> dict[str, bool]:
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise AttributeDefinitionError(f"{where} must be a table of name = true/false.",
                                       'Example: source = { smiling = false }')
    return {snake(k): v for k, v in value.items()}


def _parse(name: str, entry: dict, where: str) -> AttributeDef:
    if not isinstance(entry, dict):
        raise AttributeDefinitionError(f"{where}: [attribute.{name}] must be a table.")
    kind = entry.get("kind", "attribute")
    if kind not in KINDS:
        raise AttributeDefinitionError(f"{where}: attribute {name}: unknown kind {kind!r}.", f"Use one of {KINDS}.")
    scaling = entry.get("scaling")
    if scaling is not None and scaling not in SCALINGS:
        raise AttributeDefinitionError(f"{where}: attribute {name}: unknown scaling {scaling!r}.",
                                       f"Use one of {SCALINGS}.")
    source = _bool_map(entry.get("source", {}), f"{where}: attribute {name}: source")
    target = _bool_map(entry.get("target", {}), f"{where}: attribute {name}: target")
    if kind == "attribute" and (not source or not target):
        raise AttributeDefinitionError(f"{where}: attribute {name} needs both source and target constraints.")
    match = entry.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
        raise AttributeDefinitionError(f"{where}: attribute {name}: match must be a list of names.")
    try:
        strength = None if entry.get("strength") is None else float(entry["strength"])
    except (TypeError, ValueError):
        raise AttributeDefinitionError(f"{where}: attribute {name}: strength must be a number.") from None
    weights = {}
    for c in COMPONENTS:
        v = entry.get(c, 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 10.0:
            raise AttributeDefinitionError(f"{where}: attribute {name}: {c} must be a number from 0 to 10.",
                                           f"Example: {c} = 1.0 (0 turns the component off).")
        weights[c] = float(v)
    tone_form = entry.get("tone_form", FORMS[0])
    if tone_form not in FORMS:
        raise AttributeDefinitionError(f"{where}: attribute {name}: unknown tone_form {tone_form!r}.",
                                       f"Use one of {', '.join(FORMS)}.")
    return AttributeDef(name, str(entry.get("label", name)), kind, source, target,
                        tuple(snake(m) for m in match), strength, scaling, **weights, tone_form=tone_form)


def load_definitions(paths: Sequence[str | Path] = (), builtin: bool = True) -> Definitions:
    """Built-in definitions, then each existing file in ``paths`` in order (later entries win)."""
    files = ([BUILTIN] if builtin else []) + [Path(p) for p in paths]
    attrs: dict[str, AttributeDef] = {}
    vocab: dict[str, dict[str, str]] = {}
    used = []
    mix = dict.fromkeys(COMPONENTS, 1.0)  # a two-folder attribute's components, [custom] in the files
    for f in files:
        if not f.is_file():
            if f == BUILTIN:
                raise AttributeDefinitionError(f"The shipped attribute file {f} is missing.", "Reinstall gimp-dfi.")
            continue
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AttributeDefinitionError(f"{f} is not valid TOML: {e}.", "Fix or remove the file.") from None
        for fmt, table in data.get("vocabulary", {}).items():
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise AttributeDefinitionError(f"{f}: [vocabulary.{fmt}] must map names to column names.")
            vocab.setdefault(fmt, {}).update({snake(k): v for k, v in table.items()})
        for name, entry in data.get("attribute", {}).items():
            attrs[snake(name)] = _parse(snake(name), entry, str(f))
        if "custom" in data:
            entry = _parse("custom", {**data["custom"], "source": {"x": False}, "target": {"x": True}}, str(f))
            mix = {**entry.weights(), "tone_form": entry.tone_form}
        used.append(str(f))
    return Definitions(attrs, vocab, used, custom_mix=mix)
