"""Feature inversion: z = argmin ½‖φ(z) − φ*‖² + λ·TV^β(z or z − x), starting from the photo x.

Pixels live in RGB 0..255 inside the box [0, 255]. All strengths are one batch:
one optimisation, one forward/backward per iteration for the whole batch.
Settings left as ``None`` come from the network's row in ``data/backbones.toml``:
λ is relative (a share of the photo's feature energy, so it means the same on
any backbone), the TV may act on the change rather than the image, a small
cost on the change's colour (CbCr) keeps ImageNet features from realising an
edit as saturated colour, and the change may be optimised as a pyramid
(``pyramid``), which forms large smooth edits far sooner than plain pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import lbfgs
from .backbones import defaults_for
from .errors import CancelledError, InputError
from .features import Features
from .progress import CancelFn
from .pyramid import Pyramid
from .vgg import VGGFeatures

OPTIMIZERS = ("device", "torch")
TV_ON = ("change", "image")


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of the inversion; ``None`` = the backbone's default."""

    iterations: int | None = None
    tv_weight: float | None = None
    tv_relative: bool = True  # λ = tv_weight · ½‖φ(x)‖²/TV(x); False: tv_weight is λ itself
    tv_beta: float = 2.0
    tv_on: str | None = None
    chroma_weight: float | None = None  # relative cost of colour (CbCr) in the change; 0 = off
    levels: int | None = None
    history: int = 10
    optimizer: str = "device"  # "device": batched on-device L-BFGS; "torch": torch.optim.LBFGS baseline
    first_step: float = 1.0

    def resolved(self, backbone: str) -> ReconstructConfig:
        d = defaults_for(backbone)
        return replace(self, iterations=d.iterations if self.iterations is None else self.iterations,
                       tv_weight=d.tv_weight if self.tv_weight is None else self.tv_weight,
                       tv_on=d.tv_on if self.tv_on is None else self.tv_on,
                       chroma_weight=d.chroma_weight if self.chroma_weight is None else self.chroma_weight,
                       levels=d.levels if self.levels is None else self.levels)

    def validate(self) -> None:
        if self.iterations is None or self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}.")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"Unknown optimizer {self.optimizer!r}.", f"Use one of {', '.join(OPTIMIZERS)}.")
        if self.tv_weight is None or self.tv_weight < 0 or self.tv_beta <= 0:
            raise InputError("tv_weight must be >= 0 and tv_beta > 0.")
        if self.tv_on not in TV_ON:
            raise InputError(f"Unknown tv_on {self.tv_on!r}.", f"Use one of {', '.join(TV_ON)}.")
        if self.chroma_weight is None or self.chroma_weight < 0:
            raise InputError(f"chroma_weight must be >= 0, got {self.chroma_weight}.")
        if self.levels is None or self.levels < 1:
            raise InputError(f"levels must be at least 1, got {self.levels}.")
        if self.optimizer == "torch" and self.levels != 1:
            raise InputError("The torch.optim.LBFGS baseline optimises plain pixels.", "Use levels=1 with it.")


def total_variation(z: torch.Tensor, beta: float) -> torch.Tensor:
    """TV^β per batch element: Σ((z[i,j+1]−z[i,j])² + (z[i+1,j]−z[i,j])²)^(β/2)."""
    dx = z[:, :, :-1, 1:] - z[:, :, :-1, :-1]
    dy = z[:, :, 1:, :-1] - z[:, :, :-1, :-1]
    sq = dx.square() + dy.square()
    tv = sq if beta == 2.0 else sq.clamp_min(1e-8).pow(beta / 2)
    return tv.flatten(1).sum(1)


# Rows Cb, Cr of JPEG's YCbCr, applied to an RGB change in levels.
CBCR = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))  # BT.601 Cb, Cr of an RGB change
CHROMA_UNIT = 32.0  # levels: a chroma change of this size everywhere costs chroma_weight × the feature energy


def chroma_energy(change: torch.Tensor) -> torch.Tensor:
    """Mean squared CbCr of an RGB change per batch element, in units of CHROMA_UNIT²."""
    m = change.new_tensor(CBCR)
    c = torch.einsum("ij,bjhw->bihw", m, change)
    return c.square().sum(1).flatten(1).mean(1) / CHROMA_UNIT**2


def feature_loss(net: VGGFeatures, z: torch.Tensor, targets: Features) -> torch.Tensor:
    """½‖φ(z) − φ*‖² per batch element (B,)."""
    return sum(0.5 * (f - t).square().flatten(1).sum(1) for f, t in zip(net(z), targets))


