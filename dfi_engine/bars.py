"""Progress bars that fit where they go: tqdm on a terminal, plain lines every few seconds elsewhere.

A redirected tqdm (a log, CI, ``2>file``) writes every redraw with carriage returns; a long
job then leaves tens of kilobytes of bar fragments. Off a terminal the same counts are printed
as one line per ``EVERY`` seconds, and the last.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

EVERY = 5.0  # seconds between lines off a terminal


class Lines:
    """tqdm's counting surface (update, close, iteration, a context manager) as plain lines on stderr."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, disable: bool = False, **_: Any) -> None:
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total  # type: ignore
        self.n, self.start, self.last = initial, time.monotonic(), time.monotonic()
        self.said: float | None = None

    def _say(self) -> None:
        if self.said == self.n:
            return
        self.said = self.n
        of = f"/{self.total:g}" if self.total else ""
        print(f"{self.desc + ': ' if self.desc else ''}{self.n:g}{of} {self.unit} "
              f"({time.monotonic() - self.start:.0f} s)", file=sys.stderr, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self.last >= EVERY:
            self.last = time.monotonic()
            self._say()

    def close(self) -> None:
        if not self.disable:
            self._say()
        self.disable = True

    def __iter__(self) -> Iterator:
        for x in self.iterable or ():
            yield x
            self.update(1)
        self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(iterable: Iterable | None = None, **kw: Any) -> Any:
    """``tqdm(iterable, **kw)`` on a terminal, :class:`Lines` elsewhere (same arguments)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, **kw)
    return Lines(iterable, **kw)
