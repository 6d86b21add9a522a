"""Which torch device to run on: ``auto`` picks CUDA, then Apple MPS, then the CPU.

An explicit device that this machine or this torch build cannot use is a clear
error naming what to do, never torch's own assertion.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import DeviceError

# What each kind of device does best, from measurements (docs/performance.md): how the network computes
# (``compute.MODES``) and the largest side an aligned face is edited at by default (``faces.align.working_size``).
DEVICE_DEFAULTS: dict[str, dict[str, object]] = {
    "cpu": {"compute": "channels-last", "work_size": 256},
    "cuda": {"compute": "fp32", "work_size": 1024},
    "mps": {"compute": "fp32", "work_size": 512},
}


def kind_row(table: dict[str, Any], device: torch.device | str) -> Any:
    """``device``'s kind's entry of a per-kind table; unknown kinds get the CPU's, the cautious choice."""
    return table.get(torch.device(device).type, table["cpu"])


def device_default(device: torch.device | str, key: str) -> object:
    return kind_row(DEVICE_DEFAULTS, device)[key]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DeviceError(f"Unknown device {spec!r}.", "Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"Device {spec!r} is not available: {why} (torch {torch.__version__}).",
                              "Use --device cpu (or auto), or install a CUDA build of torch.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"Device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s).",
                              "Use cuda:0 .. cuda:N-1, or auto.")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"Device {spec!r} is not available on this machine.", "Use --device cpu or auto.")
    elif device.type != "cpu":
        raise DeviceError(f"Device type {device.type!r} is not supported.", "Use auto, cpu, cuda or mps.")
    return device
