"""``dfi doctor``'s torch check: a GPU that this environment's torch cannot use is reported with the install
command. The hardware is faked by a folder tree (device files as Linux shows them); torch's answer is data."""

from __future__ import annotations

import sys

import pytest
from dfi_daemon.cli import gpu


def test_the_hardware_is_seen_from_device_files(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpu.platform, "system", lambda: "Linux")
    assert gpu.gpu_present(tmp_path) is None
    card = tmp_path / "sys/class/drm/card0/device"
    card.mkdir(parents=True)
    (card / "vendor").write_text("0x1002\n")
    assert gpu.gpu_present(tmp_path) is None, "an AMD card without the compute device (/dev/kfd) is display only"
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kfd").write_text("")
    assert gpu.gpu_present(tmp_path) == "amd"
    (tmp_path / "dev/nvidia0").write_text("")
    assert gpu.gpu_present(tmp_path) == "nvidia"


def test_a_cpu_torch_on_a_gpu_machine_is_a_fix_with_the_exact_command():
    cpu = {"version": "2.13.0+cpu", "cuda": False, "hip": None, "mps": False}
    fine, message, fix = gpu.check("nvidia", cpu)
    assert not fine and "NVIDIA GPU is present but torch 2.13.0+cpu cannot use it" in message
    assert fix == f"{sys.executable} -m pip install --force-reinstall torch==2.13.0"
    fine, _, fix = gpu.check("amd", cpu)
    assert not fine and fix.endswith("--index-url https://download.pytorch.org/whl/rocm6.4")
    assert gpu.check("amd", {**cpu, "cuda": True, "hip": "6.4"})[0]
    assert not gpu.check("nvidia", {**cpu, "cuda": True, "hip": "6.4"})[0], "a ROCm torch does not drive NVIDIA"
    assert gpu.check("apple", {**cpu, "mps": True})[0] and not gpu.check("apple", cpu)[0]
    assert gpu.check(None, None) == (True, "no GPU found: the CPU build of torch is the right one", "")
    assert not gpu.check("nvidia", None)[0], "a torch that does not load is a fix too"


@pytest.mark.slow  # the probe is a child Python importing torch
def test_this_machines_torch_answers_the_probe():
    seen = gpu.torch_sees()
    assert seen is not None and seen["version"].startswith("2.") and isinstance(seen["cuda"], bool)
