"""The engine's speed sections: reconstruction per iteration, feature extraction, optimiser baselines.

FLOP convention: the forward FLOPs are counted from the network's own
convolutions (2·Cin·Cout·9 per output pixel; 28.8 GFLOP at 200×200 through
conv5_1). One reconstruction iteration = 2 × forward: the backward pass
computes only the gradient w.r.t. the input (weights are frozen), which costs
about one forward; no weight gradients.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from typing import Any

from .measure import Clock, forward_flops
from .plan import Plan, size_name

# The speed sections time the original's problem (plain pixels, TV on the image, absolute λ) so that
# SciPy's L-BFGS-B and torch.optim.LBFGS minimise exactly the same objective as ours.
PIXELS = {"levels": 1, "tv_on": "image", "tv_weight": 0.001, "tv_relative": False, "chroma_weight": 0.0}


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
    from .baseline import loss_and_grad

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
            cfg = ReconstructConfig(iterations=n + 1, **PIXELS)
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
    cfg = ReconstructConfig(iterations=iterations, optimizer=optimizer, **PIXELS)
    t0 = clock.mark()
    final = None
    stats: dict[str, Any] = {}
    try:
        _, losses = reconstruct(net, x, targets, cfg, on_iteration=progress, cancel=lambda: state["stop"], stats=stats)
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
    if "rejected" in stats:  # trial points the lazy backtracking rejected: evaluations an exact search might save
        out["rejected_steps"] = int(stats["rejected"].sum())
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

    from .baseline import make_fun, scipy_lbfgsb

    cfg = ReconstructConfig(iterations=500, **PIXELS)
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
    xr, lr = reconstruct(net, x, targets, ReconstructConfig(iterations=2, **PIXELS))
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
        from . import daemon as bd
    except ImportError as e:  # the daemon/client modules are missing in this checkout
        return {"status": f"n/a (daemon not available: {e})"}
    return bd.run(args, log, cuda)
