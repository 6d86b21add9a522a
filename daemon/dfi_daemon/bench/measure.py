"""Clocks, memory and the machine's peak: the instruments every bench section reads."""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any


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
