"""Feature inversion: z = argmin ½‖φ(z) − φ*‖² + λ·TV^β(z), starting from the photo.

Pixels are optimised in RGB 0..255 (the units in which the original λ=0.001
was tuned) inside the box [0, 255]. All strengths are one batch: one
optimisation, one forward/backward per iteration for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import lbfgs
from .errors import CancelledError, InputError
from .features import Features
from .vgg import VGG19Features

OPTIMIZERS = ("device", "torch")


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of the inversion. Defaults follow the original DFI (500 L-BFGS iterations)."""

    iterations: int = 500
    tv_weight: float = 0.001
    tv_beta: float = 2.0
    history: int = 10
    optimizer: str = "device"  # "device": batched on-device L-BFGS; "torch": torch.optim.LBFGS baseline
    first_step: float = 1.0

    def validate(self) -> None:
        if self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}.")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"Unknown optimizer {self.optimizer!r}.", f"Use one of {', '.join(OPTIMIZERS)}.")
        if self.tv_weight < 0 or self.tv_beta <= 0:
            raise InputError("tv_weight must be >= 0 and tv_beta > 0.")


def total_variation(z: torch.Tensor, beta: float) -> torch.Tensor:
    """TV^β per batch element: Σ((z[i,j+1]−z[i,j])² + (z[i+1,j]−z[i,j])²)^(β/2)."""
    dx = z[:, :, :-1, 1:] - z[:, :, :-1, :-1]
    dy = z[:, :, 1:, :-1] - z[:, :, :-1, :-1]
    sq = dx.square() + dy.square()
    tv = sq if beta == 2.0 else sq.clamp_min(1e-8).pow(beta / 2)
    return tv.flatten(1).sum(1)


def objective(
    net: VGG19Features, z: torch.Tensor, targets: Features, tv_weight: float, tv_beta: float
) -> torch.Tensor:
    """Per-element loss (B,)."""
    feats = net(z)
    loss = sum(0.5 * (f - t).square().flatten(1).sum(1) for f, t in zip(feats, targets))
    if tv_weight:
        loss = loss + tv_weight * total_variation(z, tv_beta)
    return loss


def reconstruct(
    net: VGG19Features,
    start: torch.Tensor,
    targets: Features,
    config: ReconstructConfig = ReconstructConfig(),
    progress: Callable[[int, int, torch.Tensor], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``targets`` (batch B) starting from ``start`` ((1 or B), 3, H, W; RGB 0..255).

    ``progress(i, n, loss)`` is called after every iteration; ``cancel()`` is
    checked at the same points and raises :class:`CancelledError`.
    Returns (images (B, 3, H, W), final per-element losses).
    """
    config.validate()
    b = targets[0].shape[0]
    x0 = start.to(net.device, torch.float32).expand(b, -1, -1, -1).contiguous()

    def fn(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            loss = objective(net, z, targets, config.tv_weight, config.tv_beta)
            (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), grad

    def callback(i: int, loss: torch.Tensor) -> None:
        if cancel is not None and cancel():
            raise CancelledError("The reconstruction was cancelled.")
        if progress is not None:
            progress(i, config.iterations, loss)

    if config.optimizer == "device":
        return lbfgs.minimize(fn, x0, config.iterations, 0.0, 255.0, config.history,
                              config.first_step, callback=callback)
    return lbfgs.minimize_torch(fn, x0, config.iterations, 0.0, 255.0, config.history, callback=callback)
