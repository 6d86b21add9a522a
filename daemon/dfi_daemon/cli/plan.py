"""What a batch of image edits will do, decided before any work: inputs, outputs, what is skipped.

One plan serves every way of running it (``dfi edit``/``inpaint`` through the
daemon, ``dfi batch`` through the daemon or on a Ray cluster), so they name,
skip and refuse outputs identically: an input is never overwritten, two results
never collide, a re-run's glob does not take earlier results for inputs, and
outputs that exist are kept (``skip_existing``, a resume) or replaced with a warning.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfi_wire import protocol as P

from . import imageio

EDIT_PATTERN = "{dir}/{stem}-{attribute}-{strength}.png"
INPAINT_PATTERN = "{dir}/{stem}-filled.png"


@dataclass
class Task:
    """One request: an image, an attribute (None: inpaint) and its strengths, one output each."""

    src: Path
    attribute: str | None
    strengths: list[float | None]
    outputs: list[Path]
    mask: Path | None = None


@dataclass
class Plan:
    tasks: list[Task]
    skipped: int = 0  # tasks whose outputs all existed (skip_existing)
    left_out: list[Path] = field(default_factory=list)  # inputs that are results of this same command
    replaced: list[Path] = field(default_factory=list)  # existing outputs that will be written again

    @property
    def outputs(self) -> int:
        return sum(len(t.outputs) for t in self.tasks)


def expand(patterns: list[str]) -> list[Path]:
    """Files and globs (quoted globs are expanded here too); an unmatched glob is an error."""
    out: list[Path] = []
    for pat in patterns:
        if glob.has_magic(pat):
            hits = sorted(glob.glob(pat))
            if not hits:
                raise imageio.ImageFileError(f"No file matches {pat!r}.")
            out += [Path(h) for h in hits]
        else:
            out.append(Path(pat))
    for p in out:
        if not p.is_file():
            raise imageio.ImageFileError(f"No such file: {p}.")
    return out


def parse_list(text: str, flag: str, example: str, number: bool = True) -> list:
    """A comma-separated option value (strengths, attributes); empty items are ignored."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        values = [float(s) for s in items] if number else items
    except ValueError:
        raise imageio.ImageFileError(f"{flag} {text!r} is not a comma-separated list of numbers, e.g. {example}."
                                     ) from None
    if not values:
        raise imageio.ImageFileError(f"{flag} needs at least one value, e.g. {example}.")
    return values


def _outputs(pattern: str, src: Path, attribute: str | None, strengths: list) -> list[Path]:
    if attribute is None:
        return [imageio.render(pattern, src, attribute="inpaint", strength="", index=0)]
    return [imageio.render(pattern, src, attribute=attribute, strength=f"{s:g}", index=i)
            for i, s in enumerate(strengths)]


def make_plan(images: list[str], edits: list[tuple[str | None, list]], pattern: str, mask: str | None,
              skip_existing: bool) -> Plan:
    """The tasks for every input x edit; raises ImageFileError for anything that would fail or clobber."""
    inputs = expand(images)
    outputs = {(src, a): _outputs(pattern, src, a, s) for src in inputs for a, s in edits}
    real = os.path.realpath
    made_by = {real(o): real(src) for (src, _), outs in outputs.items() for o in outs}
    # a re-run's glob also matches the previous run's results: those are outputs, not inputs
    ours = [src for src in inputs if made_by.get(real(src), real(src)) != real(src)]
    inputs = [src for src in inputs if src not in ours]
    if not inputs:
        raise imageio.ImageFileError("Every file given is a result of this command; nothing to edit.")
    plan = Plan([], left_out=ours)
    for src in inputs:
        mask_path = None
        if mask is not None:
            mask_path = imageio.render(mask, src) if "{" in mask else Path(mask)
            if not mask_path.is_file():  # a wrong mask fails before any work
                raise imageio.ImageFileError(f"Mask file for {src} not found: {mask}.")
        for attribute, strengths in edits:
            outs = outputs[(src, attribute)]
            if skip_existing and all(o.exists() for o in outs):
                plan.skipped += 1
                continue
            plan.tasks.append(Task(src, attribute, list(strengths), outs, mask_path))
    every = [o for t in plan.tasks for o in t.outputs]
    imageio.check_outputs(inputs, every)
    imageio.check_writable(every)
    plan.replaced = [o for o in every if o.exists()]
    return plan


def request(task: Task, max_pixels: int | None, options: dict[str, Any]) -> tuple[imageio.Loaded, dict[str, Any]]:
    """(the loaded input, the wire request) of a task; ImageFileError for a file that cannot be used."""
    loaded = imageio.load_image(task.src, max_pixels)
    mask = imageio.load_mask(task.mask, loaded.size) if task.mask is not None else None
    if task.attribute is not None:
        return loaded, P.edit_request(loaded.wire, task.attribute, task.strengths, mask, **options)
    strength = task.strengths[0]
    opts = {k: v for k, v in options.items() if k in P.INPAINT_OPTIONS}
    return loaded, P.inpaint_request(loaded.wire, mask, strength, **opts)


def save(task: Task, result: dict[str, Any], loaded: imageio.Loaded) -> list[Path]:
    """Write a task's results (atomically, in the input's mode) to its outputs."""
    for wire, out in zip(result["images"], task.outputs):
        imageio.save_result(wire, loaded, out)
    return task.outputs[:len(result["images"])]
