"""The one progress and cancel contract, from the engine up to the daemon's worker, the Ray workers and the CLI.

Every layer reports with one :class:`Event` to a :data:`ProgressFn` and asks one :data:`CancelFn`
(named ``cancel`` everywhere) whether to stop. Layers re-scale an event (a stage's share of a
job, two inversions as one) with :meth:`Event.scaled` or :func:`dataclasses.replace`, never by
inventing a new callback shape. The wire's progress messages (msgpack maps) are built from an
event in one place, the daemon's worker; clients read those maps as before.

Standard library only: the engine, the daemon and the plug-in side can all name these types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Event:
    """How far one stage is: ``step`` of ``total`` (any unit; a job-level event uses a fraction of 1.0).

    ``preview`` is what a live preview would show: in the engine a function that renders the current
    result (called only if someone shows it, since rendering costs a colour match); at job level the
    rendered image map. ``message`` is the text a person reads ("coarse (128 px) 40/150"); empty means
    the caller says "stage step/total".
    """

    stage: str
    step: float
    total: float
    message: str = ""
    preview: Any = None

    @property
    def fraction(self) -> float:
        """step / total, clamped to 0..1 (0 when the total is unknown)."""
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    def text(self) -> str:
        """The message, or "stage step/total" when none was given."""
        return self.message or f"{self.stage} {self.step:g}/{self.total:g}"

    def scaled(self, offset: float, scale: float, total: float, message: str = "") -> Event:
        """The same event as a part of a larger count: step -> offset + step·scale out of ``total``."""
        return replace(self, step=offset + self.step * scale, total=total, message=message or self.message)


ProgressFn = Callable[[Event], None]
"""Receives every event; must be cheap (it runs between iterations) and may raise CancelledError."""

CancelFn = Callable[[], bool]
"""``cancel()`` is true once the caller wants the work to stop; checked between iterations and batches."""


def never() -> bool:
    """A :data:`CancelFn` that never cancels."""
    return False


def ignore(event: Event) -> None:
    """A :data:`ProgressFn` that drops every event (e.g. on a Ray worker: the driver counts finished edits)."""


def report(progress: ProgressFn | None, stage: str, step: float, total: float, message: str = "",
           preview: Any = None) -> None:
    """Send one event if anyone listens (the engine's functions take ``progress=None``)."""
    if progress is not None:
        progress(Event(stage, step, total, message, preview))
