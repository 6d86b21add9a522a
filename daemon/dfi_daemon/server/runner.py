"""Turns a validated edit/inpaint request into engine calls on the resident model.

The only daemon module that touches numpy and torch. It owns the loaded
VGG-19 and the neighbour source for the daemon's lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from dfi_wire import protocol as P

from .pace import Pace
from .preview import Previews
from .sources import NeighbourSource, UnknownAttribute

ProgressFn = Callable[..., None]  # (stage, overall fraction 0..1, message, preview=image map or None)


def _array(im: P.Image) -> np.ndarray:
    """Wire image -> (H, W, C) uint8 view of the message bytes (no copy; the engine copies)."""
    a = np.frombuffer(im.data, np.uint8)
    return a.reshape(im.height, im.width) if im.channels == 1 else a.reshape(im.height, im.width, im.channels)


def _wire(a: np.ndarray, fmt: str) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return P.image_map(a.tobytes(), a.shape[1], a.shape[0], fmt)


def forward_only(progress: ProgressFn) -> ProgressFn:
    """Progress whose fraction never goes back (a second round of neighbour features, at the fine size or for
    a second shape-and-tone start, would otherwise pull a client's bar back to the features' share)."""
    top = [0.0]

    def report(stage: str, fraction: float, message: str, **extra: Any) -> None:
        top[0] = max(top[0], fraction)
        progress(stage, top[0], message, **extra)

    return report


class Runner:
    """Engine façade: checks a request against what is loaded, then runs it."""

    def __init__(self, net: Any, source: NeighbourSource | None, limits: P.Limits, work_size: int = 0) -> None:
        self.net = net
        self.source = source
        self.limits = limits
        self.work_size = work_size  # the device's cap on the side an aligned face is edited at (0: as stored)
        self.pace = Pace()

    # ------------------------------------------------------------------ checks before queueing
    def check(self, req: dict[str, Any]) -> None:
        """Refuse at once what would only fail later in the queue (no database, unknown attribute, align)."""
        if self.source is None:
            raise P.ProtocolError(
                "no_database", "The daemon has no neighbour database, so it cannot compute an edit.",
                "Give --database PATH: a face database from 'dfi db build' or 'dfi db fetch lfw' ('dfi demo' "
                "leaves one in out/demo/glasses.db, attribute dark_glasses), or --database synthetic for the "
                "offline smoke test.")
        if req.get("options", {}).get("align") and not self.source.can_align:
            raise P.ProtocolError(
                "align_unavailable", f"Face alignment was requested but {self.source.label} has no face frame.",
                "Send align=false, or start the daemon with a face database (--database PATH).")
        if req["op"] == "edit":
            names = [a["name"] for a in self.source.attributes()]
            if req["attribute"] not in names:
                raise P.ProtocolError("unknown_attribute",
                                      f"Attribute {req['attribute'][:60]!r} is not defined by {self.source.label}.",
                                      f"Use one of: {', '.join(names) or '(none)'} (see 'dfi attributes').")

    def _attribute(self, name: str) -> dict[str, Any]:
        return next(a for a in self.attributes() if a["name"] == name)

    def attributes(self) -> list[dict[str, Any]]:
        """The source's attributes, with the network's defaults where a definition leaves them open."""
        from dfi_engine.backbones import defaults_for

        d = defaults_for(self.net.backbone)
        out = []
        for a in self.source.attributes() if self.source else []:
            scaling = a.get("scaling") or d.scaling
            strength = a.get("default_strength")
            out.append({**a, "scaling": scaling, "default_strength": d.strength if strength is None else strength,
                        "strength_max": d.strength_max if scaling == d.scaling else max(5.0, 2 * (strength or 1))})
        return out

    # ------------------------------------------------------------------ pace
    def presets(self) -> dict[str, dict[str, Any]]:
        """What each quality preset means on this daemon's device (for status and user interfaces)."""
        from dfi_engine.presets import presets_for

        stored = self.source.resolution if self.source is not None and self.source.can_align else 0
        return {name: {"iterations": p.iterations, "work_size": p.cap(self.work_size),
                       "text": p.describe(self.work_size, stored)} for name, p in presets_for(self.net.device).items()}

    def _settings(self, req: dict[str, Any]) -> tuple[int, bool, int, int]:
        """(k, align, work size, iterations) of a request: its own options, else its quality preset on this
        device (default "balanced"), with the source's defaults filled in."""
        from dfi_engine.presets import preset

        opts = req.get("options", {})
        assert self.source is not None
        chosen = preset(self.net.device, opts.get("quality"))
        return (int(opts.get("k", self.source.default_k)), bool(opts.get("align", self.source.can_align)),
                int(opts.get("work_size", chosen.cap(self.work_size))),
                int(opts.get("iterations", chosen.iterations)))

    def _plan(self, req: dict[str, Any]) -> tuple[Any, int, int, int]:
        """(kind of request, pixel-iterations, strengths, neighbour pixels) of a request, before it runs."""
        assert self.source is not None
        k, align, work_size, iterations = self._settings(req)
        work, side = self.source.work(req["image"].height, req["image"].width, align, work_size, iterations)
        strengths = len(req["strengths"]) if req["op"] == "edit" else 1
        key = (req["op"], req.get("attribute"), k, align, side)
        return key, work, strengths, (2 * k if req["op"] == "edit" else k) * side * side

    def estimate(self, req: dict[str, Any]) -> float | None:
        """Seconds the job should take on this device (None until the pace is known)."""
        return self.pace.estimate(*self._plan(req))

    # ------------------------------------------------------------------ warm-up
    def warm_up(self) -> float:
        """A small reconstruction so the first real job does not pay for lazy initialisation; it also
        measures the device's pace for the first estimate."""
        import torch

        from dfi_engine.reconstruct import ReconstructConfig, reconstruct

        t0 = time.perf_counter()
        side = 128
        x = torch.full((1, 3, side, side), 127.5, device=self.net.device)
        x[:, :, side // 4: side // 2] = 60.0  # not flat: a real objective
        with torch.no_grad():
            targets = self.net(x.flip(2))
        marks: list[float] = []
        reconstruct(self.net, x, targets, ReconstructConfig(iterations=4),
                    progress=lambda i, n, loss: marks.append(time.perf_counter()))
        if len(marks) >= 4:
            self.pace.observe_iterations(marks[-1] - marks[1], (len(marks) - 2) * side * side, 1)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ running
    def run(self, req: dict[str, Any], progress: ProgressFn, cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Run one job; returns the result reply's fields. Raises engine DFIError / CancelledError."""
        import dfi_engine as dfi
        from dfi_engine.errors import CancelledError, InputError

        assert self.source is not None
        t0 = time.perf_counter()
        progress = forward_only(progress)
        image = _array(req["image"])
        mask = _array(req["mask"]) if req.get("mask") is not None else None
        opts = req.get("options", {})
        k, align, work_size, iterations = self._settings(req)
        notes: list[str] = []
        if self.source.synthetic:
            notes.append(f"neighbours: {self.source.label}")
        if "RANDOM" in self.net.label:
            notes.append(f"weights: {self.net.label}")

        previews = Previews(float(opts.get("preview", 0.0)), req["image"].format)
        key, _, strengths, _ = self._plan(req)
        marks: dict[str, float] = {}  # when the inversion started, its last iteration, and the units of both

        def engine_progress(stage: str, done: float, total: float, render: Any = None, step: str = "",
                            **_: Any) -> None:
            if cancelled():  # neighbour features have no cancel hook of their own
                raise CancelledError("The job was cancelled.")
            if stage == "reconstruct":
                marks.setdefault("first", time.perf_counter())
                marks.setdefault("first_done", done)
                marks["last"], marks["last_done"], marks["total"] = time.perf_counter(), done, total
                progress("reconstruct", 0.25 + 0.72 * done / max(total, 1), step or f"iteration {done}/{total}",
                         preview=previews.maybe(render))
            else:
                part = 0.0 if stage.startswith("target") else 0.5
                progress("features", 0.05 + 0.2 * (part + 0.5 * done / max(total, 1)), f"{stage} {done}/{total}")

        progress("neighbours", 0.01, f"finding {k} neighbours")
        if req["op"] == "edit":
            attr = self._attribute(req["attribute"])
            options = dfi.EditOptions(
                scaling=opts.get("scaling", attr["scaling"]), color=opts.get("color"),
                feather=opts.get("feather"), max_pixels=self.limits.max_pixels, work_size=work_size or None,
                reconstruct=dfi.ReconstructConfig(iterations=iterations))
            try:
                res = self.source.edit(self.net, image, mask, req["attribute"], req["strengths"], options, align, k,
                                       engine_progress, cancelled, components=opts.get("components"))
            except UnknownAttribute:
                raise InputError(f"Unknown attribute {req['attribute']!r}.", "Run 'dfi attributes'.") from None
        else:
            options = dfi.EditOptions(
                scaling=opts.get("scaling", getattr(self.source, "inpaint_scaling", None)),
                color=opts.get("color"), max_pixels=self.limits.max_pixels, work_size=work_size or None,
                reconstruct=dfi.ReconstructConfig(iterations=iterations))
            res = self.source.inpaint(self.net, image, mask, req.get("strength"), options, align, k,
                                      engine_progress, cancelled)
        face = getattr(res, "face", None)
        if face is not None:
            notes.append(f"face: {face.choice}, edited at {face.size} px")
        info = getattr(res, "info", {})
        notes += [str(n) for n in info.get("notes", [])]
        if info.get("components"):
            notes.append("components: " + ", ".join(f"{c} {w:g}" for c, w in info["components"].items() if w))
        if "first" in marks:  # the pace of what really ran (the face's working size was a guess before)
            work = getattr(res, "info", {}).get("pixel_iterations") or (
                iterations * (face.size ** 2 if face is not None else image.shape[0] * image.shape[1]))
            seen = (marks["last_done"] - marks["first_done"]) / max(marks["total"], 1)
            self.pace.observe_prep(key, marks["first"] - t0)
            self.pace.observe_iterations(marks["last"] - marks["first"], work * seen, strengths)
        fmt = req["image"].format
        progress("done", 1.0, "done")
        return {
            "images": [_wire(im, fmt) for im in res.images],
            "strengths": res.strengths,
            "losses": [float(x) for x in res.losses],
            "weights": res.weights_label,
            "source": self.source.label,
            "notes": notes,
            "quality": {"preset": opts.get("quality", P.DEFAULT_QUALITY), "iterations": iterations,
                        "work_size": face.size if face is not None else None},
            "seconds": round(time.perf_counter() - t0, 3),
        }
