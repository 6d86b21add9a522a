"""``dfi bench``: how fast the engine is, how close to the hardware, and against the original's optimiser.

One command measures, on one device and in one process:

* the machine's peak (a large matmul, in the dtype the engine computes in);
* per-iteration reconstruction time at several sizes and batch sizes
  (strengths), as a bare forward+backward and inside the optimiser, so the
  optimiser's own overhead is visible, with the fraction of peak achieved;
* neighbour-set feature extraction (K source + K target images);
* a baseline: SciPy's L-BFGS-B on the host (DFI's default backend) and
  ``torch.optim.LBFGS`` against our device L-BFGS, as time to reach the same
  objective on the same image and target;
* end-to-end edit latency through a real daemon process, cold and warm;
* peak host memory (RSS) and peak CUDA memory.

FLOP convention: the forward FLOPs are counted from the network's own
convolutions (2·Cin·Cout·9 per output pixel; 28.8 GFLOP at 200×200 through
conv5_1). One reconstruction iteration = 2 × forward: the backward pass
computes only the gradient w.r.t. the input (weights are frozen), which costs
about one forward; no weight gradients. Pooling, ReLU, the loss and the
optimiser's vector algebra are not counted (they are memory-bound).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SIZES = "200x200,512x512,1000x800"
REF_PIXELS = 200 * 200
SECTIONS = ("reconstruction", "features", "baseline", "torch-lbfgs", "daemon")


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

    def iterations_at(self, h: int, w: int) -> int:
        """Timed iterations at h×w: ``iterations`` at 200×200, proportionally fewer above (never more)."""
        if not self.scale_iterations:
            return self.iterations
        return max(self.min_iterations, min(self.iterations, round(self.iterations * REF_PIXELS / (h * w))))


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
                 feature_size=48, baseline_size="48x48", baseline_iterations=4, baseline_repeats=1, matmul_n=1024)
    elif cuda:
        d = dict(sizes=DEFAULT_SIZES, iterations=20, min_iterations=10, batches="1,2,4", batch_max_pixels=0,
                 k=100, feature_size=200, baseline_size="200x200", baseline_iterations=100, baseline_repeats=3,
                 matmul_n=8192)
    else:  # 2-core CPU: a few minutes in all; 1000x800 costs tens of seconds per evaluation
        d = dict(sizes=DEFAULT_SIZES, iterations=2, min_iterations=1, batches="1,2,4", batch_max_pixels=REF_PIXELS,
                 k=25, feature_size=200, baseline_size="200x200", baseline_iterations=20, baseline_repeats=1,
                 matmul_n=2048)

    def pick(name: str) -> Any:
        v = getattr(args, name)
        return d[name] if v is None else v

    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        raise SystemExit(f"dfi bench: unknown --skip {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    try:
        sizes = [parse_size(s) for s in str(pick("sizes")).split(",") if s.strip()]
        baseline_size = parse_size(str(pick("baseline_size")))
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
    )


# ---------------------------------------------------------------------------- timing and memory
class Clock:
    """Timestamps that do not synchronise a GPU: CUDA events there, perf_counter on the CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self) -> Any:
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def seconds(self, a: Any, b: Any) -> float:
        """Time between two marks (synchronises first on a GPU)."""
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1000.0
        return b - a


