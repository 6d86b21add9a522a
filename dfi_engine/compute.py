"""How the frozen network computes: memory layout and precision, chosen per device from measurements.

Features and losses stay float32 whatever the mode: only the convolutions run in
bf16 (autocast) and/or on channels-last tensors. ``dfi bench`` measures every mode
against float32 in one run (forward+backward time, and the float32 objective an
L-BFGS run reaches in the same iterations); what won is the default per device
type (``devices.DEVICE_DEFAULTS``), and the reasons are in docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class Compute:
    channels_last: bool = False
    bf16: bool = False


MODES: dict[str, Compute] = {
    "fp32": Compute(),
    "channels-last": Compute(channels_last=True),
    "bf16": Compute(bf16=True),
    "channels-last+bf16": Compute(channels_last=True, bf16=True),
}


def resolve_mode(mode: str, device: torch.device | str) -> str:
    """``auto`` -> the device's default (``devices.DEVICE_DEFAULTS``); anything else must be a known mode."""
    if mode == "auto":
        from .devices import device_default

        return str(device_default(device, "compute"))
    if mode not in MODES:
        raise InputError(f"Unknown compute mode {mode!r}.", f"Use auto or one of: {', '.join(MODES)}.")
    return mode


def set_compute(net: torch.nn.Module, mode: str = "auto") -> str:
    """Switch ``net`` (a VGGFeatures) to ``mode``; returns the mode in effect."""
    name = resolve_mode(mode, next(net.parameters()).device)
    c = MODES[name]
    net.to(memory_format=torch.channels_last if c.channels_last else torch.contiguous_format)
    net.compute = c
    net.compute_mode = name
    return name
