"""Compute modes of the frozen network (layout and precision): what each changes, and what it must not."""

from __future__ import annotations

import pytest
import torch

from dfi_engine import load_network
from dfi_engine.compute import MODES, resolve_mode, set_compute
from dfi_engine.errors import InputError


@pytest.mark.slow  # every compute mode's forward pass, ~6 s of CPU here
def test_compute_modes_keep_the_features_float32_and_close_to_fp32():
    """channels-last is the same arithmetic in another layout; bf16 is close, not equal (docs/performance.md)."""
    net = load_network("random:0", "cpu")
    x = torch.rand(1, 3, 64, 64) * 255
    ref = [f.clone() for f in net(x)]
    for mode in MODES:
        assert set_compute(net, mode) == mode and net.compute_mode == mode
        feats = net(x)
        assert all(f.dtype == torch.float32 and f.shape == r.shape for f, r in zip(feats, ref))
        err = max(float((f - r).abs().max() / r.abs().max()) for f, r in zip(feats, ref))
        assert err < (1e-5 if "bf16" not in mode else 0.05), (mode, err)
        if "bf16" in mode:
            assert err > 1e-6, "bf16 was asked for but the network still computes in float32"
    assert resolve_mode("auto", "cpu") in MODES
    with pytest.raises(InputError, match="Unknown compute mode"):
        set_compute(net, "fp8")
