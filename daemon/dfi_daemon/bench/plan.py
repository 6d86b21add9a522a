"""What ``dfi bench`` measures: sizes, iterations and sections, from ``--quick``, the device and options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

DEFAULT_SIZES = "200x200,512x512,1000x800"
REF_PIXELS = 200 * 200
SECTIONS = ("compute", "reconstruction", "features", "baseline", "torch-lbfgs", "daemon", "presets", "highres")
SLOW_SECTIONS = ("presets", "highres")  # real features and real photos: left out of --quick


@dataclass
class Plan:
    """What to measure; ``--quick`` and the device pick the defaults, options override them."""

    sizes: list[tuple[int, int]]
    iterations: int
    min_iterations: int
    scale_iterations: bool
    batches: list[int]
    batch_max_pixels: int
    k: int
    feature_size: int
    feature_batch: int
    baseline_size: tuple[int, int]
    baseline_iterations: int
    baseline_factor: float
    baseline_repeats: int
    matmul_n: int
    skip: set[str]
    compute_sizes: list[tuple[int, int]]
    compute_repeats: int
    compute_iterations: int

    def iterations_at(self, h: int, w: int) -> int:
        """Timed iterations at h×w: ``iterations`` at 200×200, proportionally fewer above (never more)."""
        if not self.scale_iterations:
            return self.iterations
        return max(self.min_iterations, min(self.iterations, round(self.iterations * REF_PIXELS / (h * w))))


def choose(value: str | None, choices: tuple[str, ...], flag: str, sep: str = ",") -> list[str] | None:
    """The items of a list option, each one of ``choices`` (else a one-line exit); None if it is not given."""
    if not value:
        return None
    items = [s.strip() for s in value.split(sep) if s.strip()]
    unknown = sorted(set(items) - set(choices))
    if unknown:
        raise SystemExit(f"dfi bench: unknown {flag} {unknown}; choose from {(sep + ' ').join(choices)}")
    return items


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x512") from None
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides must be at least 32 px")
    return h, w


def size_name(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def make_plan(args: argparse.Namespace, cuda: bool) -> Plan:
    """Defaults: a quick smoke run, a few-minute CPU run, or a thorough GPU run."""
    if args.quick:
        d = dict(sizes="48x48", iterations=2, min_iterations=2, batches="1,2", batch_max_pixels=0, k=2,
                 feature_size=48, baseline_size="48x48", baseline_iterations=4, baseline_repeats=1, matmul_n=1024,
                 compute_sizes="48x48", compute_repeats=1, compute_iterations=2)
    elif cuda:
        d = dict(sizes=DEFAULT_SIZES, iterations=20, min_iterations=10, batches="1,2,4", batch_max_pixels=0,
                 k=100, feature_size=200, baseline_size="200x200", baseline_iterations=100, baseline_repeats=3,
                 matmul_n=8192, compute_sizes="200x200,512x512", compute_repeats=10, compute_iterations=100)
    else:  # 2-core CPU: a few minutes in all; 1000x800 costs tens of seconds per evaluation
        d = dict(sizes=DEFAULT_SIZES, iterations=2, min_iterations=1, batches="1,2,4", batch_max_pixels=REF_PIXELS,
                 k=25, feature_size=200, baseline_size="200x200", baseline_iterations=20, baseline_repeats=1,
                 matmul_n=2048, compute_sizes="128x128,200x200", compute_repeats=5, compute_iterations=30)

    def pick(name: str) -> Any:
        v = getattr(args, name)
        return d[name] if v is None else v

    skip = set(choose(args.skip, SECTIONS, "--skip") or ())
    if args.quick:
        skip |= set(SLOW_SECTIONS)
    try:
        sizes = [parse_size(s) for s in str(pick("sizes")).split(",") if s.strip()]
        baseline_size = parse_size(str(pick("baseline_size")))
        compute_sizes = [parse_size(s) for s in str(pick("compute_sizes")).split(",") if s.strip()]
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"dfi bench: {e}") from None
    return Plan(
        sizes=sizes,
        iterations=int(pick("iterations")),
        min_iterations=int(pick("min_iterations")),
        scale_iterations=not args.no_scale,
        batches=[int(b) for b in str(pick("batches")).split(",") if b.strip()],
        batch_max_pixels=int(pick("batch_max_pixels")),
        k=int(pick("k")),
        feature_size=int(pick("feature_size")),
        feature_batch=args.feature_batch,
        baseline_size=baseline_size,
        baseline_iterations=int(pick("baseline_iterations")),
        baseline_factor=args.baseline_factor,
        baseline_repeats=int(pick("baseline_repeats")),
        matmul_n=int(pick("matmul_n")),
        skip=skip,
        compute_sizes=compute_sizes,
        compute_repeats=int(pick("compute_repeats")),
        compute_iterations=int(pick("compute_iterations")),
    )
