"""Quality presets per device (``dfi_engine/data/presets.toml``): complete, sane, and what the wire names."""

from __future__ import annotations

import pytest
from dfi_wire import protocol as P

from dfi_engine import presets
from dfi_engine.devices import DEVICE_DEFAULTS


def test_every_device_has_every_preset_the_wire_names():
    assert presets.NAMES == P.QUALITIES and presets.DEFAULT in P.QUALITIES
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
    fast = presets.preset("cpu", "fast")
    assert fast.cap(96) == 96 and fast.cap(512) == fast.work_size
    assert fast.cap(0) == 0  # --work-size 0: faces at the database's own size
    assert "faces as stored" in fast.describe(0) and "150 iterations" in fast.describe(256)
    with pytest.raises(ValueError, match="unknown quality preset 'ultra'"):
        presets.preset("cpu", "ultra")
    assert presets.presets_for("xpu:0") == presets.presets_for("cpu")  # torch.device parses it; unknown -> CPU's
