"""The table ``dfi bench`` prints."""

from __future__ import annotations

from typing import Any


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
        f"compute mode of the other sections: {r.get('compute_mode', 'fp32')}",
        "",
    ]
    if r.get("compute"):
        from .compute import format_compute

        lines += [*format_compute(r["compute"]), ""]
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
                rejected = f", {x['rejected_steps']} rejected" if "rejected_steps" in x else ""
                lines.append(f"  {label}: {_fmt_s(x['seconds'])}, {x['evaluations']} evals{rejected} "
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
    for name in ("presets", "highres"):
        x = r.get(name)
        if x and "status" in x:
            lines += [f"{name}: {x['status']}", ""]
        elif x and name == "presets":
            from .presets import format_presets

            lines += [*format_presets(x), ""]
        elif x:
            from .highres import format_highres

            lines += [format_highres(x), ""]
    m = r["memory"]
    lines.append(f"Peak memory: RSS {_fmt_bytes(m['peak_rss_bytes'])}, CUDA {_fmt_bytes(m['peak_cuda_bytes'])}; "
                 + ", ".join(f"{k} RSS {_fmt_bytes(v['peak_rss_bytes'])}" for k, v in m["sections"].items()))
    t = r.get("targets", {})
    if t:
        lines.append("Targets: " + "; ".join(f"{k}: {v}" for k, v in t.items()))
    lines.append(f"Total {r['total_seconds']:.1f} s")
    return "\n".join(lines)
