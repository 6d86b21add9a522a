"""Quality presets per device (``dfi_engine/data/presets.toml``): complete, sane, and what the wire names."""

from __future__ import annotations

import pytest
from dfi_wire import protocol as P

from dfi_engine import presets
from dfi_engine.devices import DEVICE_DEFAULTS


def test_every_device_has_every_preset_the_wire_names():
    assert presets.NAMES == P.QUALITIES and presets.DEFAULT == P.DEFAULT_QUALITY
    for device in DEVICE_DEFAULTS:
        table = presets.presets_for(device)
        assert list(table) == list(P.QUALITIES)
        its = [table[n].iterations for n in P.QUALITIES]
        assert min(its) >= 150, (device, its)  # the original's floor for a real edit
        assert its == sorted(its), (device, its)  # better costs more, never less


def test_a_gpu_uses_its_full_cap_and_the_cpu_stays_modest():
    for name in P.QUALITIES:
        assert presets.preset("cuda", name).cap(1024) == 1024  # full resolution on a GPU, whatever the preset
    cpu_cap = int(DEVICE_DEFAULTS["cpu"]["work_size"])
    assert presets.preset("cpu", "fast").cap(cpu_cap) < cpu_cap
    assert presets.preset("cpu").name == "balanced"


def test_a_preset_never_raises_the_daemons_cap_nor_undoes_as_stored():
    best, fast = presets.Preset("best", 300), presets.preset("cpu", "fast")
    assert best.cap(256) == 256 and best.cap(0) == 0  # --work-size 0: faces at the database's own size
    assert presets.Preset("x", 150, 192).cap(128) == 128 and presets.Preset("x", 150, 192).cap(512) == 192
    assert fast.cap(256) == 0  # "fast" on a CPU: one stage at the database's size
    assert fast.describe(256, 128) == "150 iterations, faces at the database's 128 px"
    assert best.describe(256, 128) == "300 iterations, faces up to 256 px (coarse-to-fine from 128)"
    assert best.describe(256, 256) == "300 iterations, faces at the database's 256 px"  # a 256-px database
    assert best.describe(256, 0) == "300 iterations"  # no aligned faces (the synthetic source)
    with pytest.raises(ValueError, match="unknown quality preset 'ultra'"):
        presets.preset("cpu", "ultra")
    assert presets.presets_for("xpu:0") == presets.presets_for("cpu")  # torch.device parses it; unknown -> CPU's
