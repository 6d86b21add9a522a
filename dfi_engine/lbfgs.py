"""Batched, box-constrained L-BFGS that stays on the device.

Why not ``torch.optim.LBFGS``: it treats the whole batch as one vector (so
strengths would couple), it has no bounds, and its line search calls
``.item()`` many times per step, stalling a GPU at small image sizes.

Here every batch element is an independent problem with its own history,
step size and accept/reject decision, all as tensor ops: one function
evaluation per iteration and no host synchronisation. The line search is a
lazy backtracking: each iteration evaluates one trial point; if it fails the
Armijo test, that element keeps its point and halves its step next time.
Bounds are handled by projection, with the search direction computed on the
free variables only (a light-weight form of L-BFGS-B).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""x (B, ...) -> (per-element loss (B,), gradient like x)."""


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def minimize(
    fn: Objective,
    x0: torch.Tensor,
    iterations: int,
    lower: float | None = None,
    upper: float | None = None,
    history: int = 10,
    first_step: float = 1.0,
    c1: float = 1e-4,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``fn`` independently for every element of the batch ``x0``.

    ``first_step`` is the largest change of any variable on the first step
    (before curvature is known). ``callback(i, loss)`` gets the loss tensor of
    the current points; reading it synchronises, so callers decide. Raise
    from the callback to stop (cancel). ``stats``, if given, receives
    ``rejected`` (per element: trial points that failed the Armijo test, each
    a wasted evaluation; kept on the device). Returns (x, loss).
    """
    x = x0.detach().clone()
    if lower is not None or upper is not None:
        x.clamp_(lower, upper)
    b = x.shape[0]
    f, g = fn(x)
    s_hist = torch.zeros((history, *x.shape), device=x.device, dtype=x.dtype)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros((history, b), device=x.device, dtype=x.dtype)
    gmax = g.flatten(1).abs().amax(1).clamp_min(1e-12)
    gamma = first_step / gmax  # H0 = gamma·I until a curvature pair exists
    step = torch.ones(b, device=x.device, dtype=x.dtype)
    rejected = torch.zeros(b, device=x.device, dtype=torch.int64)
    if stats is not None:
        stats["rejected"] = rejected
    slot = 0
    for it in range(iterations):
        free = torch.ones_like(x, dtype=torch.bool)
        if lower is not None:
            free &= ~((x <= lower) & (g > 0))
        if upper is not None:
            free &= ~((x >= upper) & (g < 0))
        q = g * free
        alphas = []
        for j in range(history):  # newest to oldest
            k = (slot - 1 - j) % history
            a = rho[k] * _dot(s_hist[k], q)
            q = q - _col(a, q) * y_hist[k]
            alphas.append((k, a))
        r = _col(gamma, q) * q
        for k, a in reversed(alphas):  # oldest to newest
            beta = rho[k] * _dot(y_hist[k], r)
            r = r + _col(a - beta, r) * s_hist[k]
        d = -r * free
        # Not a descent direction (stale curvature): fall back to scaled steepest descent.
        bad = _dot(d, g) >= 0
        d = torch.where(_col(bad, d), -_col(gamma, g) * g * free, d)

        xt = x + _col(step, d) * d
        if lower is not None or upper is not None:
            xt = xt.clamp(lower, upper)
        ft, gt = fn(xt)
        s = xt - x
        accept = torch.isfinite(ft) & (ft <= f + c1 * _dot(g, s))
        y = gt - g
        sy = _dot(s, y)
        yy = _dot(y, y)
        good = accept & (sy > 1e-10 * torch.sqrt(_dot(s, s) * yy).clamp_min(1e-30))
        gc = _col(good, x)
        s_hist[slot] = torch.where(gc, s, s_hist[slot])
        y_hist[slot] = torch.where(gc, y, y_hist[slot])
        rho[slot] = torch.where(good, 1.0 / sy.clamp_min(1e-30), rho[slot])
        gamma = torch.where(good, sy / yy.clamp_min(1e-30), gamma)
        slot = (slot + 1) % history
        ac = _col(accept, x)
        x = torch.where(ac, xt, x)
        f = torch.where(accept, ft, f)
        g = torch.where(ac, gt, g)
        step = torch.where(accept, torch.ones_like(step), step * 0.5)
        rejected += ~accept
        if callback is not None:
            callback(it + 1, f)
    return x, f


def minimize_torch(
    fn: Objective,
    x0: torch.Tensor,
    iterations: int,
    lower: float | None = None,
    upper: float | None = None,
    history: int = 10,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: ``torch.optim.LBFGS`` with strong-Wolfe line search, clamped at the end.

    This is the approach of DFI's PyTorch variant (no bounds during the
    search). Kept to compare against, not used by default.
    """
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1, max_iter=iterations, max_eval=iterations * 5 // 4, history_size=history,
        tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        opt.zero_grad()
        f, g = fn(x.detach())
        x.grad = g
        evals += 1
        if callback is not None:
            callback(min(evals, iterations), f)
        return f.sum()

    opt.step(closure)
    with torch.no_grad():
        x = x.detach()
        if lower is not None or upper is not None:
            x.clamp_(lower, upper)
        f, _ = fn(x)
    return x, f