def _status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Memory:
    """Peak RSS (and CUDA memory) per section: Linux lets a process reset its RSS high-water mark."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.torch = torch
        self.cuda = cuda
        self.sections: dict[str, dict[str, int | None]] = {}

    def start(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def stop(self, name: str) -> None:
        peak = _status_bytes("VmHWM")
        cuda = int(self.torch.cuda.max_memory_allocated()) if self.cuda else None
        self.sections[name] = {"peak_rss_bytes": peak, "peak_cuda_bytes": cuda}

    def summary(self) -> dict[str, Any]:
        rss = [v["peak_rss_bytes"] for v in self.sections.values() if v["peak_rss_bytes"]]
        cuda = [v["peak_cuda_bytes"] for v in self.sections.values() if v["peak_cuda_bytes"] is not None]
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {
            "peak_rss_bytes": max([*rss, ru]),
            "peak_cuda_bytes": max(cuda) if cuda else None,
            "sections": self.sections,
        }


# ---------------------------------------------------------------------------- FLOPs and peak
def forward_flops(net: Any, h: int, w: int) -> float:
    """FLOPs of one forward pass of ``net`` (its convolutions) on an h×w image."""
    total = 0.0
    for step in net._plan:
        if step == "pool":
            h, w = h // 2, w // 2
            continue
        conv = net.convs[step]
        kh, kw = conv.kernel_size
        total += 2.0 * conv.in_channels * conv.out_channels * kh * kw * h * w
    return total


def measure_peak(torch: Any, device: Any, n: int, clock: Clock) -> dict[str, Any]:
    """Best-of-10 n×n matmul throughput, in the engine's dtype (and bf16 on a GPU)."""
    out: dict[str, Any] = {"matmul_n": n}
    dtypes = [("float32", torch.float32)] + ([("bfloat16", torch.bfloat16)] if clock.cuda else [])
    for name, dt in dtypes:
        a = torch.randn(n, n, device=device, dtype=dt)
        b = torch.randn(n, n, device=device, dtype=dt)
        (a @ b).sum()
        best = math.inf
        for _ in range(10):
            t0 = clock.mark()
            a @ b
            best = min(best, clock.seconds(t0, clock.mark()))
        out[f"{name}_gflops"] = 2.0 * n**3 / best / 1e9
        del a, b
    if clock.cuda:
        out["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        out["tf32_conv"] = bool(torch.backends.cudnn.allow_tf32)
    return out


# ---------------------------------------------------------------------------- workloads
def _photo_and_targets(torch: Any, net: Any, hw: tuple[int, int], batch: int, k_w: int = 4,
                       strength: float = 1.0) -> tuple[Any, list[Any]]:
    """A synthetic face at h×w and non-trivial targets φ(x) + δ·w for ``batch`` strengths."""
    import numpy as np

    from dfi_engine.attribute import attribute_vector, target_features
    from dfi_engine.features import extract
    from dfi_engine.synthetic import faces

    h, w = hw
    side = max(h, w)

    def crop(ims: list[np.ndarray]) -> list[np.ndarray]:
        return [im[:h, :w] for im in ims]

    photo = crop(faces(0, 1, False, side))[0]
    x = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float().to(net.device)
    vec = attribute_vector(net, crop(faces(1, k_w, False, side)), crop(faces(2, k_w, True, side)), batch_size=4)
    strengths = [strength * (1 + i) / batch for i in range(batch)]
    return x, target_features(extract(net, x), vec, strengths)


def _fb_fn(net: Any, targets: list[Any], cfg: Any) -> Callable[[Any], Any]:
    from .bench_baseline import loss_and_grad

    return lambda z: loss_and_grad(net, z, targets, cfg.tv_weight, cfg.tv_beta)


def bench_reconstruction(torch: Any, net: Any, plan: Plan, clock: Clock, peak_gflops: float,
                         log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    """Per-iteration time: bare forward+backward, and inside the device L-BFGS as ``reconstruct`` runs it.

    Overhead = (iteration time − forward/backward time) ÷ forward/backward time, both taken from the
    same optimiser iterations. "Alone" = one iteration of the same optimiser on a trivial objective of
    the same shape: its pure cost, immune to load bursts on a shared machine.
    """
    from dfi_engine import lbfgs
    from dfi_engine.reconstruct import ReconstructConfig

    rows: list[dict] = []
    skipped: list[dict] = []
    for hw in plan.sizes:
        h, w = hw
        for b in plan.batches:
            if b > 1 and plan.batch_max_pixels and h * w > plan.batch_max_pixels:
                skipped.append({"size": size_name(hw), "batch": b,
                                "reason": f"batch>1 only up to {plan.batch_max_pixels} px (--batch-max-pixels)"})
                continue
            n = plan.iterations_at(h, w)
            log(f"reconstruction {size_name(hw)} batch {b}: {n} iteration(s)")
            x, targets = _photo_and_targets(torch, net, hw, b)
            cfg = ReconstructConfig(iterations=n + 1)
            fb = _fb_fn(net, targets, cfg)
            z = x.expand(b, -1, -1, -1).contiguous()
            # Inside the optimiser: the same call ``reconstruct`` makes, with the objective wrapped so
            # that the time in forward+backward and the time per iteration come from the same
            # iterations (robust on a shared machine, where separate runs see different loads).
            marks: list[Any] = []
            fn_spans: list[tuple[Any, Any]] = []

            def timed_fn(v: Any, fb: Callable[[Any], Any] = fb, spans: list = fn_spans) -> Any:
                t0 = clock.mark()
                r = fb(v)
                spans.append((t0, clock.mark()))
                return r

            lbfgs.minimize(timed_fn, z, cfg.iterations, 0.0, 255.0, cfg.history, cfg.first_step,
                           callback=lambda i, _l, marks=marks: marks.append(clock.mark()))
            opt = [clock.seconds(a, c) for a, c in zip(marks, marks[1:])]
            in_fn = [clock.seconds(a, c) for a, c in fn_spans[2:]]  # the evaluations of those iterations
            # the optimiser alone: same shapes, a trivial quadratic instead of the network
            c = z.detach().clone().add_(1.0)
            alone: list[Any] = []
            lbfgs.minimize(lambda v, c=c: (0.5 * (v - c).square().flatten(1).sum(1), v - c), z, n + 1, 0.0, 255.0,
                           cfg.history, cfg.first_step, callback=lambda i, _l, alone=alone: alone.append(clock.mark()))
            t_alone = statistics.median(clock.seconds(a, c) for a, c in zip(alone, alone[1:]))
            # bare forward+backward on the same batch, in a loop of its own (warmed up by the run above)
            times = []
            for _ in range(n):
                t0 = clock.mark()
                fb(z)
                times.append(clock.seconds(t0, clock.mark()))
            t_fb, t_opt = statistics.median(times), statistics.median(opt)
            gflop = 2 * forward_flops(net, h, w) * b / 1e9
            rows.append({
                "size": size_name(hw), "height": h, "width": w, "batch": b, "iterations": n,
                "fwd_bwd_s": t_fb, "fwd_bwd_min_s": min(times),
                "optimizer_iteration_s": t_opt, "optimizer_iteration_min_s": min(opt),
                "fwd_bwd_in_optimizer_s": statistics.median(in_fn),
                "overhead_fraction": (sum(opt) - sum(in_fn)) / sum(in_fn),
                "optimizer_alone_s": t_alone,
                "optimizer_alone_fraction": t_alone / t_fb,
                "per_strength_s": t_opt / b,
                "gflop_per_iteration": gflop,
                "achieved_gflops": gflop / t_opt,
                "fraction_of_peak": gflop / t_opt / peak_gflops,
            })
            del x, targets, z, c
    return rows, skipped


def bench_features(torch: Any, net: Any, plan: Plan, clock: Clock, peak_gflops: float) -> dict[str, Any]:
    """w = mean φ(target) − mean φ(source) over K + K images (generated beforehand, not timed)."""
    from dfi_engine.attribute import attribute_vector
    from dfi_engine.synthetic import faces

    s = plan.feature_size
    src, tgt = faces(11, plan.k, False, s), faces(12, plan.k, True, s)
    attribute_vector(net, src[:1], tgt[:1], batch_size=1)  # warm-up
    t0 = clock.mark()
    attribute_vector(net, src, tgt, batch_size=plan.feature_batch, shape=(s, s))
    seconds = clock.seconds(t0, clock.mark())
    n = 2 * plan.k
    gflop = forward_flops(net, s, s) * n / 1e9
    return {"k": plan.k, "images": n, "size": f"{s}x{s}", "batch_size": plan.feature_batch, "seconds": seconds,
            "per_image_s": seconds / n, "achieved_gflops": gflop / seconds,
            "fraction_of_peak": gflop / seconds / peak_gflops}


def _run_to_target(torch: Any, net: Any, x: Any, targets: list[Any], optimizer: str, f_star: float,
                   max_evals: int, clock: Clock) -> dict[str, Any]:
    """Run ``reconstruct`` until its loss is <= f_star (or ``max_evals``); time it like the baseline."""
    from dfi_engine.errors import CancelledError
    from dfi_engine.reconstruct import ReconstructConfig, reconstruct

    check_every = 10 if clock.cuda else 1  # reading the loss synchronises a GPU: do it rarely
    marks: list[tuple[Any, Any]] = []
    state = {"stop": False}

    def progress(i: int, n: int, loss: Any) -> None:
        marks.append((clock.mark(), loss.detach().clone()))
        if len(marks) % check_every == 0 and float(torch.stack([m[1] for m in marks[-check_every:]]).min()) <= f_star:
            state["stop"] = True

    # ours makes 1 evaluation before its first iteration; torch.optim's callback fires per evaluation
    iterations = max_evals - 1 if optimizer == "device" else max_evals
    cfg = ReconstructConfig(iterations=iterations, optimizer=optimizer)
    t0 = clock.mark()
    final = None
    try:
        _, losses = reconstruct(net, x, targets, cfg, progress=progress, cancel=lambda: state["stop"])
        final = float(losses.sum())
    except CancelledError:
        pass
    clock.sync()
    losses_list = [float(m[1].sum()) for m in marks]
    first = next((i for i, f in enumerate(losses_list) if f <= f_star), None)
    offset = 1 if optimizer == "device" else 0
    out: dict[str, Any] = {
        "reached": first is not None,
        "best_loss": min(losses_list) if losses_list else None,
        "final_loss": final if final is not None else losses_list[-1],
        "evaluations_run": len(marks) + offset,
    }
    if first is not None:
        out["seconds"] = clock.seconds(t0, marks[first][0])
        out["evaluations"] = first + 1 + offset
    else:
        out["seconds"] = clock.seconds(t0, marks[-1][0])
    return out


def bench_baseline(torch: Any, net: Any, plan: Plan, clock: Clock, log: Callable[[str], None]) -> dict[str, Any]:
    """SciPy L-BFGS-B for N iterations gives f*; then how long ours and torch.optim.LBFGS take to reach it."""
    import numpy as np

    from dfi_engine.reconstruct import ReconstructConfig, objective, reconstruct

    from .bench_baseline import make_fun, scipy_lbfgsb

    cfg = ReconstructConfig()
    x, targets = _photo_and_targets(torch, net, plan.baseline_size, 1, k_w=8)
    runs = [("ours", "device")] + ([] if "torch-lbfgs" in plan.skip else [("torch_lbfgs", "torch")])
    scipy_runs: list[Any] = []
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in runs}
    f_star = math.nan
    max_evals = 4
    for rep in range(plan.baseline_repeats):  # alternate the optimisers so a load burst hits all alike
        log(f"baseline {size_name(plan.baseline_size)} ({rep + 1}/{plan.baseline_repeats}): SciPy L-BFGS-B, "
            f"{plan.baseline_iterations} iterations")
        sp = scipy_lbfgsb(net, x, targets, plan.baseline_iterations, cfg.tv_weight, cfg.tv_beta, cfg.history,
                          sync=clock.sync)
        if rep == 0:
            f_star = sp.loss
            max_evals = max(4, math.ceil(plan.baseline_factor * sp.evaluations))
        scipy_runs.append((sp, sp.trace.first_reach(f_star)))
        for name, opt in runs:
            log(f"baseline: {name} to reach f*={f_star:.6g} (at most {max_evals} evaluations)")
            results[name].append(_run_to_target(torch, net, x, targets, opt, f_star, max_evals, clock))
    sp0, reach0 = scipy_runs[0]
    scipy_s = statistics.median(r[0] if r else s.seconds for s, r in scipy_runs)
    scipy_evals = reach0[1] if reach0 else sp0.evaluations
    out: dict[str, Any] = {
        "size": size_name(plan.baseline_size),
        "repeats": plan.baseline_repeats,
        "target": "phi(x) + 1.0*w, w from 8+8 synthetic faces (no beard -> beard), scaling none; start x",
        "scipy": {"iterations": sp0.iterations, "evaluations": sp0.evaluations,
                  "seconds_total": statistics.median(s.seconds for s, _ in scipy_runs),
                  "seconds": scipy_s, "evaluations_to_f_star": scipy_evals,
                  "final_loss": f_star, "initial_loss": sp0.trace.losses[0],
                  "fwd_bwd_fraction": (sum(s.fwd_bwd_seconds for s, _ in scipy_runs)
                                       / sum(s.seconds for s, _ in scipy_runs)),
                  "seconds_per_evaluation": statistics.median(
                      (r[0] / r[1]) if r else s.seconds / s.evaluations for s, r in scipy_runs),
                  "message": sp0.message},
    }
    for name, _ in runs:
        rs = results[name]
        r = dict(rs[0])
        r["reached"] = all(v["reached"] for v in rs)
        r["seconds"] = statistics.median(v["seconds"] for v in rs)
        r["seconds_per_evaluation"] = statistics.median(v["seconds"] / v.get("evaluations", v["evaluations_run"])
                                                        for v in rs)
        r["ratio_time_vs_scipy"] = r["seconds"] / scipy_s if r["reached"] else None
        r["ratio_evaluations_vs_scipy"] = r["evaluations"] / scipy_evals if r["reached"] else None
        out[name] = r
    # the same objective on both paths: SciPy's function vs the engine's, at the same points
    fun = make_fun(net, tuple(x.shape), targets, cfg.tv_weight, cfg.tv_beta)
    v0 = x.detach().double().cpu().numpy().ravel()
    f_scipy0, g_scipy0 = fun(v0)
    with torch.no_grad():
        f_engine0 = float(objective(net, x, targets, cfg.tv_weight, cfg.tv_beta).sum())
    xr, lr = reconstruct(net, x, targets, ReconstructConfig(iterations=2))
    f_scipy_r, _ = fun(xr.detach().double().cpu().numpy().ravel())
    f_engine_r = float(lr.sum())
    g_engine0 = _fb_fn(net, targets, cfg)(x)[1].double().cpu().numpy().ravel()
    out["check"] = {
        "loss_engine_at_x0": f_engine0, "loss_scipy_at_x0": f_scipy0,
        "rel_diff_at_x0": abs(f_engine0 - f_scipy0) / max(abs(f_engine0), 1e-30),
        "loss_engine_at_reconstruct_x": f_engine_r, "loss_scipy_at_reconstruct_x": f_scipy_r,
        "rel_diff_at_reconstruct_x": abs(f_engine_r - f_scipy_r) / max(abs(f_engine_r), 1e-30),
        "grad_rel_diff_at_x0": float(np.linalg.norm(g_engine0 - g_scipy0) / max(np.linalg.norm(g_engine0), 1e-30)),
    }
    return out


def bench_daemon(args: argparse.Namespace, log: Callable[[str], None], cuda: bool) -> dict[str, Any]:
    """End-to-end edit latency through a freshly started daemon process: first request (cold), then warm."""
    try:
        from . import bench_daemon as bd
    except ImportError as e:  # the daemon/client modules are missing in this checkout
        return {"status": f"n/a (daemon not available: {e})"}
    return bd.run(args, log, cuda)


# ---------------------------------------------------------------------------- report
def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1:
        return f"{v:.2f} s"
    return f"{v * 1e3:.1f} ms"


def _fmt_bytes(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f} MiB"


def format_table(r: dict[str, Any]) -> str:
    """The report as plain-text tables (the same content as the JSON, rounded)."""
    pk = r["peak"]
    lines = [
        f"device: {r['device']['name']} ({r['device']['type']}, {r['device']['threads']} threads)   "
        f"torch {r['torch']}   weights: {r['weights']['mode']} ({r['weights']['spec']})",
        f"peak (matmul {pk['matmul_n']}^2, float32, best of start/end): {pk['float32_gflops']:.1f} GFLOP/s"
        + (f"; bfloat16: {pk['bfloat16_gflops']:.1f} GFLOP/s" if "bfloat16_gflops" in pk else ""),
        f"FLOP convention: {r['flop_convention']}",
        "",
    ]
    rec = r.get("reconstruction")
    if rec:
        hdr = (f"{'size':>9} {'B':>2} {'its':>3} {'fwd+bwd':>10} {'iteration':>10} {'its f+b':>10} {'overhead':>8} "
               f"{'L-BFGS alone':>12} {'per strength':>12} {'GFLOP/it':>8} {'GFLOP/s':>8} {'of peak':>7}")
        lines += ["Reconstruction, per iteration (median). fwd+bwd: a bare loop; iteration: inside the device "
                  "L-BFGS; its f+b: the forward+backward within those iterations; overhead = (iteration - its f+b) "
                  "/ its f+b; L-BFGS alone: one iteration on a trivial objective", hdr, "-" * len(hdr)]
        for x in rec:
            lines.append(
                f"{x['size']:>9} {x['batch']:>2} {x['iterations']:>3} {_fmt_s(x['fwd_bwd_s']):>10} "
                f"{_fmt_s(x['optimizer_iteration_s']):>10} {_fmt_s(x['fwd_bwd_in_optimizer_s']):>10} "
                f"{x['overhead_fraction'] * 100:>7.1f}% {_fmt_s(x['optimizer_alone_s']):>12} "
                f"{_fmt_s(x['per_strength_s']):>12} {x['gflop_per_iteration']:>8.1f} {x['achieved_gflops']:>8.1f} "
                f"{x['fraction_of_peak'] * 100:>6.1f}%")
        for s in r.get("reconstruction_skipped", []):
            lines.append(f"{s['size']:>9} {s['batch']:>2}   skipped: {s['reason']}")
        lines.append("")
    f = r.get("features")
    if f:
        lines.append(f"Features, K={f['k']}+{f['k']} images at {f['size']} (batch {f['batch_size']}): "
                     f"{_fmt_s(f['seconds'])} ({_fmt_s(f['per_image_s'])}/image, {f['achieved_gflops']:.1f} GFLOP/s, "
                     f"{f['fraction_of_peak'] * 100:.1f}% of peak)")
        lines.append("")
    b = r.get("baseline")
    if b:
        sp = b["scipy"]
        lines += [f"Baseline at {b['size']} (median of {b['repeats']}): time to reach SciPy's final objective "
                  f"f*={sp['final_loss']:.6g} (from {sp['initial_loss']:.6g})",
                  f"  scipy L-BFGS-B (host float64): {_fmt_s(sp['seconds'])}, {sp['evaluations_to_f_star']} evals "
                  f"({sp['iterations']} iterations; {_fmt_s(sp['seconds_per_evaluation'])}/eval, fwd+bwd "
                  f"{sp['fwd_bwd_fraction'] * 100:.0f}% of its time)"]
        for name, label in (("ours", "ours (device L-BFGS)"), ("torch_lbfgs", "torch.optim.LBFGS")):
            x = b.get(name)
            if not x:
                continue
            if x["reached"]:
                lines.append(f"  {label}: {_fmt_s(x['seconds'])}, {x['evaluations']} evals "
                             f"({_fmt_s(x['seconds_per_evaluation'])}/eval) -> "
                             f"time ratio {x['ratio_time_vs_scipy']:.2f}, eval ratio "
                             f"{x['ratio_evaluations_vs_scipy']:.2f} (÷ scipy)")
            else:
                lines.append(f"  {label}: did not reach f* in {x['evaluations_run']} evals "
                             f"({_fmt_s(x['seconds'])}; best {x['best_loss']:.6g})")
        c = b["check"]
        lines.append(f"  same objective: rel. diff {c['rel_diff_at_x0']:.1e} at x0, "
                     f"{c['rel_diff_at_reconstruct_x']:.1e} at a reconstructed x; grad {c['grad_rel_diff_at_x0']:.1e}")
        lines.append("")
    d = r.get("daemon")
    if d:
        if "status" in d:
            lines.append(f"Daemon end-to-end: {d['status']}")
        else:
            lines.append(f"Daemon end-to-end ({d['request']}): start {_fmt_s(d['startup_s'])}, "
                         f"cold {_fmt_s(d['cold_s'])}, warm {_fmt_s(d['warm_s'])} (median of "
                         f"{len(d['warm_runs'])}); daemon RSS {_fmt_bytes(d['daemon_rss_bytes'])}")
        lines.append("")
    m = r["memory"]
    lines.append(f"Peak memory: RSS {_fmt_bytes(m['peak_rss_bytes'])}, CUDA {_fmt_bytes(m['peak_cuda_bytes'])}; "
                 + ", ".join(f"{k} RSS {_fmt_bytes(v['peak_rss_bytes'])}" for k, v in m["sections"].items()))
    t = r.get("targets", {})
    if t:
        lines.append("Targets: " + "; ".join(f"{k}: {v}" for k, v in t.items()))
    lines.append(f"Total {r['total_seconds']:.1f} s")
    return "\n".join(lines)


def _device_name(torch: Any, device: Any) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Everything ``dfi bench`` measures, as a JSON-ready dict."""
    import torch

    from dfi_engine.weights import load_vgg19

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    plan = make_plan(args, cuda)
    clock = Clock(device)
    mem = Memory(cuda)
    net = load_vgg19(args.weights, device)
    spec = args.weights
    result: dict[str, Any] = {
        "schema": 1,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "options": {k: v for k, v in vars(args).items() if k not in ("func", "command")},
        "device": {"type": device.type, "name": _device_name(torch, device), "threads": torch.get_num_threads(),
                   "cpu_count": os.cpu_count()},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "weights": {"spec": spec, "label": net.label, "mode": spec.split(":")[0]},
        "flop_convention": "forward = sum over convs of 2*Cin*Cout*9*H*W (28.8 GFLOP at 200x200 through conv5_1); "
                           "one iteration = 2 x forward (backward w.r.t. the input only, weights frozen)",
        "forward_gflop_200x200": forward_flops(net, 200, 200) / 1e9,
        "plan": {"sizes": [size_name(s) for s in plan.sizes], "iterations": plan.iterations,
                 "batches": plan.batches, "skip": sorted(plan.skip), "quick": bool(args.quick)},
    }
    log(f"device {result['device']['name']}, weights {net.label}")
    result["peak"] = measure_peak(torch, device, plan.matmul_n, clock)
    peak = result["peak"]["float32_gflops"]

    if "reconstruction" not in plan.skip:
        mem.start()
        result["reconstruction"], result["reconstruction_skipped"] = bench_reconstruction(
            torch, net, plan, clock, peak, log)
        mem.stop("reconstruction")
    if "features" not in plan.skip:
        log(f"features: K={plan.k}+{plan.k} at {plan.feature_size}x{plan.feature_size}")
        mem.start()
        result["features"] = bench_features(torch, net, plan, clock, peak)
        mem.stop("features")
    if "baseline" not in plan.skip:
        mem.start()
        result["baseline"] = bench_baseline(torch, net, plan, clock, log)
        mem.stop("baseline")
    if "daemon" not in plan.skip:
        result["daemon"] = bench_daemon(args, log, cuda)
    result["memory"] = mem.summary()
    # the peak again at the end: on a shared machine either measurement may have hit a busy moment
    again = measure_peak(torch, device, plan.matmul_n, clock)
    result["peak"]["float32_gflops_start"] = peak
    result["peak"]["float32_gflops_end"] = again["float32_gflops"]
    if again["float32_gflops"] > peak:
        for row in [*(result.get("reconstruction") or []), *([result["features"]] if "features" in result else [])]:
            row["fraction_of_peak"] *= peak / again["float32_gflops"]
        result["peak"]["float32_gflops"] = again["float32_gflops"]

    targets: dict[str, Any] = {}
    b = result.get("baseline")
    if b and b["ours"]["reached"]:
        targets["ours <= 0.5 x scipy time"] = bool(b["ours"]["ratio_time_vs_scipy"] <= 0.5)
    rows = result.get("reconstruction") or []
    if rows:
        targets["optimiser overhead < 10% (in-run)"] = bool(max(x["overhead_fraction"] for x in rows) < 0.10)
        targets["optimiser alone < 10% of fwd+bwd"] = bool(max(x["optimizer_alone_fraction"] for x in rows) < 0.10)
    result["targets"] = targets
    result["total_seconds"] = time.perf_counter() - t_start
    return result


def run(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    result = run_bench(args, log)
    print(format_table(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"JSON: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure speed: reconstruction, features, SciPy baseline, daemon latency",
        description="Measure the engine on this machine and write a table and JSON. Defaults depend on the "
                    "device: a few minutes on a 2-core CPU, more sizes/iterations on a GPU; --quick is a "
                    "smoke test (< 30 s). Speed is only measured here, never asserted in tests.")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    p.add_argument("--weights", default="random:0",
                   help="weights to time with (timing does not depend on their values; default random:0)")
    p.add_argument("--sizes", help=f"comma-separated WIDTHxHEIGHT (default {DEFAULT_SIZES})")
    p.add_argument("--iterations", type=int,
                   help="timed iterations at 200x200; larger sizes get proportionally fewer (see --no-scale)")
    p.add_argument("--min-iterations", type=int, help="fewest timed iterations at any size")
    p.add_argument("--no-scale", action="store_true", help="use --iterations at every size")
    p.add_argument("--batches", help="comma-separated numbers of strengths per batch (default 1,2,4)")
    p.add_argument("--batch-max-pixels", type=int,
                   help="measure batches > 1 only up to this many pixels (0 = all; CPU default 40000)")
    p.add_argument("-k", "--k", type=int, help="neighbours per set for feature extraction (GPU default 100, CPU 25)")
    p.add_argument("--feature-size", type=int, help="side of the square neighbour images (default 200)")
    p.add_argument("--feature-batch", type=int, default=8, help="feature extraction batch size")
    p.add_argument("--baseline-size", help="WIDTHxHEIGHT of the baseline comparison (default 200x200)")
    p.add_argument("--baseline-iterations", type=int, help="SciPy L-BFGS-B iterations that define f*")
    p.add_argument("--baseline-factor", type=float, default=3.0,
                   help="ours/torch get at most this many times SciPy's evaluations to reach f*")
    p.add_argument("--baseline-repeats", type=int,
                   help="run the three optimisers this many times, alternating; times are medians")
    p.add_argument("--matmul-n", type=int, help="matrix side for the peak measurement")
    p.add_argument("--daemon-size", type=int, help="side of the square photo sent to the daemon (default 200)")
    p.add_argument("--daemon-iterations", type=int, help="iterations of the daemon edit (GPU 500, CPU 10)")
    p.add_argument("--daemon-k", type=int, help="neighbours per set for the daemon edit (GPU 100, CPU 8)")
    p.add_argument("--daemon-repeats", type=int, default=2, help="warm requests after the cold one")
    p.add_argument("--skip", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (48x48, 2 iterations; < 30 s)")
    p.add_argument("--json", default="out/bench.json", help="where to write the JSON (default out/bench.json)")
    p.set_defaults(func=run)
