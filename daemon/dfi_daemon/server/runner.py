"""Turns a validated edit/inpaint request into engine calls on the resident model.

The only daemon module that touches numpy and torch. It owns the loaded
VGG-19 and the neighbour source for the daemon's lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from dfi_wire import protocol as P

from dfi_engine.progress import CancelFn, Event, ProgressFn

from .jobs import Job, Settings
from .pace import Pace
from .preview import Previews
from .sessions import Entry, Sessions, recipe_of, setup_digest
from .sources import LIVE_NEEDS_DATABASE, NeighbourSource, SourceJob, UnknownAttribute

# How a job's progress bar is shared out: the neighbours step, the neighbour features, then the inversion.
FEATURES_SPAN = (0.05, 0.2)  # (start, width) of the neighbour features' share
INVERSION_SPAN = (0.25, 0.72)  # (start, width) of the inversion's share; "done" is 1.0


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

    def report(ev: Event) -> None:
        top[0] = max(top[0], ev.fraction)
        progress(replace(ev, step=top[0], total=1.0))

    return report


@dataclass
class JobProgress:
    """The engine's events as one job's: a fraction of the whole job, a message, a preview image map.

    Also checks cancel at every event (neighbour features have no cancel hook of their own) and notes when
    the inversion ran, so the pace can be measured on what really ran."""

    progress: ProgressFn  # job-level events (fraction of 1.0)
    cancel: CancelFn
    previews: Previews
    marks: dict[str, float] = field(default_factory=dict)  # inversion: first/last time and step, total

    def __call__(self, ev: Event) -> None:
        from dfi_engine.errors import CancelledError

        if self.cancel():
            raise CancelledError("The job was cancelled.")
        if ev.stage == "reconstruct":
            self.marks.setdefault("first", time.perf_counter())
            self.marks.setdefault("first_done", ev.step)
            self.marks.update(last=time.perf_counter(), last_done=ev.step, total=ev.total)
            start, width = INVERSION_SPAN
            self.progress(Event("reconstruct", start + width * ev.step / max(ev.total, 1), 1.0,
                                ev.message or f"iteration {ev.step:g}/{ev.total:g}", self.previews.maybe(ev.preview)))
        else:
            part = 0.0 if ev.stage.startswith("target") else 0.5
            start, width = FEATURES_SPAN
            self.progress(Event("features", start + width * (part + 0.5 * ev.step / max(ev.total, 1)), 1.0,
                                f"{ev.stage} {ev.step:g}/{ev.total:g}"))

    def inverted_share(self) -> float:
        """The share of the inversion's iterations seen between its first and last event."""
        return (self.marks["last_done"] - self.marks["first_done"]) / max(self.marks["total"], 1)


