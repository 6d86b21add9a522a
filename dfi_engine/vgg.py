"""VGG-19 up to relu5_1, defined here because torchvision does not import on this torch build.

Only the layers DFI reads are kept (conv1_1 .. conv5_1, 13 convolutions), so
the deeper conv5_2..fc8 weights of a checkpoint are never held in memory. The
network is fully convolutional: images are never resized to 224.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# (name, out_channels) per conv, "pool" between blocks, through conv5_1.
_PLAN: list[tuple[str, int] | str] = [
    ("conv1_1", 64), ("conv1_2", 64), "pool",
    ("conv2_1", 128), ("conv2_2", 128), "pool",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256), "pool",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), ("conv4_4", 512), "pool",
    ("conv5_1", 512),
]  # fmt: skip
CONV_NAMES = [p[0] for p in _PLAN if isinstance(p, tuple)]
# Index of each conv in torchvision's ``features`` Sequential (conv, relu, ..., pool).
TORCHVISION_INDEX = {}
_i = 0
for _p in _PLAN:
    if isinstance(_p, tuple):
        TORCHVISION_INDEX[_p[0]] = _i
        _i += 2
    else:
        _i += 1
DEFAULT_LAYERS = ("relu3_1", "relu4_1", "relu5_1")
RELU_NAMES = {"relu" + n[4:] for n in CONV_NAMES}


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


class VGG19Features(nn.Module):
    """VGG-19 trunk returning the requested post-ReLU activations.

    ``forward`` takes RGB in 0..255, (N, 3, H, W), and applies the layout's
    preprocessing, so callers never deal with channel order or mean/std.
    """

    def __init__(self, preprocess: Preprocess, layers: tuple[str, ...] = DEFAULT_LAYERS,
                 label: str = "") -> None:
        super().__init__()
        unknown = [n for n in layers if n not in RELU_NAMES]
        if unknown or not layers:
            raise ValueError(f"Unknown VGG-19 layers {unknown}; choose from {sorted(RELU_NAMES)}.")
        self.preprocess = preprocess
        self.layers = tuple(layers)
        self.label = label
        last = max(CONV_NAMES.index("conv" + n[4:]) for n in layers)
        self.convs = nn.ModuleDict()
        self._plan: list[str] = []
        cin = 3
        for p in _PLAN:
            if p == "pool":
                self._plan.append("pool")
                continue
            name, cout = p
            self.convs[name] = nn.Conv2d(cin, cout, 3, padding=1)
            self._plan.append(name)
            cin = cout
            if CONV_NAMES.index(name) == last:
                break
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, rgb255: torch.Tensor) -> list[torch.Tensor]:
        x = self.preprocess(rgb255)
        out: dict[str, torch.Tensor] = {}
        for step in self._plan:
            if step == "pool":
                x = nn.functional.max_pool2d(x, 2, 2)
            else:
                x = torch.relu(self.convs[step](x))
                relu = "relu" + step[4:]
                if relu in self.layers:
                    out[relu] = x
        return [out[n] for n in self.layers]
