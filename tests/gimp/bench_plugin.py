"""Menu click to new layer in a real GIMP 3, and where the time goes.

    .venv/bin/python tests/gimp/bench_plugin.py [--gimp 3.0|3.2] [--iterations 2 6] [--size 640] [--select 512]

Edits a --select² selection of a --size² photo with "Add facial hair" through a
real daemon (seeded random weights, synthetic neighbours) and prints, per call:
the plug-in's start-up inside GIMP, connecting, reading pixels, the daemon's
engine time, transport and protocol (request to result minus engine) and
inserting the layers. Two iteration counts give the cost per iteration, from
which the preset times are extrapolated (labelled as such). Needs root and the
GIMP root of that version that the tests build (tests/gimp/build_root.sh).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.daemon_process import DaemonProcess  # noqa: E402
from helpers.gimp_harness import ROOTS, Gimp, build_root, free_port  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gimp", choices=list(ROOTS), default="3.0", help="GIMP version (its Debian root)")
    p.add_argument("--iterations", type=int, nargs=2, default=[1, 11])
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--select", type=int, default=512)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    root, why = build_root(args.gimp)
    if root is None:
        print(f"cannot run: {why}")
        return 2
    from PIL import Image
    from skimage import data

    g = Gimp(root, "bench")
    daemon = DaemonProcess(None, endpoint=f"tcp://127.0.0.1:{free_port()}", threads=args.threads).start()
    try:
        g.install(daemon.endpoint, daemon.config / "local-keys")
        buf = io.BytesIO()
        Image.fromarray(data.astronaut()).resize((args.size, args.size)).save(buf, "PNG")
        photo = g.put("photo.png", buf.getvalue())
        off = (args.size - args.select) // 2
        steps = [{"op": "load", "path": photo}, {"op": "select", "rect": [off, off, args.select, args.select]}]
        for n in args.iterations:
            steps += [{"op": "pick", "name": "Background"},
                      {"op": "call", "proc": "plug-in-dfi-facial-hair", "args": {"strengths": "1", "iterations": n}}]
        g.run([{"op": "load", "path": photo}])  # first start with a fresh profile queries every plug-in
        run = g.run(steps, env={"DFI_PLUGIN_TIMING": "1"})
        marks = [json.loads(line.split("timing ", 1)[1]) for line in run.output.splitlines()
                 if line.startswith("[gimp-dfi] timing ")]
        calls = [s for s in run.steps if s["op"] == "call"]
        assert len(marks) == len(calls) == len(args.iterations), run.output[-2000:]
        print(f"GIMP {g.version}, photo {args.size}², selection {args.select}², daemon threads {args.threads}, "
              f"GIMP run (start, {len(calls)} calls, quit) {run.seconds:.1f} s")
        header = ["iterations", "total s", "plug-in start", "connect", "read px", "engine", "neighbours", "inversion",
              "transport", "insert"]
        print(" | ".join(f"{h:>13}" for h in header))
        rows = []
        for n, call, m in zip(args.iterations, calls, marks):
            assert call["status"] == "success", call
            engine = m["engine_s"]
            row = [n, call["seconds"], m["run"] - call["wall_start"], m["connected"] - m["run"],
                   m["read"] - m["connected"], engine, m["stage_reconstruct"] - m["stage_neighbours"],
                   m.get("stage_done", m["result"]) - m["stage_reconstruct"], m["result"] - m["sent"] - engine,
                   m["inserted"] - m["result"]]
            rows.append(row)
            print(" | ".join(f"{v:>13.3f}" if isinstance(v, float) else f"{v:>13}" for v in row))
        (n1, t1, i1), (n2, t2, i2) = [(r[0], r[1], r[7]) for r in rows]
        per_it = (i2 - i1) / (n2 - n1)  # from the inversion stage alone: the least noisy part
        fixed = t2 - n2 * per_it
        print(f"inversion {per_it:.2f} s per iteration; everything else {fixed:.1f} s "
              "(plug-in, transfer, neighbour features: rendered and computed per request by the synthetic source)")
        for n in (150, 300):
            print(f"extrapolated menu click to layer at {n} iterations: {fixed + n * per_it:.0f} s")
        return 0
    finally:
        daemon.stop()
        g.cleanup()


if __name__ == "__main__":
    sys.exit(main())
