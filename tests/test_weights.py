"""Weights: both checkpoint layouts, clear errors, and the download path over loopback HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.loopback_http import LoopbackServer

from dfi_engine import WeightsError, load_network
from dfi_engine.vgg import CONV_NAMES, TORCHVISION_INDEX
from dfi_engine.weights import WeightsSource, fetch_weights, random_network

SEED = 7


@pytest.fixture(scope="module")
def reference_convs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ref = random_network(SEED)
    return {n: (c.weight.clone(), c.bias.clone() + 0.01 * i) for i, (n, c) in enumerate(ref.convs.items())}


def write_torchvision(path: Path, convs, extra: bool = True) -> None:
    sd = {}
    for name, (w, b) in convs.items():
        sd[f"features.{TORCHVISION_INDEX[name]}.weight"] = w
        sd[f"features.{TORCHVISION_INDEX[name]}.bias"] = b
    if extra:  # deeper layers the loader must ignore
        sd["features.30.weight"] = torch.zeros(512, 512, 3, 3)
        sd["classifier.0.weight"] = torch.zeros(64, 64)
    torch.save(sd, path)


def write_gatys(path: Path, convs) -> None:
    sd = {}
    for name, (w, b) in convs.items():
        sd[f"{name}.weight"], sd[f"{name}.bias"] = w, b
    sd["conv5_2.weight"] = torch.zeros(512, 512, 3, 3)
    torch.save(sd, path)


def reference_relu51(convs, x: torch.Tensor) -> torch.Tensor:
    """Independent forward pass from the raw tensors: conv/relu, pooling after each block."""
    for name in CONV_NAMES:
        if name in ("conv2_1", "conv3_1", "conv4_1", "conv5_1"):
            x = F.max_pool2d(x, 2)
        w, b = convs[name]
        x = F.relu(F.conv2d(x, w, b, padding=1))
    return x


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0)) * 255


def test_torchvision_layout(tmp_path, reference_convs, image):
    path = tmp_path / "vgg19-test.pth"
    write_torchvision(path, reference_convs)
    net = load_network(path)
    x = (image / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(net(image)[-1], reference_relu51(reference_convs, x), rtol=1e-4, atol=1e-4)
    assert "torchvision" in net.label
    assert sorted(net.convs) == sorted(CONV_NAMES)  # nothing past conv5_1 is held


def test_gatys_layout(tmp_path, reference_convs, image):
    path = tmp_path / "vgg_conv.pth"
    write_gatys(path, reference_convs)
    net = load_network(path)
    x = image.flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(net(image)[-1], reference_relu51(reference_convs, x), rtol=1e-4, atol=1e-3)
    assert "gatys" in net.label


def test_random_weights_are_seeded_and_labelled(image):
    a, b, c = load_network("random:3"), load_network("random:3"), load_network("random:4")
    assert torch.equal(a(image)[0], b(image)[0])
    assert not torch.equal(a(image)[0], c(image)[0])
    assert "RANDOM" in a.label


def test_corrupt_file_gives_clear_error(tmp_path, reference_convs):
    good = tmp_path / "good.pth"
    write_torchvision(good, reference_convs, extra=False)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="truncated.pth.*(corrupt|readable)"):
        load_network(bad)


def test_wrong_file_gives_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsError, match="neither torchvision"):
        load_network(path)
    shapes = tmp_path / "wrong_shapes.pth"
    torch.save({"conv1_1.weight": torch.zeros(32, 3, 3, 3), "conv1_1.bias": torch.zeros(32)}, shapes)
    with pytest.raises(WeightsError, match="conv1_1.weight is shape"):
        load_network(shapes)
    with pytest.raises(WeightsError, match="neither a known name"):
        load_network(tmp_path / "missing.pth")


@pytest.fixture
def server(tmp_path, reference_convs):
    path = tmp_path / "src.pth"
    write_torchvision(path, reference_convs, extra=False)
    data = path.read_bytes()
    gatys = tmp_path / "gatys.pth"
    write_gatys(gatys, reference_convs)
    files = {"vgg19.pth": data, "gatys.pth": gatys.read_bytes(), "small.bin": b"hello weights"}
    srv = LoopbackServer({f"/{k}": (v, "application/octet-stream") for k, v in files.items()})
    srv.data = data
    yield srv
    srv.httpd.shutdown()


def test_download_with_hash_check_then_load(tmp_path, server, image, reference_convs):
    cache = tmp_path / "cache"
    digest = hashlib.sha256(server.data).hexdigest()
    src = WeightsSource("vgg19-test.pth", server.url + "vgg19.pth", "torchvision", digest[:8])
    path = fetch_weights(src, cache, progress=False)
    assert path == cache / "vgg19-test.pth" and path.read_bytes() == server.data
    net = load_network(path)
    assert torch.equal(net(image)[0], load_network(path)(image)[0])
    # Named weights with a mirror URL: the official hash still applies to "torchvision" ...
    with pytest.raises(WeightsError, match="checksum"):
        load_network("torchvision", directory=tmp_path / "c2", url=server.url + "vgg19.pth", progress=False)
    assert not (tmp_path / "c2" / "vgg19-dcbb9e9d.pth").exists()
    # ... while "gatys" (no published hash) is checked by structure and lands in the cache.
    net3 = load_network("gatys", directory=tmp_path / "c3", url=server.url + "gatys.pth", progress=False)
    assert (tmp_path / "c3" / "vgg_conv.pth").is_file() and "gatys" in net3.label


def test_download_bad_checksum(tmp_path, server):
    src = WeightsSource("small.bin", server.url + "small.bin", "torchvision", "deadbeef")
    with pytest.raises(WeightsError, match="checksum"):
        fetch_weights(src, tmp_path, progress=False)
    assert not (tmp_path / "small.bin").exists()


def test_download_unreachable_names_file_url_and_place(tmp_path, server):
    src = WeightsSource("vgg19-dcbb9e9d.pth", server.url + "nothing-here.pth", "torchvision", "dcbb9e9d")
    with pytest.raises(WeightsError) as e:
        fetch_weights(src, tmp_path, progress=False)
    msg = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in msg and src.url in msg and str(tmp_path / "vgg19-dcbb9e9d.pth") in msg
    assert "random" in msg  # points to the offline smoke mode


def test_auto_prefers_a_cached_vgg19_else_vgg16_hed(tmp_path, reference_convs):
    from dfi_engine.weights import resolve_auto

    assert resolve_auto(tmp_path) == "vgg16-hed"
    write_gatys(tmp_path / "vgg_conv.pth", reference_convs)
    assert resolve_auto(tmp_path) == "gatys"
    net = load_network("auto", directory=tmp_path)
    assert net.backbone == "gatys" and net.arch == "vgg19"
    write_torchvision(tmp_path / "vgg19-dcbb9e9d.pth", reference_convs)
    assert resolve_auto(tmp_path) == "torchvision"


def test_vgg16_and_vgg19_share_one_definition():
    from dfi_engine.vgg import VGGFeatures, conv_names, torchvision_index

    assert len(conv_names("vgg16")) == 13 and len(conv_names("vgg19")) == 16
    assert torchvision_index("vgg16")["conv5_3"] == 28 and torchvision_index("vgg19")["conv5_1"] == 28
    assert torchvision_index("vgg16")["conv4_1"] == 17 and torchvision_index("vgg19")["conv4_1"] == 19
    net = VGGFeatures(random_network(0).preprocess, ("relu3_1", "relu5_1"), arch="vgg16")
    assert list(net.convs) == conv_names("vgg16")[:11], "nothing past the deepest requested layer is built"
    with pytest.raises(ValueError, match="relu3_4"):
        VGGFeatures(random_network(0).preprocess, ("relu3_4",), arch="vgg16")
