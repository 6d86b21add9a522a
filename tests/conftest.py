"""Shared fixtures: one seeded random VGG-19 per session (building it costs ~1 s)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def net():
    from dfi_engine import load_vgg19

    return load_vgg19("random:0")
