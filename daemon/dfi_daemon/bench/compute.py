"""``dfi bench`` section *compute*: every compute mode and thread count against the float32 path, in one run.

Timings alternate between the modes, repeat after repeat, so a load burst on a
shared machine hits them alike; each figure is a ratio to float32 measured in the
same rounds. A faster mode only counts if the optimisation does not suffer, so each
mode also runs the same L-BFGS problem for the same iterations, and the result is
scored with the float32 objective: ``objective ratio`` > 1 means it got less far; and once
more for as many iterations as it runs in float32's time (``same time``).
Feature extraction is timed under ``no_grad`` (what the engine uses) and
``inference_mode``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .plan import Plan, size_name
from .speed import PIXELS, _photo_and_targets

MODES = ("fp32", "channels-last", "bf16", "channels-last+bf16")


def _fwd_bwd(torch: Any, net: Any, x: Any, targets: list[Any]) -> Callable[[], None]:
    from dfi_engine.reconstruct import feature_loss

    def run() -> None:
        z = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(feature_loss(net, z, targets).sum(), z)
        float(g[0, 0, 0, 0])  # wait for it (a GPU runs asynchronously)

    return run


def _rounds(fns: dict[str, Callable[[], None]], repeats: int, setup: Callable[[str], None]) -> dict[str, float]:
    """Median seconds of each function, timed in alternating rounds after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            setup(name)
            t0 = time.perf_counter()
            fn()
            if r:  # round 0 warms up (oneDNN picks and caches its kernels per layout and dtype)
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _objective_reached(torch: Any, net: Any, x: Any, targets: list[Any], mode: str, iterations: int) -> float:
    from dfi_engine.compute import set_compute
    from dfi_engine.reconstruct import ReconstructConfig, objective, reconstruct

    cfg = ReconstructConfig(iterations=iterations, **PIXELS)
    set_compute(net, mode)
    z, _ = reconstruct(net, x, targets, cfg)
    set_compute(net, "fp32")
    with torch.no_grad():
        return float(objective(net, z, targets, cfg.tv_weight, cfg.tv_beta).sum())


def bench_compute(torch: Any, net: Any, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    from dfi_engine.compute import set_compute
    from dfi_engine.features import mean_features
    from dfi_engine.synthetic import faces

    modes = [m for m in MODES if net.device.type == "cpu" or "bf16" not in m or torch.cuda.is_bf16_supported()]
    out: dict[str, Any] = {"modes": modes, "repeats": plan.compute_repeats, "sizes": []}
    for hw in plan.compute_sizes:
        x, targets = _photo_and_targets(torch, net, hw, 1)
        fb = _fwd_bwd(torch, net, x, targets)
        secs = _rounds({m: fb for m in modes}, plan.compute_repeats, lambda m: set_compute(net, m))
        row: dict[str, Any] = {"size": size_name(hw), "fwd_bwd_s": secs,
                               "time_ratio": {m: secs[m] / secs["fp32"] for m in modes}}
        log(f"compute {size_name(hw)}: " + ", ".join(f"{m} {row['time_ratio'][m]:.2f}x" for m in modes))
        reached = {m: _objective_reached(torch, net, x, targets, m, plan.compute_iterations) for m in modes}
        row["iterations"] = plan.compute_iterations
        row["objective"] = reached
        row["objective_ratio"] = {m: reached[m] / reached["fp32"] for m in modes}
        # in the time fp32 takes for its iterations, a faster mode runs more: what does it reach then?
        its = {m: min(3 * plan.compute_iterations, round(plan.compute_iterations / row["time_ratio"][m]))
               for m in modes}
        row["same_time_iterations"] = its
        row["same_time_objective_ratio"] = {
            m: (_objective_reached(torch, net, x, targets, m, its[m]) / reached["fp32"]
                if its[m] > plan.compute_iterations else row["objective_ratio"][m]) for m in modes}
        out["sizes"].append(row)
    set_compute(net, "fp32")

    # threads: the same fp32 forward+backward with one thread and with all of them
    if net.device.type == "cpu" and torch.get_num_threads() > 1:
        n = torch.get_num_threads()
        x, targets = _photo_and_targets(torch, net, plan.compute_sizes[0], 1)
        fb = _fwd_bwd(torch, net, x, targets)
        secs = _rounds({"1": fb, str(n): fb}, plan.compute_repeats, lambda k: torch.set_num_threads(int(k)))
        torch.set_num_threads(n)
        out["threads"] = {"size": size_name(plan.compute_sizes[0]), "seconds": secs, "ratio_all_to_one": secs[str(n)]
                          / secs["1"]}

    # feature extraction: no_grad (the engine's) against inference_mode
    side = plan.compute_sizes[0][0]
    images = faces(5, 2 * plan.k, False, side)

    def extract_with(ctx: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            with ctx():
                mean_features(net, images, batch_size=plan.feature_batch)
        return run

    secs = _rounds({"no_grad": extract_with(torch.no_grad), "inference_mode": extract_with(torch.inference_mode)},
                   max(1, plan.compute_repeats // 2), lambda _: None)
    out["features"] = {"images": len(images), "size": f"{side}x{side}", "seconds": secs,
                       "ratio_inference_mode": secs["inference_mode"] / secs["no_grad"]}
    return out


def format_compute(c: dict[str, Any]) -> list[str]:
    lines = [f"Compute modes (ratios to fp32 in the same alternating rounds, {c['repeats']} repeats; objective = "
             "float32 loss reached in the same L-BFGS iterations, > 1 = less far):",
             f"  {'size':>9} {'mode':>20} {'fwd+bwd':>9} {'time':>6} {'objective':>10} {'same time':>18}"]
    for row in c["sizes"]:
        for m in c["modes"]:
            lines.append(f"  {row['size']:>9} {m:>20} {row['fwd_bwd_s'][m] * 1000:7.0f}ms {row['time_ratio'][m]:5.2f}x "
                         f"{row['objective_ratio'][m]:9.4f}x  {row['same_time_objective_ratio'][m]:9.4f}x "
                         f"({row['same_time_iterations'][m]} its)  (fp32: {row['iterations']} its)")
    if "threads" in c:
        t = c["threads"]
        lines.append(f"  threads at {t['size']}: all/one = {t['ratio_all_to_one']:.2f}x "
                     f"({', '.join(f'{k}: {v * 1000:.0f} ms' for k, v in t['seconds'].items())})")
    f = c["features"]
    lines.append(f"  features of {f['images']} images at {f['size']}: inference_mode/no_grad = "
                 f"{f['ratio_inference_mode']:.2f}x")
    return lines
