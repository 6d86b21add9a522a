"""Reference optimisers for ``dfi bench``: the original DFI's default backend, re-implemented.

The original drove SciPy's L-BFGS-B (float64 vectors on the host, box bounds
on every pixel) with a network forward/backward per evaluation. Here SciPy
drives a torch forward/backward through the *same* network and the *same*
objective (:func:`dfi_engine.reconstruct.objective`), so the only difference
from the engine's own path is the optimiser and where its state lives. This is
benchmark-only code: the engine never imports SciPy for reconstruction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dfi_engine.features import Features
from dfi_engine.reconstruct import objective
from dfi_engine.vgg import VGGFeatures

LOWER, UPPER = 0.0, 255.0


def loss_and_grad(
    net: VGGFeatures, z: torch.Tensor, targets: Features, tv_weight: float, tv_beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element loss and its gradient w.r.t. the pixels, exactly as ``reconstruct`` evaluates it."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        loss = objective(net, z, targets, tv_weight, tv_beta)
        (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


@dataclass
class Trace:
    """Every evaluation an optimiser made: seconds since its start and the loss there."""

    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    fwd_bwd_seconds: float = 0.0

    def first_reach(self, target: float) -> tuple[float, int] | None:
        """(seconds, evaluation number) of the first evaluation with loss <= target, or None."""
        for i, (t, f) in enumerate(zip(self.times, self.losses)):
            if f <= target:
                return t, i + 1
        return None


@dataclass
class ScipyResult:
    x: torch.Tensor
    loss: float
    iterations: int
    evaluations: int
    seconds: float
    message: str
    trace: Trace
    fwd_bwd_seconds: float


def make_fun(
    net: VGGFeatures, shape: tuple[int, ...], targets: Features, tv_weight: float, tv_beta: float,
    trace: Trace | None = None, t0: float = 0.0,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """The function SciPy sees: float64 vector in, (loss, float64 gradient) out, as in the original.

    ``trace`` (if given) records every evaluation's time since ``t0`` and its
    loss, and accumulates the seconds spent in the forward/backward itself.
    """
    device = net.device

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        z = torch.from_numpy(v).to(device=device, dtype=torch.float32).view(shape)
        t_in = time.perf_counter()
        loss, grad = loss_and_grad(net, z, targets, tv_weight, tv_beta)
        f = float(loss.sum())  # synchronises, as any host-side optimiser must
        t_out = time.perf_counter()
        g = grad.double().cpu().numpy().ravel()
        if trace is not None:
            trace.fwd_bwd_seconds += t_out - t_in
            trace.times.append(time.perf_counter() - t0)
            trace.losses.append(f)
        return f, g

    return fun


def scipy_lbfgsb(
    net: VGGFeatures,
    x0: torch.Tensor,
    targets: Features,
    iterations: int,
    tv_weight: float = 0.001,
    tv_beta: float = 2.0,
    history: int = 10,
    sync: Callable[[], None] = lambda: None,
) -> ScipyResult:
    """Minimise the DFI objective for one image (1, 3, H, W) with SciPy's L-BFGS-B.

    As in the original: float64 on the host, bounds [0, 255] per pixel,
    ``maxcor`` = history, ``maxiter`` = iterations. Tolerances are set to zero
    so it runs the iterations asked for (the original's defaults could stop it
    earlier on a flat objective, which would make the comparison meaningless).
    """
    import scipy.optimize

    if x0.shape[0] != 1:
        raise ValueError("The SciPy baseline optimises one image at a time (batch of 1).")
    shape = tuple(x0.shape)
    trace = Trace()
    t0 = time.perf_counter()
    fun = make_fun(net, shape, targets, tv_weight, tv_beta, trace, t0)
    v0 = x0.detach().double().cpu().numpy().ravel().clip(LOWER, UPPER)
    bounds = scipy.optimize.Bounds(np.full_like(v0, LOWER), np.full_like(v0, UPPER))
    res = scipy.optimize.minimize(
        fun, v0, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": iterations, "maxcor": history, "ftol": 0.0, "gtol": 0.0, "maxfun": 50 * iterations},
    )
    sync()
    seconds = time.perf_counter() - t0
    x = torch.from_numpy(res.x).to(device=net.device, dtype=torch.float32).view(shape)
    return ScipyResult(x, float(res.fun), int(res.nit), int(res.nfev), seconds, str(res.message), trace,
                       trace.fwd_bwd_seconds)
