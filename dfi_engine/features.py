"""Deep features φ(x) and their streamed means over neighbour sets.

φ is kept as a list of per-layer tensors (N, C, h, w) rather than one flat
vector: the reconstruction loss is a sum over layers anyway, and shapes stay
readable. Means are accumulated batch by batch so a K=100 set never has all
of its features in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from .errors import InputError
from .progress import ProgressFn, report
from .vgg import VGGFeatures

Features = list[torch.Tensor]


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) array in 0..255 (or an (N, 3, H, W) tensor) -> float32 NCHW."""
    if isinstance(images, torch.Tensor):
        t = images
    else:
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"Expected RGB images (N, H, W, 3), got shape {a.shape}.")
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)
    return t.to(device=device, dtype=torch.float32)


@torch.no_grad()
def extract(net: VGGFeatures, images: np.ndarray | torch.Tensor) -> Features:
    """φ for a batch of images (RGB 0..255)."""
    return net(to_tensor(images, net.device))


BATCH_PIXELS = 4 * 256 * 256  # a batch's budget: on a CPU one batch then takes about a second, so a cancel
#                               checked per batch is heard promptly even for large neighbour images


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    for im in images:
        batch.append(np.asarray(im, dtype=np.float32))
        size = max(1, min(batch_size, BATCH_PIXELS // max(1, batch[0].shape[0] * batch[0].shape[1])))
        if len(batch) >= size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@torch.no_grad()
def mean_features(
    net: VGGFeatures,
    images: Iterable[np.ndarray],
    batch_size: int = 8,
    shape: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    stage: str = "features",
    total: int = 0,
) -> tuple[Features, int]:
    """Mean φ over an iterable of (H, W, 3) images, streamed in batches.

    Returns (mean features with a batch dimension of 1, count). ``shape``
    (H, W) is enforced when given: DFI needs aligned images of one size.
    """
    sums: Features | None = None
    count = 0
    for batch in _batches(images, batch_size):
        if shape is not None and batch.shape[1:3] != tuple(shape):
            raise InputError(
                f"Neighbour image is {batch.shape[2]}x{batch.shape[1]}, expected {shape[1]}x{shape[0]}.",
                "All neighbour images must be aligned to the working size of the photo.",
            )
        feats = extract(net, batch)
        part = [f.sum(0, keepdim=True) for f in feats]
        sums = part if sums is None else [s + p for s, p in zip(sums, part)]
        count += batch.shape[0]
        report(progress, stage, count, max(total, count))
    if sums is None:
        raise InputError("The neighbour set is empty.", "Provide at least one image in each set.")
    return [s / count for s in sums], count