class Runner:
    """Engine façade: checks a request against what is loaded, then runs it."""

    def __init__(self, net: Any, source: NeighbourSource | None, limits: P.Limits, work_size: int = 0) -> None:
        self.net = net
        self.source = source
        self.limits = limits
        self.work_size = work_size  # the device's cap on the side an aligned face is edited at (0: as stored)
        self.pace = Pace()

    # ------------------------------------------------------------------ checks before queueing
    def check(self, req: P.JobRequest) -> None:
        """Refuse at once what would only fail later in the queue (no database, unknown attribute, align)."""
        if self.source is None:
            raise P.ProtocolError(
                "no_database", "The daemon has no neighbour database, so it cannot compute an edit.",
                "Give --database PATH: a face database from 'dfi db build' or 'dfi db fetch lfw' ('dfi demo' "
                "leaves one in out/demo/glasses.db, attribute dark_glasses), or --database synthetic for the "
                "offline smoke test.")
        if req.options.align and not self.source.can_align:
            raise P.ProtocolError(
                "align_unavailable", f"Face alignment was requested but {self.source.label} has no face frame.",
                "Send align=false, or start the daemon with a face database (--database PATH).")
        if isinstance(req, P.Preview) and self.source.synthetic:
            raise P.ProtocolError("bad_input", *LIVE_NEEDS_DATABASE)
        if isinstance(req, (P.Edit, P.Preview)):
            names = [a["name"] for a in self.source.attributes()]
            if req.attribute not in names:
                raise P.ProtocolError("unknown_attribute",
                                      f"Attribute {req.attribute[:60]!r} is not defined by {self.source.label}.",
                                      f"Use one of: {', '.join(names) or '(none)'} (see 'dfi attributes').")

    def settings(self, req: P.JobRequest) -> Settings:
        """The job's settings, resolved once (when it is accepted): its own options, else its quality preset on
        this device (default "balanced"), else the source's and the network's defaults. Call after ``check``."""
        from dfi_engine.presets import preset

        assert self.source is not None
        o = req.options
        chosen = preset(self.net.device, o.quality)
        im = req.image
        common = {"op": req.op, "height": im.height if im else 0, "width": im.width if im else 0,
                  "k": o.k if o.k is not None else self.source.default_k,
                  "align": o.align if o.align is not None else self.source.can_align,
                  "work_size": o.work_size if o.work_size is not None else chosen.cap(self.work_size),
                  "iterations": o.iterations if o.iterations is not None else chosen.iterations,
                  "quality": o.quality or P.DEFAULT_QUALITY, "color": o.color, "preview_s": o.preview or 0.0}
        if isinstance(req, P.Edit):
            return Settings(**common, scaling=o.scaling or self._attribute(req.attribute)["scaling"],
                            feather=o.feather, attribute=req.attribute, strengths=tuple(req.strengths),
                            components=o.components)
        if isinstance(req, P.Preview):
            scaling = self._attribute(req.attribute)["scaling"]
            return Settings(**common, scaling=scaling, feather=None, attribute=req.attribute, strength=req.strength,
                            components=o.components, session=req.session, refine=o.refine is not False,
                            setup=setup_digest(req, common["align"], common["k"]) if im is not None else b"")
        return Settings(**common, scaling=o.scaling or getattr(self.source, "inpaint_scaling", None), feather=None,
                        strength=req.strength)

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

    def _plan(self, s: Settings) -> tuple[Any, int, int, int]:
        """(kind of job, pixel-iterations, strengths, neighbour pixels) of a job, before it runs."""
        assert self.source is not None
        work, side = self.source.work(s.height, s.width, s.align, s.work_size, s.iterations)
        key = (s.op, s.attribute or None, s.k, s.align, side)
        return key, work, s.results, (2 * s.k if s.op == "edit" else s.k) * side * side

    def estimate(self, settings: Settings) -> float | None:
        """Seconds the job should take on this device (None until the pace is known, and for previews)."""
        if settings.op == "preview":
            return None
        return self.pace.estimate(*self._plan(settings))

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
                    on_iteration=lambda i, n, loss: marks.append(time.perf_counter()))
        if len(marks) >= 4:
            self.pace.observe_iterations(marks[-1] - marks[1], (len(marks) - 2) * side * side, 1)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ running
    def run(self, req: P.JobRequest, settings: Settings, progress: ProgressFn, cancel: CancelFn) -> dict[str, Any]:
        """Run one job; returns the result reply's fields. Raises engine DFIError / CancelledError.

        ``progress`` receives job-level events (``step`` is the fraction of the whole job, ``preview`` an image
        map); ``cancel`` is checked at every engine event."""
        assert self.source is not None
        t0 = time.perf_counter()
        s, progress = settings, forward_only(progress)
        events = JobProgress(progress, cancel, Previews(s.preview_s, req.image.format))
        job = SourceJob(s, self.net, _array(req.image), _array(req.mask) if req.mask is not None else None,
                        self._engine_options(s), events, cancel)
        progress(Event("neighbours", 0.01, 1.0, f"finding {s.k} neighbours"))
        res = self._call_source(job)
        face = getattr(res, "face", None)
        if "first" in events.marks:
            self._observe_pace(s, res, events, t0)
        progress(Event("done", 1.0, 1.0, "done"))
        return {
            "images": [_wire(im, req.image.format) for im in res.images],
            "strengths": res.strengths,
            "losses": [float(x) for x in res.losses],
            "weights": res.weights_label,
            "source": self.source.label,
            "notes": self._notes(res),
            "quality": {"preset": s.quality, "iterations": s.iterations,
                        "work_size": face.size if face is not None else None},
            "seconds": round(time.perf_counter() - t0, 3),
        }

    # ------------------------------------------------------------------ live previews
    def run_preview(self, job: Job, store: Sessions, progress: ProgressFn,
                    send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """One live preview: the session (kept, or opened from the request's image), its instant look sent
        through ``send`` at once, then the refined look returned as the final reply's fields (with
        ``refine: false`` the instant look is the final one). Raises like ``run``."""
        from dfi_engine.errors import CancelledError

        t0 = time.perf_counter()
        s, progress, cancel = job.settings, forward_only(progress), job.cancel_event.is_set
        entry, reused = self._session(job, store, progress)
        if cancel():
            raise CancelledError("The preview was cancelled.")
        look = _look(entry.session.instant(s.strength), reused, t0)
        if s.refine:
            send({**look, "final": False})
            events = JobProgress(progress, cancel, Previews(0.0, "RGB8"))
            refined = entry.session.refine(s.strength, iterations=job.request.options.iterations, progress=events,
                                           cancel=cancel)
            look = _look(refined, reused, t0)
        store.refresh((job.client, s.session), entry)
        progress(Event("done", 1.0, 1.0, "done"))
        return {"type": "preview", **look, "final": True}

    def _session(self, job: Job, store: Sessions, progress: ProgressFn) -> tuple[Entry, bool]:
        """(the session this preview uses, whether it was kept from before). A preview with an image reuses
        the kept session only if it was opened from the same image, mask, attribute and options."""
        req, s, key = job.request, job.settings, (job.client, job.settings.session)
        if req.image is None:
            return store.kept(job.client, req), True  # else unknown_session (dropped since it was accepted)
        entry = store.get(key)
        if entry is not None and entry.setup == s.setup:
            return entry, True
        if entry is not None:
            store.drop(key)  # replaced: let the old one go before the new one takes memory

        def opening_cancelled() -> bool:  # superseded by a preview that needs this session: finish opening it
            return opening[0] and job.cancelled and not (job.cancel_reason == "superseded" and job.keep_opening)

        # The session keeps the callbacks it was opened with: once open, they must not reach this job any more
        opening = [True]
        events = JobProgress(progress, opening_cancelled, Previews(0.0, "RGB8"))
        photo = _array(req.image).copy()  # the session outlives the message's bytes
        mask = _array(req.mask).copy() if req.mask is not None else None
        source_job = SourceJob(s, self.net, photo, mask, self._engine_options(s),
                               lambda ev: events(ev) if opening[0] else None, opening_cancelled)
        progress(Event("neighbours", 0.01, 1.0, f"opening the session: {s.k} neighbours"))
        try:
            session = self.source.open_session(source_job)
        except UnknownAttribute:
            raise unknown_attribute_error(s.attribute) from None
        finally:
            opening[0] = False
        entry = Entry(session, s.setup, recipe_of(s))
        store.put(key, entry, unless=lambda: job.cancelled and job.cancel_reason != "superseded")
        return entry, False

    def _engine_options(self, s: Settings) -> Any:
        """The engine's EditOptions of a job (the daemon's pixel limit; 0 work size = the database's own)."""
        import dfi_engine as dfi

        return dfi.EditOptions(scaling=s.scaling, color=s.color, feather=s.feather, max_pixels=self.limits.max_pixels,
                               work_size=s.work_size or None,
                               reconstruct=dfi.ReconstructConfig(iterations=s.iterations))

    def _call_source(self, job: SourceJob) -> Any:
        assert self.source is not None
        if job.settings.op != "edit":
            return self.source.inpaint(job)
        try:
            return self.source.edit(job)
        except UnknownAttribute:
            raise unknown_attribute_error(job.settings.attribute) from None

    def _notes(self, res: Any) -> list[str]:
        """What a user should know about how the result was made (smoke-test data, the face, the components)."""
        assert self.source is not None
        notes: list[str] = []
        if self.source.synthetic:
            notes.append(f"neighbours: {self.source.label}")
        if "RANDOM" in self.net.label:
            notes.append(f"weights: {self.net.label}")
        face = getattr(res, "face", None)
        if face is not None:
            notes.append(f"face: {face.choice}, edited at {face.size} px")
        info = getattr(res, "info", {})
        notes += [str(n) for n in info.get("notes", [])]
        if info.get("components"):
            notes.append("components: " + ", ".join(f"{c} {w:g}" for c, w in info["components"].items() if w))
        return notes

    def _observe_pace(self, s: Settings, res: Any, events: JobProgress, t0: float) -> None:
        """The pace of what really ran (the face's working size was a guess before)."""
        face = getattr(res, "face", None)
        work = getattr(res, "info", {}).get("pixel_iterations") or (
            s.iterations * (face.size ** 2 if face is not None else s.height * s.width))
        key, _, strengths, _ = self._plan(s)
        self.pace.observe_prep(key, events.marks["first"] - t0)
        self.pace.observe_iterations(events.marks["last"] - events.marks["first"], work * events.inverted_share(),
                                     strengths)


def unknown_attribute_error(name: str) -> Exception:
    from dfi_engine.errors import InputError

    return InputError(f"Unknown attribute {name!r}.", "Run 'dfi attributes'.")


def _look(look: Any, reused: bool, t0: float) -> dict[str, Any]:
    """An engine Preview as the wire's preview message fields (without ``final``)."""
    return {"kind": look.kind, "strength": float(look.strength), "box": [int(v) for v in look.box],
            "image": _wire(np.asarray(look.image)[..., :3], "RGB8"), "session_reused": reused,
            "seconds": round(time.perf_counter() - t0, 3)}
