"""``dfi bench``: how fast the engine is, how close to the hardware, and against the original's optimiser.

One command measures, on one device and in one process:

* the machine's peak (a large matmul, in the dtype the engine computes in);
* every compute mode (channels-last, bf16) and thread count as ratios to float32 in
  the same rounds, with the objective each reaches (``compute``);
* per-iteration reconstruction time at several sizes and batch sizes
  (strengths), as a bare forward+backward and inside the optimiser, so the
  optimiser's own overhead is visible, with the fraction of peak achieved;
* neighbour-set feature extraction (K source + K target images);
* a baseline: SciPy's L-BFGS-B on the host (DFI's default backend) and
  ``torch.optim.LBFGS`` against our device L-BFGS, as time to reach the same
  objective on the same image and target;
* end-to-end edit latency through a real daemon process, cold and warm;
* with real features (``--real-weights``, vgg16-hed): the time of a default aligned
  face edit by quality preset, as a 128-px face and in a ~1000-px portrait
  (``presets``), and editing at the photo's scale, coarse-to-fine against
  single-scale and the upsampled 128-px change, in time and quality (``highres``);
* peak host memory (RSS) and peak CUDA memory.

``--live`` measures the plug-in's live slider instead (``live``): a preview session's first look, the
instant and refined looks after a slider move, and the full render, through a daemon with real features.

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
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import Clock, Memory, forward_flops, measure_peak
from .plan import DEFAULT_SIZES, SECTIONS, make_plan, size_name
from .report import format_table
from .speed import bench_baseline, bench_daemon, bench_features, bench_reconstruction


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


def _section(name: str, measure: Callable[[], dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    """A section that needs what may be missing (real weights offline, a face found): its failure is reported
    in its place, and the sections measured before it are still written."""
    from dfi_wire.client import DaemonError

    from dfi_engine.errors import DFIError

    try:
        return measure()
    except (DFIError, DaemonError, OSError, RuntimeError, TimeoutError) as e:
        why = " ".join(str(e).split())[:300]
        log(f"{name}: not measured: {why}")
        return {"status": f"n/a ({why})"}


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Everything ``dfi bench`` measures, as a JSON-ready dict."""
    import torch

    from dfi_engine.devices import resolve_device
    from dfi_engine.weights import load_network

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    plan = make_plan(args, cuda)
    clock = Clock(device)
    mem = Memory(cuda)
    args.weights = spec = args.weights or "random:0"
    net = load_network(spec, device)
    from dfi_engine.compute import set_compute

    compute = set_compute(net, args.compute)
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
        "compute_mode": compute,
        "flop_convention": "forward = sum over convs of 2*Cin*Cout*9*H*W (28.8 GFLOP at 200x200 through conv5_1); "
                           "one iteration = 2 x forward (backward w.r.t. the input only, weights frozen)",
        "forward_gflop_200x200": forward_flops(net, 200, 200) / 1e9,
        "plan": {"sizes": [size_name(s) for s in plan.sizes], "iterations": plan.iterations,
                 "batches": plan.batches, "skip": sorted(plan.skip), "quick": bool(args.quick)},
    }
    log(f"device {result['device']['name']}, weights {net.label}")
    result["peak"] = measure_peak(torch, device, plan.matmul_n, clock)
    peak = result["peak"]["float32_gflops"]

    if "compute" not in plan.skip:
        from .compute import bench_compute

        result["compute"] = bench_compute(torch, net, plan, log)
        set_compute(net, compute)
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
    if "presets" not in plan.skip:
        from . import presets

        result["presets"] = _section("presets", lambda: presets.run(args, log, str(device)), log)
    if "highres" not in plan.skip:
        from .highres import run_highres

        real = argparse.Namespace(**{**vars(args), "weights": args.real_weights,
                                     "json": str(Path(args.json or "out/bench.json").with_name("highres.json"))})
        result["highres"] = _section("highres", lambda: run_highres(real, log), log)
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

    if args.highres:
        from .highres import format_highres, run_highres

        out = Path(args.json or "out/highres.json")
        args.json = str(out)
        result = run_highres(args, log)
        print(format_highres(result))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, allow_nan=False, default=float))
        print(f"JSON: {out}; sheet: {out.with_suffix('')}/eyes.png")
        return 0
    if args.live:
        from .live import format_live, run_live

        out = Path(args.json or "out/live.json")
        args.weights = args.weights or args.real_weights
        result = run_live(args, log)
        print(format_live(result))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, allow_nan=False))
        print(f"JSON: {out}")
        return 0
    if args.quality:
        from . import quality

        args.json = args.json or "out/quality.json"
        return quality.run(args, log)
    args.json = args.json or "out/bench.json"
    result = run_bench(args, log)
    print(format_table(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"JSON: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure speed (compute modes, reconstruction, features, SciPy baseline, daemon latency) "
                      "and, with real features, face edits by quality preset and at high resolution",
        description="Measure the engine on this machine and write a table and JSON. Defaults depend on the "
                    "device: about 15 minutes on a 2-core CPU (the presets and highres sections, with real "
                    "features, take most of it; --skip presets,highres leaves them out), more sizes and "
                    "iterations on a GPU; --quick is a smoke test (< 30 s). Speed is only measured here, never "
                    "asserted in tests.")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    p.add_argument("--weights", default=None,
                   help="weights (default: random:0 for speed, whose timing does not depend on the values; "
                        "vgg16-hed for --quality)")
    p.add_argument("--quality", action="store_true",
                   help="measure quality instead of speed: inversion, a painted attribute with known truth and "
                        "inpainting on real portraits (a few minutes on a 2-core CPU)")
    p.add_argument("--highres", action="store_true",
                   help="measure editing at the photo's own scale against the 128-px crop on ~1000-px portraits "
                        "with painted truth (vgg16-hed; several minutes on a 2-core CPU)")
    p.add_argument("--live", action="store_true",
                   help="measure live previews instead (the plug-in's slider): the first preview, the instant and "
                        "refined looks after a slider move, and the full render, through a daemon with real "
                        "features (--real-weights unless --weights; a few minutes on a 2-core CPU)")
    p.add_argument("--highres-cap", type=int, default=384, help="largest working size in --highres")
    p.add_argument("--highres-paths", help="paths of --highres separated by ';' (default: all of "
                                           "dfi_daemon.bench.highres.PATHS)")
    p.add_argument("--no-highres-fill", dest="highres_fill", action="store_false",
                   help="leave Fill selection out of --highres")
    p.add_argument("--real-weights", default="vgg16-hed",
                   help="weights of the sections that judge real edits (presets, highres; default vgg16-hed)")
    p.add_argument("--presets", help="comma-separated quality presets the presets section times (default balanced)")
    p.add_argument("--quality-parts", help="comma-separated parts of --quality: inversion, painted, inpainting "
                                           "(default all)")
    p.add_argument("--quality-size", type=int, default=128, help="side of the aligned face crops (--quality)")
    p.add_argument("--quality-iterations", type=int, help="iterations of the edits (--quality; default: the "
                                                           "backbone's)")
    p.add_argument("--quality-strengths", help="comma-separated strengths of the painted edit (--quality; default: "
                                               "0.5, 1 and 1.5 x the backbone's default)")
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
    p.add_argument("--compute", default="auto",
                   help="compute mode of the network for the other sections: auto (the device's default), fp32, "
                        "channels-last, bf16, channels-last+bf16")
    p.add_argument("--compute-sizes", help="WIDTHxHEIGHT list of the compute-mode comparison")
    p.add_argument("--compute-repeats", type=int, help="alternating rounds of the compute-mode comparison")
    p.add_argument("--compute-iterations", type=int,
                   help="L-BFGS iterations of each mode in the compute comparison (objective reached)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (48x48, 2 iterations; < 30 s)")
    p.add_argument("--json", default=None,
                   help="where to write the JSON (default out/bench.json, or out/quality.json with --quality)")
    p.set_defaults(func=run)
