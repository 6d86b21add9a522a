"""Transport benchmark: daemon start-up to ready, ping round trip, 1-megapixel echo.

    python -m dfi_daemon.bench.transport [--pings 300] [--echoes 20] [--weights random:0]

Starts its own daemon (random weights and synthetic neighbours by default) in a
temporary folder and removes it afterwards. ``echo`` validates the image like
an edit and sends it back without engine work, so it measures protocol +
ZeroMQ + msgpack cost only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

from dfi_wire import protocol as P

from ..private_daemon import PrivateDaemon


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1e3:.3f} ms, p95 {xs[int(0.95 * (len(xs) - 1))] * 1e3:.3f} ms, "
            f"min {xs[0] * 1e3:.3f} ms (n={len(xs)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfi_daemon.bench.transport", description=__doc__.split("\n")[0])
    ap.add_argument("--pings", type=int, default=300)
    ap.add_argument("--echoes", type=int, default=20)
    ap.add_argument("--weights", default="random:0")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--endpoint", help="default: an ipc socket in a temporary folder; e.g. tcp://127.0.0.1:5599")
    args = ap.parse_args(argv)
    d = PrivateDaemon(None, endpoint=args.endpoint, weights=args.weights, threads=args.threads)
    try:
        t0 = time.perf_counter()
        d.start()
        ready = time.perf_counter() - t0
        print(f"start-up to ready ({args.weights}, incl. torch import and warm-up): {ready:.2f} s")
        with d.client() as c:
            c.hello()
            for _ in range(20):
                c.ping()
            rtt = []
            for _ in range(args.pings):
                t = time.perf_counter()
                c.ping()
                rtt.append(time.perf_counter() - t)
            print(f"ping round trip over {d.endpoint.split(':')[0]}: {_ms(rtt)}")
            for fmt in ("RGBA8", "RGB8"):
                img = P.image_map(os.urandom(1000 * 1000 * P.FORMATS[fmt]), 1000, 1000, fmt)
                c.echo(img)
                times = []
                for _ in range(args.echoes):
                    t = time.perf_counter()
                    back = c.echo(img)
                    times.append(time.perf_counter() - t)
                assert back["image"]["data"] == img["data"]
                mb = len(img["data"]) / 1e6
                print(f"1-megapixel {fmt} echo ({mb:.0f} MB each way): {_ms(times)}, "
                      f"{2 * mb / statistics.median(times):.0f} MB/s")
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