def objective(
    net: VGGFeatures, z: torch.Tensor, targets: Features, tv_weight: float, tv_beta: float,
    origin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-element loss (B,); with ``origin`` the TV acts on the change z − origin."""
    loss = feature_loss(net, z, targets)
    if tv_weight:
        loss = loss + tv_weight * total_variation(z if origin is None else z - origin, tv_beta)
    return loss


@torch.no_grad()
def feature_energy(net: VGGFeatures, x: torch.Tensor) -> float:
    """½‖φ(x)‖² of the first image of ``x``: the scale every relative weight is measured in."""
    return sum(0.5 * float(f.double().square().sum()) for f in net(x[:1]))


def absolute_tv_weight(net: VGGFeatures, x: torch.Tensor, relative: float, energy: float | None = None) -> float:
    """λ for a relative weight: relative · ½‖φ(x)‖² / TV(x), on the first image of ``x``."""
    energy = feature_energy(net, x) if energy is None else energy
    tv = max(float(total_variation(x[:1], 2.0)[0]), float(x[0, 0].numel()))  # a flat image: ≥ 1 level² per pixel
    return relative * energy / tv


def reconstruct(
    net: VGGFeatures,
    start: torch.Tensor,
    targets: Features,
    config: ReconstructConfig = ReconstructConfig(),
    *,
    on_iteration: Callable[[int, int, torch.Tensor], None] | None = None,
    cancel: CancelFn | None = None,
    preview: Callable[[int, int, Callable[[], torch.Tensor]], None] | None = None,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``targets`` (batch B) starting from ``start`` ((1 or B), 3, H, W; RGB 0..255).

    ``on_iteration(i, n, loss)`` is called after every iteration (the optimiser's own hook, for benchmarks;
    callers report :mod:`dfi_engine.progress` events from ``preview``); ``cancel()`` is checked at the same
    points and raises :class:`CancelledError`. ``preview(i, n, current)`` too, where ``current()`` returns
    the images at the last evaluated point (for live previews).
    ``stats`` receives the optimiser's counts (``lbfgs.minimize``; not with the torch baseline).
    Returns (images (B, 3, H, W), final per-element losses).
    """
    config = config.resolved(getattr(net, "backbone", "random"))
    config.validate()
    assert config.iterations is not None and config.tv_weight is not None and config.levels is not None
    b = targets[0].shape[0]
    x0 = start.to(net.device, torch.float32).expand(b, -1, -1, -1).contiguous()
    energy = feature_energy(net, x0)
    lam = absolute_tv_weight(net, x0, config.tv_weight, energy) if config.tv_relative else config.tv_weight
    chroma = config.chroma_weight * energy
    origin = x0 if config.tv_on == "change" else None
    pyramid = Pyramid(3, x0.shape[2], x0.shape[3], config.levels) if config.levels > 1 else None

    last: list[torch.Tensor] = [x0]

    def current() -> torch.Tensor:
        with torch.no_grad():
            return last[0] if pyramid is None else (x0 + pyramid.expand(last[0])).clamp(0.0, 255.0)

    def fn(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last[0] = v.detach()
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            z = v if pyramid is None else (x0 + pyramid.expand(v)).clamp(0.0, 255.0)
            loss = objective(net, z, targets, lam, config.tv_beta, origin)
            if chroma:
                loss = loss + chroma * chroma_energy(z - x0)
            (grad,) = torch.autograd.grad(loss.sum(), v)
        return loss.detach(), grad

    def callback(i: int, loss: torch.Tensor) -> None:
        if cancel is not None and cancel():
            raise CancelledError("The reconstruction was cancelled.")
        if on_iteration is not None:
            on_iteration(i, config.iterations, loss)
        if preview is not None:
            preview(i, config.iterations, current)

    if config.optimizer == "torch":
        return lbfgs.minimize_torch(fn, x0, config.iterations, 0.0, 255.0, config.history, callback=callback)
    if pyramid is None:
        return lbfgs.minimize(fn, x0, config.iterations, 0.0, 255.0, config.history, config.first_step,
                              callback=callback, stats=stats)
    v, loss = lbfgs.minimize(fn, pyramid.zeros(b, x0), config.iterations, None, None, config.history,
                             config.first_step, callback=callback, stats=stats)
    with torch.no_grad():
        return (x0 + pyramid.expand(v)).clamp(0.0, 255.0), loss
